"""The train stage's Prefect task (`train-model`: models.trainer.train over the ranked images, its curve
logged to MLflow and to train_curve.csv) and the tuned generator as an MLflow model: a pyfunc that wraps the
diffusers pipeline, so the model registry, the runs table's Models column and `mlflow.pyfunc.load_model` all
see one model.

    model = mlflow.pyfunc.load_model("models:/synrank-shapes-sd-s/3")
    out = model.predict(pd.DataFrame({"prompt": ["a photo of two red circles"], "seed": [0]}))
    Image.open(io.BytesIO(out["image"][0]))

Input: a DataFrame with `prompt` (str) and `seed` (int); output: the same rows with `image`, PNG bytes
(image i is rendered from seed i alone, as the generate stage does). The logged artifact is the train
stage's output folder (LoRA weights or a full pipeline, and tuned.json); the base weights it names are
loaded from where tuned.json says (a local folder or a hub id), so a LoRA model loads where its base
is, and synrank's generator code renders it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import ColSpec, Schema
from prefect import task

from models.train_job import TrainJob
from models.train_result import TrainResult
from synrank.models_io import tuned_spec
from synrank.progress import Reporter
from synrank.shards import png_bytes

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "prompt"), ColSpec("long", "seed")]),
    outputs=Schema([ColSpec("string", "prompt"), ColSpec("long", "seed"), ColSpec("binary", "image")]),
)


class TunedGenerator(mlflow.pyfunc.PythonModel):
    """prompts and seeds in, PNG images out (see the module docstring)."""

    def load_context(self, context: Any) -> None:
        """Load the generator tuned.json names (LoRA over its base, or a full pipeline) on the CPU."""
        from models.generators import load_generator

        _, tuned = tuned_spec(Path(context.artifacts["tuned"]))
        self.generator = load_generator(tuned, "cpu")

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Rows of `prompt` (str) and `seed` (int) -> the same rows plus `image`, PNG bytes of the base's size,
        image i rendered from seed i alone; `params` is ignored."""
        prompts, seeds = [str(p) for p in model_input["prompt"]], [int(s) for s in model_input["seed"]]
        images = self.generator.render(prompts, seeds).images
        return pd.DataFrame({"prompt": prompts, "seed": seeds, "image": [png_bytes(im) for im in images]})


def log_tuned_model(model_dir: Path, registered_name: str, tags: dict[str, str]) -> tuple[str, str]:
    """Log `model_dir` (a train stage output) as the active run's MLflow model `tuned_model` and register
    it as a new version of `registered_name` with `tags` ("" = register nothing); returns (model URI,
    version or "")."""
    info = mlflow.pyfunc.log_model(
        name="tuned_model",
        python_model=TunedGenerator(),
        artifacts={"tuned": str(model_dir)},
        signature=SIGNATURE,
        registered_model_name=registered_name or None,
        pip_requirements=["torch", "diffusers", "transformers", "peft", "pandas", "pillow"],
    )  # no inference: offline
    if not registered_name:
        return info.model_uri, ""
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    for k, v in tags.items():
        client.set_model_version_tag(registered_name, version, k, v)
    return info.model_uri, version


@task(name="train-model", task_run_name="train[{job.cfg.objective}]")
def train_model(job: TrainJob, run_id: str) -> TrainResult:
    """models.trainer.train (RankDPO by default, arXiv 2410.18013 eq. 7; `cfg.objective` picks another) of the
    job's base on its rankings joined with the manifest's prompts and stored latents: writes the tuned model to
    `job.out_dir`, checkpoints, the latent cache and curve.jsonl to `job.work_dir`, and
    `job.out_dir`/train_curve.csv. One process (`train.processes: 1`, one machine) trains here; more are launched with
    accelerate (models.launch), this process following their curve. Every logged step goes to MLflow run
    `run_id` as train/<metric>. Returns train's TrainResult; raises its
    NonFiniteLossError and models.preflight's errors (in-process), LaunchFailed when a launched process fails."""
    from mlflow.entities import Metric

    from models.launch import launch
    from models.train_job import run_job

    cfg = job.cfg
    client = mlflow.MlflowClient()
    report = Reporter(f"train {cfg.objective} {job.spec.name}", cfg.steps, "steps", every=30.0)

    upload = ValidationUpload(client, run_id, Path(job.work_dir) / "validation")

    def log(metrics: dict[str, float], step: int) -> None:
        client.log_batch(run_id, metrics=[Metric(f"train/{k}", float(v), 0, step) for k, v in metrics.items()])
        report(
            step,
            "".join(f", {k} {metrics[k]:.4g}" for k in ("loss", "implicit_acc") if k in metrics),
            force=step == cfg.steps,
        )
        upload()

    Path(job.work_dir).mkdir(parents=True, exist_ok=True)
    final = launch(job, log) if cfg.launched else run_job(job, log)
    upload()  # the last step's images, rendered after its row was logged
    curve = Path(job.work_dir) / "curve.jsonl"
    if curve.exists():
        write_curve(curve, Path(job.out_dir) / "train_curve.csv")
    return final


class ValidationUpload:
    """Logs each new step folder of validation images (models.validation_images) to the MLflow run as
    validation/step-NNNNNNN/, once; called as training goes and at its end."""

    def __init__(self, client: Any, run_id: str, folder: Path) -> None:
        self.client, self.run_id, self.folder, self.done = client, run_id, folder, set()

    def __call__(self) -> None:
        """Log the step folders not logged yet."""
        for step in sorted(self.folder.glob("step-*")) if self.folder.exists() else []:
            if step.name not in self.done:
                self.client.log_artifacts(self.run_id, str(step), f"validation/{step.name}")
                self.done.add(step.name)


def write_curve(rows_path: Path, out: Path) -> None:
    """One row per logged step in `out` (train_curve.csv) and its plot beside it (train_curve.svg,
    synrank.plots); a step logged twice (before a crash and again after the resume, or the held-out
    accuracy logged after the last step) keeps the latest value of each column."""
    from synrank.plots import training_curve_svg

    rows = pd.read_json(rows_path, lines=True).groupby("step", sort=True).last().reset_index()
    rows.to_csv(out, index=False, float_format="%.6g")
    training_curve_svg(pd.read_csv(out), out.with_suffix(".svg"))  # the numbers as written
