"""MLflow, wrapped once: where the store is, which experiment, and how stage runs nest under a pipeline run."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow

from synrank.config import CODE_ROOT, ROOT, WORKSPACE, TrackingConfig

# The pipeline flow sets this so that every stage run, even one in a worker process, nests under it.
PARENT_ENV = "SYNRANK_PARENT_RUN_ID"
# MLflow 3's UI opens an experiment by this tag: training runs, not the GenAI traces view.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
UI_VIEW = "workflowType=machine_learning"  # the UI's "Model training" view (its default is "GenAI")


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
    """The MLflow store: `tracking.tracking_uri`, else $MLFLOW_TRACKING_URI, else sqlite mlflow/mlflow.db."""
    return (
        cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{WORKSPACE / 'mlflow' / 'mlflow.db'}"
    )


def setup(cfg: TrackingConfig) -> str:
    """Point MLflow at the store and make sure the experiment exists; returns the experiment id."""
    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(cfg.experiment)
    if exp is not None:
        mlflow.set_experiment(experiment_id=exp.experiment_id)
        if EXPERIMENT_KIND_TAG not in exp.tags:  # an experiment made before the tag was set
            mlflow.set_experiment_tag(EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp.experiment_id
    # A local store keeps its artifacts beside the database; a server decides for itself.
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
    exp_id = mlflow.create_experiment(
        cfg.experiment, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
    )
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def prefect_context() -> dict[str, str]:
    """The Prefect flow run this process works for, as MLflow tags: prefect.flow_run_id, .flow_run_name,
    .flow_name and, when a Prefect UI is known (a server, not the ephemeral one), .flow_run_url.
    Empty outside a flow run."""
    from prefect.runtime import flow_run

    if not flow_run.id:
        return {}
    return flow_run_tags(str(flow_run.id), str(flow_run.name), str(flow_run.flow_name), flow_run.ui_url)


def flow_run_tags(run_id: str, name: str, flow_name: str, url: str | None) -> dict[str, str]:
    """prefect_context's tags of one flow run; with a UI URL also the run's MLflow description
    (`mlflow.note.content`, markdown), where the link is one click (a tag's value is plain text)."""
    tags = {"prefect.flow_run_id": run_id, "prefect.flow_run_name": name, "prefect.flow_name": flow_name}
    if url:
        tags["prefect.flow_run_url"] = str(url)
        tags["mlflow.note.content"] = f"Prefect flow run [{flow_name} / {name}]({url})"
    return tags


def run_url(run_id: str, experiment_id: str) -> str | None:
    """The MLflow UI page of a run when the store is a tracking server (http[s]); None for a local store.
    MLflow 3's UI opens in its GenAI view unless the URL (or the browser's saved choice) says otherwise,
    so the link asks for the model-training view."""
    uri = mlflow.get_tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return None
    return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{UI_VIEW}"


def link_from_prefect(stage: str, run_id: str, experiment_id: str) -> None:
    """The Prefect side of the link: the MLflow run in the flow run's log and, with a tracking server,
    a link artifact (key mlflow-<stage>) that opens it. Nothing outside a flow run."""
    from prefect.artifacts import create_link_artifact
    from prefect.logging import get_run_logger
    from prefect.runtime import flow_run

    if not flow_run.id:
        return
    url = run_url(run_id, experiment_id)
    get_run_logger().info(f"MLflow run of {stage}: {url or f'{run_id} in {mlflow.get_tracking_uri()}'}")
    if url:
        create_link_artifact(
            url,
            link_text=f"MLflow run {run_id[:8]} ({stage})",
            key=f"mlflow-{re.sub(r'[^a-z0-9-]', '-', stage.lower())}",
            description=f"the {stage} stage's MLflow run: params, metrics, artifacts",
        )


def run_identity(stage: str) -> dict[str, Any]:
    """mlflow.start_run's run_name and tags for a stage: named after its Prefect flow run when there is
    one ('train · brave-otter'), tagged with it, and with the flow's file as its source instead of
    prefect/engine.py."""
    tags = {"synrank.stage": stage, "mlflow.source.name": f"flows/{stage}.py", **prefect_context()}
    name = f"{stage} · {tags['prefect.flow_run_name']}" if "prefect.flow_run_name" in tags else stage
    return {"run_name": name, "tags": tags}


def git_commit() -> str:
    """The commit of the code that runs (synrank's checkout), suffixed "-dirty" when tracked files differ
    from it; "unknown" without git or a repo."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=CODE_ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=CODE_ROOT, capture_output=True, text=True
        ).stdout.strip()
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


MAX_KEY = 250  # MLflow's limit on a metric or param name


def metric_key(name: str) -> str:
    """A name MLflow accepts for `name`: letters, digits and `_-. /` only (anything else, as in the PartiPrompts
    category 'Food & Beverage', becomes '_'); no empty, '.' or '..' path segment (a category 'a/' or 'a//b'
    would make one); at most 250 characters (a longer one keeps its start and a hash of the whole)."""
    key = re.sub(r"[^\w\-. /]", "_", name)
    key = "/".join("_" if part.strip() in ("", ".", "..") else part for part in key.split("/"))
    if len(key) > MAX_KEY:
        key = f"{key[: MAX_KEY - 17]}-{hashlib.sha256(name.encode()).hexdigest()[:16]}"
    return key


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
