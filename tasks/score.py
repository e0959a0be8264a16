"""Scoring tasks: one reward model at a time, shard by shard, each (reward, shard) cached by content.

A shard's scores are cached in `cache/<reward>/<key>.parquet`, where the key hashes the reward's
content id (its spec and weights, synrank.fingerprint.reward_id) and the content id and prompt of
every image in the shard. A resumed run scores only the shards it had not finished; a later run with
more rewards scores only the new ones; a changed reward spec, weights file, image or prompt gets a
new key and so is scored again. Cache files no key of the current run names are removed at the end.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import task

from synrank import storage
from synrank.config import RewardSpec
from synrank.fingerprint import reward_id, sha256_text
from synrank.progress import progress
from synrank.shards import load_images


def shard_keys(rid: str, manifest: pd.DataFrame) -> dict[str, str]:
    """shard location -> cache key (reward id + each image's content id and prompt, in manifest order)."""
    return {shard: sha256_text("scores", rid, *(f"{h}\t{p}" for h, p in zip(g["sha256"], g["prompt"])))
            for shard, g in manifest.groupby("shard", sort=False)}


def score_shard(reward, rows: pd.DataFrame, images_root: Path, batch_size: int) -> np.ndarray:
    """Scores of one shard's images (one value per row), in batches of batch_size."""
    scores = np.empty(len(rows))
    for start in range(0, len(rows), batch_size):
        batch = rows.iloc[start:start + batch_size]
        images = load_images(images_root, zip(batch["shard"], batch["member"]))
        scores[start:start + len(batch)] = reward.score(images, list(batch["prompt"]))
    return scores


def write_scores(path: Path, table: pd.DataFrame) -> None:
    """One scores file, written atomically (the presence of a cache file means its shard is done)."""
    storage.write_bytes(str(path), table.to_parquet(index=False), path.parent)


@task(name="score-reward", task_run_name="score[{spec.name}]")
def score_reward(spec: RewardSpec, manifest_path: str, images_root: str, out_dir: str,
                 batch_size: int, device: str = "cpu") -> str:
    """Score every image of the manifest under one reward -> `<out_dir>/<reward>.parquet` with columns
    image_id, reward, score (manifest order). Shards whose cache key exists are not scored again."""
    manifest = pd.read_parquet(manifest_path)
    cache = Path(out_dir) / "cache" / spec.name
    keys = shard_keys(reward_id(spec), manifest)
    pending = [s for s, k in keys.items() if not (cache / f"{k}.parquet").exists()]
    if pending:
        from models.rewards import load_reward

        reward = load_reward(spec, device)
        prompt_cuts(spec, manifest, out_dir, reward=reward)  # while the model is loaded
        for shard in progress(pending, f"score {spec.name}", unit="shards"):
            rows = manifest[manifest["shard"] == shard]
            scores = score_shard(reward, rows, Path(images_root), batch_size)
            write_scores(cache / f"{keys[shard]}.parquet", pd.DataFrame({"image_id": rows["image_id"], "score": scores}))
    print(f"reward {spec.name}: scored {len(pending)} shards, {len(keys) - len(pending)} cached")
    parts = [pd.read_parquet(cache / f"{keys[s]}.parquet") for s in keys]
    table = pd.concat(parts, ignore_index=True).set_index("image_id").loc[manifest["image_id"]].reset_index()
    table.insert(1, "reward", spec.name)
    out = Path(out_dir) / f"{spec.name}.parquet"
    write_scores(out, table[["image_id", "reward", "score"]])
    return str(out)


def prompt_cuts(spec: RewardSpec, manifest: pd.DataFrame, out_dir: str, reward: Any = None,
                device: str = "cpu") -> dict[str, Any]:
    """How many of the manifest's distinct prompts the reward's text encoder cuts, and by how many
    tokens: {"max_tokens": content tokens it reads (None: no token window), "n_prompts", "n_cut",
    "tokens_cut", "longest"}. A reward scores the cut prompt, so "... and three purple elephants" past
    CLIP's 77 tokens is not scored at all. Cached beside the scores, keyed by the reward's content id
    and the prompts; the reward is loaded only when the count is not cached and `reward` is not given."""
    prompts = sorted(set(manifest["prompt"]))
    path = Path(out_dir) / "cache" / spec.name / f"cuts-{sha256_text('cuts', reward_id(spec), *prompts)}.json"
    if path.exists():
        return json.loads(path.read_text())
    from models.rewards import load_reward, text_window

    window = text_window(reward if reward is not None else load_reward(spec, device), prompts)
    counts, budget = window if window else ([], None)
    over = [n - budget for n in counts if budget is not None and n > budget]
    cuts = {"max_tokens": budget, "n_prompts": len(prompts), "n_cut": len(over), "tokens_cut": sum(over),
            "longest": max(counts, default=0)}
    storage.write_bytes(str(path), json.dumps(cuts, sort_keys=True).encode(), path.parent)
    return cuts


def remove_stale_scores(out_dir: Path, manifest: pd.DataFrame, specs: list[RewardSpec], tables: bool = True) -> int:
    """Remove cache files that no current (reward, shard) key names and, with `tables`, per-reward
    tables of rewards no longer scored (every parquet beside scores.parquet); the count."""
    keep = {out_dir / "cache" / s.name / f"{k}.parquet" for s in specs for k in shard_keys(reward_id(s), manifest).values()}
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
