"""MLflow, wrapped once: where the store is, which experiment, and how stage runs nest under a pipeline run."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow

from synrank.config import ROOT, TrackingConfig

# The pipeline flow sets this so that every stage run, even one in a worker process, nests under it.
PARENT_ENV = "SYNRANK_PARENT_RUN_ID"


@contextmanager
def children_of(run_id: str) -> Iterator[None]:
    """Stage runs started inside (in this process or its workers) nest under run_id."""
    previous = os.environ.get(PARENT_ENV)
    os.environ[PARENT_ENV] = run_id
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(PARENT_ENV, None)
        else:
            os.environ[PARENT_ENV] = previous


def tracking_uri(cfg: TrackingConfig) -> str:
    return cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{ROOT / 'mlflow' / 'mlflow.db'}"


def setup(cfg: TrackingConfig) -> str:
    """Point MLflow at the store and make sure the experiment exists; returns the experiment id."""
    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(cfg.experiment)
    if exp is not None:
        mlflow.set_experiment(experiment_id=exp.experiment_id)
        return exp.experiment_id
    # A local store keeps its artifacts beside the database; a server decides for itself.
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
    exp_id = mlflow.create_experiment(cfg.experiment, artifact_location=location)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def data_version() -> str:
    """The md5 that data.dvc records for data/: the DVC data version of this run."""
    import yaml

    dvc_file = ROOT / "data.dvc"
    if not dvc_file.exists():
        return "none"
    outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs", [{}])
    return str(outs[0].get("md5", "unknown"))


def metric_key(name: str) -> str:
    """MLflow accepts letters, digits and `_-. /` in metric names; anything else (a PartiPrompts
    category such as 'Food & Beverage') becomes '_'."""
    return re.sub(r"[^\w\-. /]", "_", name)


def flatten(prefix: str, obj: object) -> dict[str, str]:
    """Nested config -> {'train.beta': '2500.0', ...} for mlflow.log_params (values cut to MLflow's limit)."""
    if isinstance(obj, dict):
        out: dict[str, str] = {}
        for k, v in obj.items():
            out.update(flatten(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    if isinstance(obj, list) and obj and all(isinstance(v, dict) for v in obj):
        out = {}
        for i, v in enumerate(obj):
            out.update(flatten(f"{prefix}.{i}", v))
        return out
    return {prefix: str(obj)[:6000]}


def register(name: str, run_id: str, artifact_path: str, tags: dict[str, str]) -> str:
    """Register a run's artifact folder (diffusers weights, not an MLflow flavor) as a new version of
    a registered model; returns the version. MLflow 3's register_model wants a logged MLflow model,
    so the version is created from the artifact URI directly."""
    client = mlflow.MlflowClient()
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    source = f"{client.get_run(run_id).info.artifact_uri}/{artifact_path}"
    return client.create_model_version(name, source=source, run_id=run_id, tags=tags).version
