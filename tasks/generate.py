"""Generation tasks: plan every image (id, prompt, seed, shard) up front, then render shard by shard.

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
from pathlib import Path

import pandas as pd
from prefect import task

from synrank import storage
from synrank.progress import progress
from synrank.config import GeneratorSpec
from synrank.fingerprint import generator_id, sha256_text, shard_id
from synrank.shards import LATENT_SUFFIX, npy_bytes, png_bytes, shape_text, write_shard

# What a shard holds besides its rows' images; part of every shard's id, so that shards written before
# the latents were stored (same generator, same rows) are rendered again instead of being reused.
SHARD_LAYOUT = "png+latent.npy/1"
LATENT_COLUMNS = ("latent_member", "latent_sha256", "latent_shape", "latent_vae")


def image_seed(base_seed: int, prompt_id: str, index: int) -> int:
    """The same seed for a prompt's k-th image in every generator, so models are compared on equal noise."""
    digest = hashlib.sha256(f"{base_seed}:{prompt_id}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def plan_images(prompts: pd.DataFrame, model: str, images_per_prompt: int, seed: int,
                shard_size: int, store: str = "", generator: str = "") -> pd.DataFrame:
    """Every image of one generator: id, prompt, seed, shard location, member name and the shard's
    content id (`generator` is the generator's content id, synrank.fingerprint.generator_id). Shards go
    under `store` (e.g. s3://bucket/prefix) if given, else into the images folder; the per-shard
    manifest pieces that mark a shard as done always stay in the local images folder."""
    rows = []
    for pid, prompt in zip(prompts["prompt_id"], prompts["prompt"]):
        for k in range(images_per_prompt):
            rows.append({"image_id": f"{model}-{pid}-{k}", "prompt_id": pid, "prompt": prompt, "model": model,
                         "index": k, "seed": image_seed(seed, pid, k)})
    plan = pd.DataFrame(rows, columns=["image_id", "prompt_id", "prompt", "model", "index", "seed"])
    number = [i // shard_size for i in range(len(plan))]
    content = sha256_text(generator, SHARD_LAYOUT)
    ids = {n: shard_id(content, zip(g["image_id"], g["prompt"], g["index"], g["seed"]))
           for n, g in plan.groupby(pd.Series(number, dtype="int64"), sort=True)}
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


@task(name="generate-model", task_run_name="generate[{spec.name}]")
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
        decoder = gen.latent_decoder_id()
        for piece_name in progress(pending, f"generate {spec.name}", unit="shards"):
            rows = plan[plan["piece"] == piece_name]
            members, info = render_shard(gen, rows, text, batch_size, decoder)
            write_shard(rows["shard"].iloc[0], members, out)
            # The shard's manifest piece is written after the shard itself: its presence marks it done.
            # It records each image's own content id (which keys the score cache) and its latents'.
            rows = rows.assign(**{k: [r[k] for r in info] for k in ("sha256", *LATENT_COLUMNS)})
            storage.write_bytes(str(out / piece_name), rows.to_parquet(index=False), out)
    return str(out / "shards" / spec.name)


def render_shard(gen, rows: pd.DataFrame, text: dict[str, str], batch_size: int, decoder: str
                 ) -> tuple[list[tuple[str, bytes]], list[dict[str, str]]]:
    """One shard's tar members, each image's PNG followed by its latents' .npy (float32 (C, h, w)), and per
    row the manifest's sha256 and LATENT_COLUMNS; `decoder` is the content id of the generator's VAE.
    A backend that captured no latents gets no .npy member and '' in those columns."""
    members, info = [], []
    for start in range(0, len(rows), batch_size):
        batch = rows.iloc[start:start + batch_size]
        out = gen.render([text[p] for p in batch["prompt"]], [int(s) for s in batch["seed"]])
        for i, (image_id, member, image) in enumerate(zip(batch["image_id"], batch["member"], out.images)):
            png = png_bytes(image)
            members.append((member, png))
            row = {"sha256": hashlib.sha256(png).hexdigest(), **dict.fromkeys(LATENT_COLUMNS, "")}
            if out.latents is not None:
                latents = out.latents[i].numpy()
                data, name = npy_bytes(latents), f"{image_id}{LATENT_SUFFIX}"
                members.append((name, data))
                row.update(latent_member=name, latent_sha256=hashlib.sha256(data).hexdigest(),
                           latent_shape=shape_text(latents.shape), latent_vae=decoder)
            info.append(row)
    return members, info


def fit_to_window(gen, prompts: list[str], report_path: Path) -> dict[str, str]:
    """prompt -> the text the generator is given: the prompt, or its longest whole-word prefix that fits the
    generator's text window. What was cut is counted in report_path (and the stage's report), never silent."""
    from models.prompt_fit import fit_prompts
    from synrank.stage import write_json

    window = gen.text_window()
    if window is None:
        return {p: p for p in prompts}
    fitted, report = fit_prompts(prompts, *window, mode="truncate")
    texts = [f.texts[0] for f in fitted]
    summary = {k: v for k, v in report.as_dict().items() if k != "over_limit_ids"}
    write_json(report_path, {**summary, "examples": [prompts[i] for i in report.over_limit_ids[:10]],
                             "encoders": encoder_cuts(gen, texts, window[0], summary)})
    return dict(zip(prompts, texts))


def encoder_cuts(gen, texts: list[str], primary, fitted: dict) -> dict[str, dict]:
    """Per text encoder: its window and how many of the (already fitted) prompts it still cuts, and by how
    many tokens; the fitted encoder reports the fitting itself (`fitted`)."""
    from models.prompt_fit import fit_prompts

    out = {}
    for name, (tok, size) in gen.text_encoders().items():
        r = fitted if tok is primary else fit_prompts(texts, tok, size, mode="truncate")[1].as_dict()
        out[name] = {"max_tokens": r["max_tokens"], "n_truncated": r["n_truncated"],
                     "tokens_dropped": r["tokens_dropped"]}
    return out


def truncation_report(out: Path) -> dict[str, dict]:
    """The generators' prompt-fit reports of an images folder: {model: report}."""
    import json

    return {f.stem: json.loads(f.read_text()) for f in sorted((out / "prompt_fit").glob("*.json"))}


def generate_all(specs: list[GeneratorSpec], prompts: pd.DataFrame, out: Path, images_per_prompt: int,
                 seed: int, shard_size: int, batch_size: int, device: str, store: str = ""
                 ) -> tuple[pd.DataFrame, int]:
    """Plan, render and collect every generator's images; returns the manifest and how many files of
    earlier runs that the manifest no longer uses were removed."""
    check_generators(specs)
    plan_paths = []
    for spec in specs:
        plan = plan_images(prompts, spec.name, images_per_prompt, seed, shard_size, store, generator_id(spec))
        plan_path = out / "plans" / f"{spec.name}.parquet"
        plan_path.parent.mkdir(parents=True, exist_ok=True)
        plan.to_parquet(plan_path, index=False)
        generate_model(spec, str(plan_path), str(out), batch_size, device)
        plan_paths.append(str(plan_path))
    manifest = pd.read_parquet(write_manifest(plan_paths, str(out)))
    return manifest, remove_stale(out, manifest)


@task(name="write-manifest")
def write_manifest(plan_paths: list[str], out_dir: str) -> str:
    """Concatenate the plans' manifest pieces into manifest.parquet (atomically)."""
    out = Path(out_dir)
    frames = [pd.read_parquet(out / piece) for p in plan_paths for piece in sorted(pd.read_parquet(p)["piece"].unique())]
    manifest = pd.concat(frames, ignore_index=True)
    storage.write_bytes(str(out / "manifest.parquet"), manifest.to_parquet(index=False), out)
    return str(out / "manifest.parquet")


def remove_stale(out: Path, manifest: pd.DataFrame) -> int:
    """Remove the local shards, pieces and plans that the new manifest does not use (earlier prompts,
    settings or weights); returns how many files went. Run only after the manifest is written, so a
    failed run never loses the previous result. Shards in an S3 store are left in place."""
    keep = {out / p for p in manifest["piece"]} | {storage.local_path(s, out) for s in manifest["shard"]
                                                     if not storage.is_s3(s)}
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
