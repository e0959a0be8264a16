"""Scoring tasks: one Prefect task per reward x image shard(s) on the section's engine (synrank.fanout), each
(reward, shard) cached by content.

A shard's scores are cached in `cache/<reward>/<key>.parquet`, where the key hashes the reward's
content id (its spec and weights, synrank.fingerprint.reward_id) and the content id and prompt of
every image in the shard. A resumed run scores only the shards it had not finished; a later run with
more rewards scores only the new ones; a changed reward spec, weights file, image or prompt gets a
new key and so is scored again. Cache files no key of the current run names are removed at the end.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from synrank import storage
from synrank.cluster_config import ClusterConfig, FanOut
from synrank.config import RewardSpec
from synrank.device import pick_device
from synrank.fanout import Collector, keep_loaded, open_engine
from synrank.fingerprint import reward_id, sha256_text
from synrank.shards import load_images


def shard_keys(rid: str, manifest: pd.DataFrame) -> dict[str, str]:
    """shard location -> cache key (reward id + each image's content id and prompt, in manifest order)."""
    return {
        shard: sha256_text("scores", rid, *(f"{h}\t{p}" for h, p in zip(g["sha256"], g["prompt"])))
        for shard, g in manifest.groupby("shard", sort=False)
    }


def score_shard(reward, rows: pd.DataFrame, images_root: Path, batch_size: int) -> np.ndarray:
    """Scores of one shard's images (one value per row), in batches of batch_size."""
    scores = np.empty(len(rows))
    for start in range(0, len(rows), batch_size):
        batch = rows.iloc[start : start + batch_size]
        images = load_images(images_root, zip(batch["shard"], batch["member"]))
        scores[start : start + len(batch)] = reward.score(images, list(batch["prompt"]))
    return scores


def write_scores(path: Path, table: pd.DataFrame) -> None:
    """One scores file, written atomically (the presence of a cache file means its shard is done)."""
    storage.write_bytes(str(path), table.to_parquet(index=False), path.parent)


def loaded_reward(spec: RewardSpec, device: str):
    """The reward model, loaded once per worker process (synrank.fanout.keep_loaded); `device` 'auto' is
    resolved here, on the worker that runs the task."""
    from models.rewards import load_reward

    device = pick_device(device)
    return keep_loaded(f"reward:{reward_id(spec)}:{device}", lambda: load_reward(spec, device))


@task(name="score-shards", task_run_name="score[{spec.name}/{label}]", cache_policy=NO_CACHE)
def score_shards(
    spec: RewardSpec, rows: pd.DataFrame, images_root: str, batch_size: int, device: str, label: str
) -> dict[str, pd.DataFrame]:
    """Scores of one or more image shards under one reward: {shard location: (image_id, score) table}, for the
    driver to write as cache files."""
    reward = loaded_reward(spec, device)
    return {
        str(shard): pd.DataFrame(
            {"image_id": part["image_id"], "score": score_shard(reward, part, Path(images_root), batch_size)}
        )
        for shard, part in rows.groupby("shard", sort=False)
    }


@task(name="prompt-cuts", task_run_name="prompt-cuts[{spec.name}]", cache_policy=NO_CACHE)
def prompt_cuts_task(spec: RewardSpec, prompts: list[str], device: str) -> dict[str, Any]:
    """count_cuts with the reward model loaded on the worker."""
    return count_cuts(loaded_reward(spec, device), prompts)


def score_all(
    specs: list[RewardSpec],
    manifest_path: str,
    images_root: str,
    out_dir: str,
    batch_size: int,
    device: str,
    fan: FanOut | None = None,
    cluster: ClusterConfig | None = None,
) -> tuple[pd.DataFrame, dict[str, dict[str, Any]]]:
    """Score every image of the manifest under every reward, one task per reward x `shards_per_task` image
    shards on `fan`'s engine (synrank.fanout); writes `<out_dir>/<reward>.parquet` per reward. Returns the
    scores (image_id, reward, score; rewards in order, manifest order within each) and each reward's prompt
    cuts (see prompt_cuts). Every (reward, shard) is
    cached by content, so a killed run resumes per shard and only new rewards or images are scored.
    Raises ShardTasksFailed after writing every shard that did not fail."""
    fan, manifest, out = fan or FanOut(), pd.read_parquet(manifest_path), Path(out_dir)
    keys = {spec.name: shard_keys(reward_id(spec), manifest) for spec in specs}
    cuts = {spec.name: cached_cuts(spec, manifest, out) for spec in specs}
    by_shard = {str(s): rows for s, rows in manifest.groupby("shard", sort=False)}  # one pass, not one per task
    with open_engine(fan, cluster or ClusterConfig()) as engine:
        collect = Collector(engine, write_cache(out, keys), "score")
        for spec in specs:
            cache = out / "cache" / spec.name
            pending = [s for s, k in keys[spec.name].items() if not (cache / f"{k}.parquet").exists()]
            if cuts[spec.name] is None:
                prompts = sorted(set(manifest["prompt"]))
                cuts[spec.name] = collect.wait_for(
                    engine.submit(prompt_cuts_task, spec=spec, prompts=prompts, device=device)
                )
                write_cuts(spec, manifest, out, cuts[spec.name])
            for i in range(0, len(pending), fan.shards_per_task):
                group = pending[i : i + fan.shards_per_task]
                label = "+".join(f"{Path(g).parent.name}/{Path(g).name.split('-')[0]}" for g in group)
                engine.submit(
                    score_shards,
                    name=f"{spec.name}\t" + "\t".join(group),
                    spec=spec,
                    rows=pd.concat([by_shard[g] for g in group]),
                    images_root=images_root,
                    batch_size=batch_size,
                    device=device,
                    label=label,
                )
            print(f"reward {spec.name}: {len(pending)} shards to score, {len(keys[spec.name]) - len(pending)} cached")
        collect.finish()
    tables = [reward_table(spec.name, keys[spec.name], manifest, out) for spec in specs]
    for spec, table in zip(specs, tables):
        write_scores(out / f"{spec.name}.parquet", table)
    return pd.concat(tables, ignore_index=True), cuts


def write_cache(out: Path, keys: dict[str, dict[str, str]]) -> Callable[[str, dict[str, pd.DataFrame]], None]:
    """The driver's handler of a finished score task: one cache file per (reward, shard), written atomically
    (its presence means the shard is done)."""

    def write(name: str, tables: dict[str, pd.DataFrame]) -> None:
        reward = name.split("\t")[0]
        for shard, table in tables.items():
            write_scores(out / "cache" / reward / f"{keys[reward][shard]}.parquet", table)

    return write


def reward_table(reward: str, keys: dict[str, str], manifest: pd.DataFrame, out: Path) -> pd.DataFrame:
    """One reward's scores from its cache files: image_id, reward, score in manifest order."""
    parts = [pd.read_parquet(out / "cache" / reward / f"{keys[s]}.parquet") for s in keys]
    table = pd.concat(parts, ignore_index=True).set_index("image_id").loc[manifest["image_id"]].reset_index()
    table.insert(1, "reward", reward)
    return table[["image_id", "reward", "score"]]


def cuts_path(spec: RewardSpec, manifest: pd.DataFrame, out: Path) -> Path:
    """Where a reward's prompt cuts are cached: keyed by the reward's content id and the prompts."""
    prompts = sorted(set(manifest["prompt"]))
    return out / "cache" / spec.name / f"cuts-{sha256_text('cuts', reward_id(spec), *prompts)}.json"


def cached_cuts(spec: RewardSpec, manifest: pd.DataFrame, out: Path) -> dict[str, Any] | None:
    """The reward's cached prompt cuts (count_cuts' dict) for the manifest's prompts; None if not cached yet."""
    path = cuts_path(spec, manifest, out)
    return json.loads(path.read_text()) if path.exists() else None


def write_cuts(spec: RewardSpec, manifest: pd.DataFrame, out: Path, cuts: dict[str, Any]) -> None:
    """Cache `cuts` (count_cuts' dict) at cuts_path as sorted JSON, written atomically."""
    path = cuts_path(spec, manifest, out)
    storage.write_bytes(str(path), json.dumps(cuts, sort_keys=True).encode(), path.parent)


def count_cuts(reward: Any, prompts: list[str]) -> dict[str, Any]:
    """How many of `prompts` the reward's text encoder cuts, and by how many tokens: {"max_tokens": content
    tokens it reads (None: no token window), "n_prompts", "n_cut", "tokens_cut", "longest"}. A reward scores
    the cut prompt, so "... and three purple elephants" past CLIP's 77 tokens is not scored at all."""
    from models.rewards import text_window

    window = text_window(reward, prompts)
    counts, budget = window if window else ([], None)
    over = [n - budget for n in counts if budget is not None and n > budget]
    return {
        "max_tokens": budget,
        "n_prompts": len(prompts),
        "n_cut": len(over),
        "tokens_cut": sum(over),
        "longest": max(counts, default=0),
    }


def prompt_cuts(spec: RewardSpec, manifest: pd.DataFrame, out_dir: str, device: str = "cpu") -> dict[str, Any]:
    """count_cuts for the manifest's distinct prompts, from the cache beside the scores when there; else the
    reward is loaded here, counted and the count cached."""
    out = Path(out_dir)
    if (cuts := cached_cuts(spec, manifest, out)) is None:
        cuts = count_cuts(loaded_reward(spec, device), sorted(set(manifest["prompt"])))
        write_cuts(spec, manifest, out, cuts)
    return cuts


def remove_stale_scores(out_dir: Path, manifest: pd.DataFrame, specs: list[RewardSpec], tables: bool = True) -> int:
    """Remove cache files that no current (reward, shard) key names and, with `tables`, per-reward
    tables of rewards no longer scored (every parquet beside scores.parquet); the count."""
    keep = {
        out_dir / "cache" / s.name / f"{k}.parquet" for s in specs for k in shard_keys(reward_id(s), manifest).values()
    }
    keep |= {out_dir / f"{s.name}.parquet" for s in specs}
    removed = 0
    for f in sorted((out_dir / "cache").rglob("*.parquet")) if (out_dir / "cache").exists() else []:
        if f not in keep:
            f.unlink()
            removed += 1
    for f in sorted(out_dir.glob("*.parquet")) if tables else []:
        if f.name != "scores.parquet" and f not in keep:
            f.unlink()
            removed += 1
    return removed
