"""Stage 5: preference fine-tuning (RankDPO by default) of one generator on the ranked images."""

from __future__ import annotations

import shutil
from dataclasses import replace

import mlflow
from prefect import flow

from models.train_job import TrainJob
from synrank.atomic import publish_dir
from synrank.config import GenerateConfig, Paths, TrackingConfig, TrainConfig, base_generator
from synrank.deployment_params import stage_deployment_run
from synrank.stage import STAMP, finished, stage_run
from synrank.stamp import train_identity
from tasks.train import log_tuned_model, train_model


@flow(name="train", log_prints=True)
def train_flow(
    cfg: TrainConfig, generate: GenerateConfig, paths: Paths = Paths(), tracking: TrackingConfig = TrackingConfig()
) -> str:
    """Train stage: preference fine-tuning of the base generator (`cfg.base`, default the first of
    `generate.generators`) with `cfg.objective` (RankDPO, arXiv 2410.18013 eq. 7, by default; DPO, GPO,
    SUDO, SFT, RWR: models.objectives) for `cfg.steps` steps. Reads `paths.rankings`/rankings.parquet and
    `paths.images` (manifest, PNGs, stored latents); writes `paths.model` (LoRA weights or a full pipeline,
    tuned.json, train_curve.csv) only once training succeeded, keeping checkpoints and the latent cache in a
    hidden work folder beside it so that a rerun of the same config resumes. Logs the train/* curve, the final
    metrics and the effective settings, and registers the model in MLflow as `synrank-<base>` (with
    `tracking.register_model`).

    Skipped when the stamp (synrank.stage) matches this config, the base, the rankings' and images' content,
    the base weights and the code, and the folder is untouched. Raises ConfigError for an unknown base before
    any model loads, models.trainer.NonFiniteLossError and models.preflight's errors with
    the previous model left in place, runlock.LockHeld when another run holds the folder. Returns the output
    folder."""
    # A partial parameter from the API keeps the rest; changed settings make the run an experiment.
    cfg, paths = stage_deployment_run("train", cfg, paths, generate=generate)
    rankings, images, out, prompts = (paths.resolve(k) for k in ("rankings", "images", "model", "prompts"))
    # A bad base (a typo in the Prefect form) fails here, before any model loads; a bad objective is a type
    # error of TrainConfig (synrank.plugins), refused where it is written.
    spec = base_generator(cfg, generate)
    with stage_run("train", **train_identity(cfg, generate, paths), out=out, tracking_cfg=tracking) as st:
        if st.up_to_date:
            return finished(st, out)
        # Checkpoints, the latent cache and the new model live beside the versioned output, keyed by
        # this run's fingerprint (the full train config, the data's and the base weights' content, the
        # code): a rerun of the same config resumes, any other starts fresh. The model is trained into
        # work/result and moved into `out` only once training has succeeded, so a failed run (a
        # non-finite loss, a crash) leaves the previous model and its stamp as they were.
        work = out.parent / f".{out.name}-work" / st.fingerprint[:16]
        job = TrainJob(cfg, spec, str(rankings / "rankings.parquet"), str(images), str(work / "result"), str(work))
        final = train_model(replace(job, prompts=str(prompts)), st.run_id)
        publish_dir(work / "result", out, protected=(STAMP,))
        shutil.rmtree(work, ignore_errors=True)
        # What training really ran with (accelerate's mixed precision, the timestep sampling): MLflow params
        # effective_*, beside the configured ones ("auto" says only who decided).
        settings = {f"effective_{k}": v for k, v in final.settings.items()}
        mlflow.log_params(settings)
        st.log(**final.latents, **{f"final_{k}": v for k, v in final.metrics.items()})
        # The tuned weights and tuned.json (the stamp is written later) as an MLflow pyfunc model, registered.
        name = f"synrank-{spec.name}" if tracking.register_model else ""
        uri, version = log_tuned_model(out, name, {"objective": cfg.objective, "steps": str(cfg.steps)})
        st.report = {"registered_model": name, "version": version, "model_uri": uri, **final.latents}
        print(
            f"trained {cfg.objective} for {cfg.steps} steps: "
            + ", ".join(f"{k}={v:.4g}" for k, v in final.metrics.items())
            + "; "
            + ", ".join(f"{k}={v}" for k, v in settings.items())
            + "; latents: "
            + ", ".join(f"{v} {k.removeprefix('latents_')}" for k, v in final.latents.items())
        )
    return str(out)
