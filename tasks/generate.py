"""Generation tasks: plan every image (id, prompt, seed, shard) up front, then render one Prefect task per
shard on the section's engine (synrank.fanout: in this process, or fanned out over a Ray cluster).

The plan is a pure function of the prompts, the config and the generators' weights. Each shard is
named by its content id (synrank.fingerprint.shard_id: the generator's spec and weights, and the
prompt, seed and index of every row), so a resumed run skips exactly the shards whose inputs are
unchanged, and a changed prompt, seed, step count or weights file gets a new shard instead of meeting
an old one. Shards that no longer belong to the plan are removed once the new manifest is written.

Each image's final latents (what the generator's VAE decoded into its PNG) go beside it in the shard as
`<image_id>.latent.npy`, so training uses them instead of re-encoding the PNG (a VAE round trip changes
the image that the rewards judged). The manifest records, per image, the latents' member, sha256, shape
(`CxHxW`) and `latent_vae`, the content id of the VAE that decoded them ('' where a backend captured none).
Latents are float32 and exact for the batch they were rendered in: the same plan rendered with another
`batch_size` or device can differ in their last bits (a batch of one computes differently from a batch of
four; the PNGs rarely notice, being rounded to 8 bits), so shards are byte-identical only under the same
batch size and device, which a resumed run has. Each shard's latents always match its own PNGs."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from synrank import storage
from synrank.atomic import TEMP_GLOB, write_json
from synrank.cluster_config import ClusterConfig, FanOut
from synrank.config import GeneratorSpec
from synrank.device import pick_device
from synrank.fanout import Collector, Engine, keep_loaded, open_engine
from synrank.fingerprint import generator_id, sha256_text, shard_id
from synrank.shards import LATENT_SUFFIX, npy_bytes, png_bytes, shape_text, shard_problem, write_shard

# What a shard holds besides its rows' images; part of every shard's id, so that shards written before
# the latents were stored (same generator, same rows) are rendered again instead of being reused.
SHARD_LAYOUT = "png+latent.npy/1"
LATENT_COLUMNS = ("latent_member", "latent_sha256", "latent_shape", "latent_vae")


def image_seed(base_seed: int, prompt_id: str, index: int) -> int:
    """The same seed for a prompt's k-th image in every generator, so models are compared on equal noise."""
    digest = hashlib.sha256(f"{base_seed}:{prompt_id}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def plan_images(
    prompts: pd.DataFrame,
    model: str,
    images_per_prompt: int,
    seed: int,
    shard_size: int,
    store: str = "",
    generator: str = "",
) -> pd.DataFrame:
    """Every image of one generator: id, prompt, seed, shard location, member name and the shard's
    content id (`generator` is the generator's content id, synrank.fingerprint.generator_id). Shards go
    under `store` (e.g. s3://bucket/prefix) if given, else into the images folder; the per-shard
    manifest pieces that mark a shard as done always stay in the local images folder."""
    rows = []
    for pid, prompt in zip(prompts["prompt_id"], prompts["prompt"]):
        for k in range(images_per_prompt):
            rows.append(
                {
                    "image_id": f"{model}-{pid}-{k}",
                    "prompt_id": pid,
                    "prompt": prompt,
                    "model": model,
                    "index": k,
                    "seed": image_seed(seed, pid, k),
                }
            )
    plan = pd.DataFrame(rows, columns=["image_id", "prompt_id", "prompt", "model", "index", "seed"])
    number = [i // shard_size for i in range(len(plan))]
    content = sha256_text(generator, SHARD_LAYOUT)
    ids = {
        n: shard_id(content, zip(g["image_id"], g["prompt"], g["index"], g["seed"]))
        for n, g in plan.groupby(pd.Series(number, dtype="int64"), sort=True)
    }
    plan["shard_id"] = [ids[n] for n in number]
    names = [f"shards/{model}/{n:05d}-{ids[n][:16]}" for n in number]
    plan["shard"] = [storage.join(store, f"{name}.tar") if store else f"{name}.tar" for name in names]
    plan["piece"] = [f"{name}.parquet" for name in names]
    plan["member"] = plan["image_id"] + ".png"
    return plan


@task(name="check-generators")
def check_generators(specs: list[GeneratorSpec]) -> None:
    """Fail before any generation if a model path or id cannot be found."""
    from synrank.models_io import resolve_model_path

    for spec in specs:
        resolve_model_path(spec.path, what=f"generator '{spec.name}'")


def loaded_generator(spec: GeneratorSpec, device: str):
    """The generator, loaded once per worker process (synrank.fanout.keep_loaded); `device` 'auto' is resolved
    here, on the worker that runs the task."""
    from models.generators import load_generator

    device = pick_device(device)
    return keep_loaded(f"generator:{generator_id(spec)}:{device}", lambda: load_generator(spec, device))


@task(name="fit-prompts", task_run_name="fit-prompts[{spec.name}]", cache_policy=NO_CACHE)
def fit_prompts_task(spec: GeneratorSpec, prompts: list[str], device: str) -> tuple[dict[str, str], dict | None]:
    """The texts one generator is given for `prompts` and the report of what was cut (see fit_to_window)."""
    return fit_to_window(loaded_generator(spec, device), prompts)


@task(name="render-shards", task_run_name="generate[{spec.name}/{label}]", cache_policy=NO_CACHE)
def render_shards(
    spec: GeneratorSpec,
    rows: pd.DataFrame,
    texts: dict[str, str],
    out_dir: str,
    batch_size: int,
    device: str,
    label: str,
) -> dict[str, pd.DataFrame]:
    """Render the plan rows of one or more shards and publish each shard (tar, atomically under a name unique to
    this writer); returns {manifest piece name: its rows with sha256 and LATENT_COLUMNS} for the driver to write.
    A task that dies after publishing a tar is run again and writes the same bytes over it."""
    gen = loaded_generator(spec, device)
    decoder = gen.latent_decoder_id()
    pieces = {}
    for piece_name, part in rows.groupby("piece", sort=True):
        members, info = render_shard(gen, part, texts, batch_size, decoder)
        write_shard(part["shard"].iloc[0], members, Path(out_dir))
        # Each image's own content id (which keys the score cache) and its latents'.
        pieces[str(piece_name)] = part.assign(**{k: [r[k] for r in info] for k in ("sha256", *LATENT_COLUMNS)})
    return pieces


def submit_generator(
    engine: Engine,
    collect: Collector,
    spec: GeneratorSpec,
    plan: pd.DataFrame,
    out: Path,
    batch_size: int,
    device: str,
    shards_per_task: int = 1,
) -> int:
    """Submit the shards of one generator's plan that are not published yet (a manifest piece marks a shard
    done); the prompts are fitted to its text window first, once. Returns how many shards were submitted."""
    shards = {str(p): rows for p, rows in plan.groupby("piece", sort=True)}  # one pass, not one filter per shard
    pending = [p for p in shards if not (out / p).exists()]
    if not pending:
        return 0
    fit = engine.submit(fit_prompts_task, spec=spec, prompts=list(dict.fromkeys(plan["prompt"])), device=device)
    texts, report = collect.wait_for(fit)
    if report is not None:
        write_json(out / "prompt_fit" / f"{spec.name}.json", report)
    for i in range(0, len(pending), shards_per_task):
        group = pending[i : i + shards_per_task]
        rows = pd.concat([shards[p] for p in group])
        label = "+".join(Path(p).name.split("-")[0] for p in group)  # the shards' numbers: 00003+00004
        engine.submit(
            render_shards,
            name=f"{spec.name}/{label}",
            spec=spec,
            rows=rows,
            texts={p: texts[p] for p in set(rows["prompt"])},
            out_dir=str(out),
            batch_size=batch_size,
            device=device,
            label=label,
        )
    return len(pending)


def write_pieces(out: Path) -> Callable[[str, dict[str, pd.DataFrame]], None]:
    """The driver's handler of a finished render task: write its manifest pieces (after the tar: a piece's
    presence marks its shard done)."""

    def write(_: str, pieces: dict[str, pd.DataFrame]) -> None:
        for name, table in pieces.items():
            storage.write_bytes(str(out / name), table.to_parquet(index=False), out)

    return write


def sweep_temporaries(out: Path, specs: list[GeneratorSpec]) -> None:
    """Remove the half-written temporaries a killed run left (never final names): once, before any task runs,
    since a task's own temporary may be in the same folder."""
    for spec in specs:
        for stale in (out / "shards" / spec.name).glob(TEMP_GLOB):
            stale.unlink()


def render_plans(
    plans: dict[str, tuple[GeneratorSpec, pd.DataFrame]],
    out: Path,
    batch_size: int,
    device: str,
    fan: FanOut,
    cluster: ClusterConfig,
) -> list[str]:
    """Render the missing shards of every (generator, plan) on `fan`'s engine, writing each manifest piece as
    its shard finishes; a finished shard that no longer matches its piece is rendered again. Returns those
    shards. Raises ShardTasksFailed after writing every shard that did not fail."""
    sweep_temporaries(out, [spec for spec, _ in plans.values()])
    repaired = [r for _, plan in plans.values() for r in unmark_damaged(plan, out)]
    with open_engine(fan, cluster) as engine:
        collect = Collector(engine, write_pieces(out), "generate")
        for spec, plan in plans.values():
            submit_generator(engine, collect, spec, plan, out, batch_size, device, fan.shards_per_task)
        collect.finish()
    return repaired


def unmark_damaged(plan: pd.DataFrame, out: Path) -> list[str]:
    """Check every finished shard of `plan` against its manifest piece (synrank.shards.shard_problem): one that
    does not open or whose bytes changed loses its piece, so this run renders it again. Returns their names."""
    damaged = []
    for piece in sorted(plan["piece"].unique()):
        if not (out / piece).exists():
            continue
        if problem := shard_problem(pd.read_parquet(out / piece), out):
            print(f"[generate] shard {Path(piece).stem} {problem}: rendering it again")
            (out / piece).unlink()
            damaged.append(Path(piece).stem)
    return damaged


def render_shard(
    gen, rows: pd.DataFrame, text: dict[str, str], batch_size: int, decoder: str
) -> tuple[list[tuple[str, bytes]], list[dict[str, str]]]:
    """One shard's tar members, each image's PNG followed by its latents' .npy (float32 (C, h, w)), and per
    row the manifest's sha256 and LATENT_COLUMNS; `decoder` is the content id of the generator's VAE.
    A backend that captured no latents gets no .npy member and '' in those columns."""
    members, info = [], []
    for start in range(0, len(rows), batch_size):
        batch = rows.iloc[start : start + batch_size]
        out = gen.render([text[p] for p in batch["prompt"]], [int(s) for s in batch["seed"]])
        for i, (image_id, member, image) in enumerate(zip(batch["image_id"], batch["member"], out.images)):
            png = png_bytes(image)
            members.append((member, png))
            row = {"sha256": hashlib.sha256(png).hexdigest(), **dict.fromkeys(LATENT_COLUMNS, "")}
            if out.latents is not None:
                latents = out.latents[i].numpy()
                data, name = npy_bytes(latents), f"{image_id}{LATENT_SUFFIX}"
                members.append((name, data))
                row.update(
                    latent_member=name,
                    latent_sha256=hashlib.sha256(data).hexdigest(),
                    latent_shape=shape_text(latents.shape),
                    latent_vae=decoder,
                )
            info.append(row)
    return members, info


def fit_to_window(gen, prompts: list[str]) -> tuple[dict[str, str], dict | None]:
    """(prompt -> the text the generator is given: the prompt, or its longest whole-word prefix that fits the
    generator's text window; the report of what was cut, None for a generator without a window). Written by
    the driver to prompt_fit/<generator>.json (and the stage's report): a cut is counted, never silent."""
    from models.prompt_fit import excerpt, fit_prompts

    window = gen.text_window()
    if window is None:
        return {p: p for p in prompts}, None
    fitted, report = fit_prompts(prompts, *window, mode="truncate")
    texts = [f.texts[0] for f in fitted]
    summary = {k: v for k, v in report.as_dict().items() if k != "over_limit_ids"}
    return dict(zip(prompts, texts)), {
        **summary,
        "examples": [excerpt(prompts[i]) for i in report.over_limit_ids[:10]],  # a report stays small
        "encoders": encoder_cuts(gen, texts, window[0], summary),
    }


def encoder_cuts(gen, texts: list[str], primary, fitted: dict) -> dict[str, dict]:
    """Per text encoder: its window and how many of the (already fitted) prompts it still cuts, and by how
    many tokens; the fitted encoder reports the fitting itself (`fitted`)."""
    from models.prompt_fit import fit_prompts

    out = {}
    for name, (tok, size) in gen.text_encoders().items():
        r = fitted if tok is primary else fit_prompts(texts, tok, size, mode="truncate")[1].as_dict()
        out[name] = {
            "max_tokens": r["max_tokens"],
            "n_truncated": r["n_truncated"],
            "tokens_dropped": r["tokens_dropped"],
        }
    return out


def truncation_report(out: Path) -> dict[str, dict]:
    """The generators' prompt-fit reports of an images folder: {model: report}."""
    import json

    return {f.stem: json.loads(f.read_text()) for f in sorted((out / "prompt_fit").glob("*.json"))}


@dataclass
class Generated:
    """What generate_all made: the manifest, how many files of earlier runs it no longer uses were removed, and
    the finished shards it found damaged (they do not open, or their bytes changed) and rendered again."""

    manifest: pd.DataFrame
    stale_removed: int
    shards_repaired: list[str]


def generate_all(
    specs: list[GeneratorSpec],
    prompts: pd.DataFrame,
    out: Path,
    images_per_prompt: int,
    seed: int,
    shard_size: int,
    batch_size: int,
    device: str,
    store: str = "",
    fan: FanOut | None = None,
    cluster: ClusterConfig | None = None,
) -> Generated:
    """Plan, render (on `fan`'s engine: synrank.fanout) and collect every generator's images (`images_per_prompt`
    each, or the generator's own images_per_prompt).
    Raises ShardTasksFailed after writing every shard that did not fail."""
    fan = fan or FanOut()
    check_generators(specs)
    plans = {}
    for spec in specs:
        plans[spec.name] = plan_images(
            prompts, spec.name, spec.images_per_prompt or images_per_prompt, seed, shard_size, store, generator_id(spec)
        )
        plan_path = out / "plans" / f"{spec.name}.parquet"
        plan_path.parent.mkdir(parents=True, exist_ok=True)
        plans[spec.name].to_parquet(plan_path, index=False)
    repaired = render_plans(
        {s.name: (s, plans[s.name]) for s in specs}, out, batch_size, device, fan, cluster or ClusterConfig()
    )
    manifest = pd.read_parquet(write_manifest([str(out / "plans" / f"{s.name}.parquet") for s in specs], str(out)))
    return Generated(manifest, remove_stale(out, manifest), repaired)


@task(name="write-manifest")
def write_manifest(plan_paths: list[str], out_dir: str) -> str:
    """Concatenate the plans' manifest pieces into manifest.parquet (atomically)."""
    out = Path(out_dir)
    frames = [
        pd.read_parquet(out / piece) for p in plan_paths for piece in sorted(pd.read_parquet(p)["piece"].unique())
    ]
    manifest = pd.concat(frames, ignore_index=True)
    storage.write_bytes(str(out / "manifest.parquet"), manifest.to_parquet(index=False), out)
    return str(out / "manifest.parquet")


def remove_stale(out: Path, manifest: pd.DataFrame) -> int:
    """Remove the local shards, pieces and plans that the new manifest does not use (earlier prompts,
    settings or weights); returns how many files went. Run only after the manifest is written, so a
    failed run never loses the previous result. Shards in an S3 store are left in place."""
    keep = {out / p for p in manifest["piece"]} | {
        storage.local_path(s, out) for s in manifest["shard"] if not storage.is_s3(s)
    }
    models = set(manifest["model"])
    removed = 0
    for f in sorted((out / "shards").rglob("*")) if (out / "shards").exists() else []:
        if f.is_file() and f not in keep:
            f.unlink()
            removed += 1
    for folder in ("shards", "plans", "prompt_fit"):
        for f in sorted((out / folder).iterdir()) if (out / folder).exists() else []:
            if (f.name if f.is_dir() else f.stem) not in models:
                removed += sum(1 for x in f.rglob("*") if x.is_file()) if f.is_dir() else 1
                shutil.rmtree(f) if f.is_dir() else f.unlink()
    return removed
