"""Generation tasks: plan every image (id, prompt, seed, shard) up front, then render shard by shard.

The plan is a pure function of the prompts and the config, so a resumed run plans the same shards
and skips those already published."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
from prefect import task
from tqdm import tqdm

from synrank.config import GeneratorSpec
from synrank import storage
from synrank.shards import png_bytes, write_shard


def image_seed(base_seed: int, prompt_id: str, index: int) -> int:
    """The same seed for a prompt's k-th image in every generator, so models are compared on equal noise."""
    digest = hashlib.sha256(f"{base_seed}:{prompt_id}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def plan_images(prompts: pd.DataFrame, model: str, images_per_prompt: int, seed: int,
                shard_size: int, store: str = "") -> pd.DataFrame:
    """Every image of one generator: id, prompt, seed, shard location and member name. Shards go
    under `store` (e.g. s3://bucket/prefix) if given, else into the images folder; the per-shard
    manifest pieces that mark a shard as done always stay in the local images folder."""
    rows = []
    for pid, prompt in zip(prompts["prompt_id"], prompts["prompt"]):
        for k in range(images_per_prompt):
            rows.append({"image_id": f"{model}-{pid}-{k}", "prompt_id": pid, "prompt": prompt, "model": model,
                         "index": k, "seed": image_seed(seed, pid, k)})
    plan = pd.DataFrame(rows, columns=["image_id", "prompt_id", "prompt", "model", "index", "seed"])
    n = len(plan)
    names = [f"shards/{model}/{i // shard_size:05d}" for i in range(n)]
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


@task(name="generate-model")
def generate_model(spec: GeneratorSpec, plan_path: str, out_dir: str, batch_size: int,
                   device: str = "cpu") -> str:
    """Render all shards of one generator that are not published yet; returns its manifest path."""
    from models.generators import load_generator

    out = Path(out_dir)
    plan = pd.read_parquet(plan_path)
    # A killed run may have left half-written temporary files (never final names): clear them.
    for stale in (out / "shards" / spec.name).glob(".*.tmp*"):
        stale.unlink()
    pending = [p for p, _ in plan.groupby("piece", sort=True) if not (out / p).exists()]
    if pending:
        gen = load_generator(spec, device)
        text = fit_to_window(gen, list(dict.fromkeys(plan["prompt"])), out / "prompt_fit" / f"{spec.name}.json")
        for piece_name in tqdm(pending, desc=f"generate {spec.name}", unit="shard"):
            rows = plan[plan["piece"] == piece_name]
            members = []
            for start in range(0, len(rows), batch_size):
                batch = rows.iloc[start:start + batch_size]
                images = gen.generate([text[p] for p in batch["prompt"]], [int(s) for s in batch["seed"]])
                members += [(m, png_bytes(im)) for m, im in zip(batch["member"], images)]
            write_shard(rows["shard"].iloc[0], members, out)
            # The shard's manifest piece is written after the shard itself: its presence marks it done.
            piece = out / piece_name
            piece.parent.mkdir(parents=True, exist_ok=True)
            tmp = piece.with_name(f".{piece.name}.tmp")
            rows.to_parquet(tmp, index=False)
            tmp.replace(piece)
    return str(out / "shards" / spec.name)


def fit_to_window(gen, prompts: list[str], report_path: Path) -> dict[str, str]:
    """prompt -> the text the generator is given: the prompt, or its longest whole-word prefix that fits the
    generator's text window. What was cut is counted in report_path (and the stage's report), never silent."""
    from models.prompt_fit import fit_prompts
    from synrank.stage import write_json

    window = gen.text_window()
    if window is None:
        return {p: p for p in prompts}
    fitted, report = fit_prompts(prompts, *window, mode="truncate")
    summary = {k: v for k, v in report.as_dict().items() if k != "over_limit_ids"}
    write_json(report_path, {**summary, "examples": [prompts[i] for i in report.over_limit_ids[:10]]})
    return {p: f.texts[0] for p, f in zip(prompts, fitted)}


def truncation_report(out: Path) -> dict[str, dict]:
    """The generators' prompt-fit reports of an images folder: {model: report}."""
    import json

    return {f.stem: json.loads(f.read_text()) for f in sorted((out / "prompt_fit").glob("*.json"))}


def generate_all(specs: list[GeneratorSpec], prompts: pd.DataFrame, out: Path, images_per_prompt: int,
                 seed: int, shard_size: int, batch_size: int, device: str, store: str = "") -> pd.DataFrame:
    """Plan, render and collect every generator's images; returns the manifest."""
    check_generators(specs)
    plan_paths = []
    for spec in specs:
        plan = plan_images(prompts, spec.name, images_per_prompt, seed, shard_size, store)
        plan_path = out / "plans" / f"{spec.name}.parquet"
        plan_path.parent.mkdir(parents=True, exist_ok=True)
        plan.to_parquet(plan_path, index=False)
        generate_model(spec, str(plan_path), str(out), batch_size, device)
        plan_paths.append(str(plan_path))
    return pd.read_parquet(write_manifest(plan_paths, str(out)))


@task(name="write-manifest")
def write_manifest(plan_paths: list[str], out_dir: str) -> str:
    out = Path(out_dir)
    frames = [pd.read_parquet(out / piece) for p in plan_paths for piece in sorted(pd.read_parquet(p)["piece"].unique())]
    manifest = pd.concat(frames, ignore_index=True)
    tmp = out / ".manifest.parquet.tmp"
    manifest.to_parquet(tmp, index=False)
    tmp.replace(out / "manifest.parquet")
    return str(out / "manifest.parquet")
