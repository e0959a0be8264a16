"""Stage 5: preference fine-tuning (RankDPO by default) of one generator on the ranked images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
from prefect import flow, task

import mlflow
from synrank.config import ConfigError, GenerateConfig, Paths, TrackingConfig, TrainConfig
from synrank.deployment_params import with_deployment_defaults
from synrank.fingerprint import generator_id
from synrank.progress import Reporter
from synrank.shards import load_arrays, load_images
from synrank.stage import STAMP, stage_run
from synrank.storage import publish_dir
from tasks.tuned_model import log_tuned_model

# Keys of train()'s result that name a setting rather than measure the run (logged as MLflow params).
EFFECTIVE_SETTINGS = ("effective_mixed_precision", "timestep_density", "timestep_shift")
# Where the training latents came from (models.train_data): the generate stage's, or the PNG encoded.
LATENT_COUNTS = ("latents_stored", "latents_encoded")
# The manifest's columns that training reads: each image's content id and its stored latents' (tasks.generate).
MANIFEST_COLUMNS = ("prompt", "sha256", "latent_member", "latent_sha256", "latent_shape", "latent_vae")


def check_objective(name: str) -> None:
    """Raise ConfigError naming the registered objectives if `name` is not one."""
    from models.objectives import OBJECTIVES

    if name not in OBJECTIVES.names():
        raise ConfigError(
            f"bad value for 'train.objective': {name!r} is not a registered objective; "
            f"allowed: {', '.join(OBJECTIVES.names())}"
        )


def base_generator(cfg: TrainConfig, generate: GenerateConfig):
    names = [g.name for g in generate.generators]
    if not cfg.base:
        return generate.generators[0]
    if cfg.base not in names:
        raise ConfigError(
            f"bad value for 'train.base': {cfg.base!r} is not a generator in generate.generators; "
            f"allowed: {', '.join(names)}"
        )
    return generate.generators[names.index(cfg.base)]


def train_identity(cfg: TrainConfig, generate: GenerateConfig, paths: Paths) -> dict:
    """What the train stage's fingerprint is made of (synrank.stage.fingerprint's params, inputs, extra):
    the train config, the base generator, the rankings' and images' content, the base weights' content.
    The pipeline recomputes it to check that a train run on another worker left this run's model."""
    spec = base_generator(cfg, generate)
    return {
        "params": {"train": cfg, "base": spec},
        "inputs": [paths.resolve("rankings"), paths.resolve("images")],
        "extra": {"base_weights": generator_id(spec)},
    }


@task(name="train-model", task_run_name="train[{cfg.objective}]")
def train_model(
    cfg: TrainConfig,
    generate: GenerateConfig,
    rankings_path: str,
    images_root: str,
    out_dir: str,
    work_dir: str,
    run_id: str,
) -> dict[str, float | str]:
    from mlflow.entities import Metric

    from models.trainer import train

    spec = base_generator(cfg, generate)
    manifest = pd.read_parquet(Path(images_root) / "manifest.parquet").set_index("image_id")
    columns = [c for c in MANIFEST_COLUMNS if c in manifest]  # a manifest of an older run has no latents
    ranked = pd.read_parquet(rankings_path).merge(manifest[columns], left_on="image_id", right_index=True)
    client = mlflow.MlflowClient()
    # Every logged row also goes to a file beside the checkpoints, so the curve survives a resume;
    # train_curve.csv in the output is what `dvc plots show` draws.
    curve = Path(work_dir) / "curve.jsonl"
    curve.parent.mkdir(parents=True, exist_ok=True)

    def images(ids: list[str]):
        return load_images(Path(images_root), zip(manifest.loc[ids, "shard"], manifest.loc[ids, "member"]))

    def latents(ids: list[str]):
        return load_arrays(Path(images_root), zip(manifest.loc[ids, "shard"], manifest.loc[ids, "latent_member"]))

    report = Reporter(f"train {cfg.objective} {spec.name}", cfg.steps, "steps", every=30.0)

    def log(metrics: dict[str, float], step: int) -> None:
        client.log_batch(run_id, metrics=[Metric(f"train/{k}", float(v), 0, step) for k, v in metrics.items()])
        report(
            step,
            "".join(f", {k} {metrics[k]:.4g}" for k in ("loss", "implicit_acc") if k in metrics),
            force=step == cfg.steps,
        )
        with curve.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")

    final = train(
        spec, cfg, ranked, images, Path(out_dir), log, Path(work_dir), latents if "latent_member" in manifest else None
    )
    if curve.exists():  # absent on a non-main process
        write_curve(curve, Path(out_dir) / "train_curve.csv")
    return final


