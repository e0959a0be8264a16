"""One training run as a plain job: what to train (config, base, rankings, images) and where its files go,
with no Prefect, MLflow, stamp or lock. The train stage runs it in-process for one process, or launches it
on `train.processes` processes with accelerate (models.launch):

    accelerate launch --num_processes 2 -m models.train_job <work>/job.json

Every process trains (data parallel, models.trainer); only the main process writes: the model into
`out_dir`, each logged step as a line of `work_dir`/curve.jsonl and the final metrics in
`work_dir`/final.json. The parent (tasks.train) reads those, logs them to MLflow and publishes the model
after every process has exited 0.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from models.train_result import TrainResult
from synrank.atomic import write_text
from synrank.config import GeneratorSpec, TrainConfig

# The manifest's columns that training reads: each image's content id and its stored latents' (tasks.generate).
MANIFEST_COLUMNS = ("prompt", "sha256", "latent_member", "latent_sha256", "latent_shape", "latent_vae")
CURVE, FINAL = "curve.jsonl", "final.json"


@dataclass(frozen=True)
class TrainJob:
    """A train run's inputs and folders, as paths: the JSON a launched process reads (`save` / `load`)."""

    cfg: TrainConfig
    spec: GeneratorSpec  # the base generator
    rankings: str  # rankings.parquet
    images: str  # the images folder (manifest.parquet, shards)
    out_dir: str  # the tuned model goes here
    work_dir: str  # checkpoints, latent cache, curve.jsonl, final.json
    prompts: str = ""  # the sample stage's folder; read for each prompt's category when cfg.balance_tasks

    def save(self, path: Path) -> Path:
        """Write the job as JSON to `path` (atomically) and return it."""
        data = {**asdict(self), "cfg": self.cfg.model_dump(mode="json"), "spec": self.spec.model_dump(mode="json")}
        write_text(path, json.dumps(data, indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: Path) -> TrainJob:
        """The job `save` wrote."""
        data = json.loads(Path(path).read_text())
        return cls(**{**data, "cfg": TrainConfig(**data["cfg"]), "spec": GeneratorSpec(**data["spec"])})


def ranked_images(job: TrainJob, manifest: pd.DataFrame) -> pd.DataFrame:
    """The rankings joined with the manifest's (indexed by image_id) prompt, content ids and stored latents
    (and each prompt's category with balance_tasks)."""
    columns = [c for c in MANIFEST_COLUMNS if c in manifest]  # a manifest of an older run has no latents
    ranked = pd.read_parquet(job.rankings).merge(manifest[columns], left_on="image_id", right_index=True)
    if job.cfg.balance_tasks:
        prompts = pd.read_parquet(Path(job.prompts) / "prompts.parquet", columns=["prompt_id", "category"])
        ranked = ranked.merge(prompts, on="prompt_id", how="left")
    return ranked


def run_job(job: TrainJob, log: Callable[[dict[str, float], int], None] = lambda m, s: None) -> TrainResult:
    """models.trainer.train on the job's data; `log` gets every logged step (main process only). Returns its
    TrainResult (on every process); the main process also writes it to work_dir/final.json."""
    from models.trainer import train
    from synrank.shards import load_arrays, load_images

    root = Path(job.images)
    manifest = pd.read_parquet(root / "manifest.parquet").set_index("image_id")

    def images(ids: list[str]):
        return load_images(root, zip(manifest.loc[ids, "shard"], manifest.loc[ids, "member"]))

    def latents(ids: list[str]):
        return load_arrays(root, zip(manifest.loc[ids, "shard"], manifest.loc[ids, "latent_member"]))

    work = Path(job.work_dir)
    curve = work / CURVE

    def log_and_record(metrics: dict[str, float], step: int) -> None:
        # Every logged row also goes to a file beside the checkpoints, so the curve survives a resume and a
        # launching parent can follow it.
        with curve.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        log(metrics, step)

    from accelerate import PartialState

    stored = latents if "latent_member" in manifest else None
    ranked = ranked_images(job, manifest)
    final = train(job.spec, job.cfg, ranked, images, Path(job.out_dir), log_and_record, work, stored)
    if PartialState().is_main_process:  # the state train()'s Accelerator set up
        write_text(work / FINAL, final.to_json() + "\n")
    return final


def main(argv: list[str] | None = None) -> int:
    """`python -m models.train_job JOB.json` (under accelerate launch): run the job."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m models.train_job JOB.json", file=sys.stderr)
        return 2
    run_job(TrainJob.load(Path(args[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