def write_curve(rows_path: Path, out: Path) -> None:
    """One row per logged step; a step logged twice (before a crash and again after the resume, or
    the held-out accuracy logged after the last step) keeps the latest value of each column."""
    rows = pd.read_json(rows_path, lines=True)
    rows.groupby("step", sort=True).last().reset_index().to_csv(out, index=False, float_format="%.6g")


@flow(name="train", log_prints=True)
def train_flow(
    cfg: TrainConfig, generate: GenerateConfig, paths: Paths = Paths(), tracking: TrackingConfig = TrackingConfig()
) -> str:
    cfg = with_deployment_defaults("cfg", cfg)  # a partial parameter from the API keeps the rest
    rankings, images, out = paths.resolve("rankings"), paths.resolve("images"), paths.resolve("model")
    # A bad base or objective (a typo in the Prefect form) fails here, before any model loads.
    spec = base_generator(cfg, generate)
    check_objective(cfg.objective)
    with stage_run("train", **train_identity(cfg, generate, paths), out=out, tracking_cfg=tracking) as st:
        if st.up_to_date:
            return str(out)
        # Checkpoints, the latent cache and the new model live beside the versioned output, keyed by
        # this run's fingerprint (the full train config, the data's and the base weights' content, the
        # code): a rerun of the same config resumes, any other starts fresh. The model is trained into
        # work/result and moved into `out` only once training has succeeded, so a failed run (a
        # non-finite loss, a crash) leaves the previous model and its stamp as they were.
        work = out.parent / f".{out.name}-work" / st.fingerprint[:16]
        final = train_model(
            cfg, generate, str(rankings / "rankings.parquet"), str(images), str(work / "result"), str(work), st.run_id
        )
        if not st.run_id:  # a non-main process of a multi-GPU run: rank 0 records and registers
            return str(out)
        publish_dir(work / "result", out, protected=(STAMP,))
        shutil.rmtree(work, ignore_errors=True)
        # What training really ran with (accelerate's mixed precision, the timestep sampling): MLflow params
        # effective_*, beside the configured ones ("auto" says only who decided).
        settings = {f"effective_{k.removeprefix('effective_')}": final.pop(k) for k in EFFECTIVE_SETTINGS if k in final}
        mlflow.log_params(settings)
        sources = {k: int(final.pop(k)) for k in LATENT_COUNTS if k in final}
        st.log(**sources, **{f"final_{k}": v for k, v in final.items()})
        # The tuned weights and tuned.json (the stamp is written later) as an MLflow pyfunc model, registered.
        uri, version = log_tuned_model(
            out, f"synrank-{spec.name}", {"objective": cfg.objective, "steps": str(cfg.steps)}
        )
        st.report = {"registered_model": f"synrank-{spec.name}", "version": version, "model_uri": uri, **sources}
        print(
            f"trained {cfg.objective} for {cfg.steps} steps: "
            + ", ".join(f"{k}={v:.4g}" for k, v in final.items())
            + "; "
            + ", ".join(f"{k}={v}" for k, v in settings.items())
            + "; latents: "
            + ", ".join(f"{v} {k.removeprefix('latents_')}" for k, v in sources.items())
        )
    return str(out)
