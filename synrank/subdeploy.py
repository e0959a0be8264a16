"""A pipeline stage run as its own deployment, on that deployment's work pool (train on `gpu`).

When the pipeline itself runs from a deployment (the UI, the API, `run_deployment`), its train stage
goes to the `train/train` deployment, which prefect.yaml puts on the gpu pool: Prefect runs it as a
sub-flow run of the pipeline (the UI shows it nested), on whatever machine serves that pool. The
pipeline passes the exact train parameters it would use in-process, with absolute paths, and in the
job's environment its MLflow store and parent run id, so the train run nests under the pipeline's run.
The worker's machine must see the same output folders (one filesystem, or the same mount) and reach the
same MLflow server. Run from the CLI (no deployment, no worker to hand it to) every stage stays
in-process, as before.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

REMOTE_STAGES = {"train": "train/train"}  # stage -> the deployment that runs it on its own pool


class StageRunFailed(RuntimeError):
    """A stage's deployment cannot run or did not leave this run's result; the message says which and why."""


def pipeline_deployment_id() -> Any:
    """The id of the deployment this flow run came from, or None (a CLI run, a test)."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return getattr(getattr(ctx, "flow_run", None), "deployment_id", None)


def remote_deployment(stage: str) -> Any:
    """The deployment that should run `stage` for this pipeline run, or None to run it in-process: only
    when the pipeline runs from a deployment and the stage's deployment exists on the server. Raises
    StageRunFailed, before any compute, when that deployment's pool has no online worker (the run would
    wait forever)."""
    name = REMOTE_STAGES.get(stage)
    if name is None or pipeline_deployment_id() is None:
        return None
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import WorkerFilter, WorkerFilterStatus
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            dep = client.read_deployment_by_name(name)
        except ObjectNotFound:
            return None
        online = WorkerFilter(status=WorkerFilterStatus(any_=["ONLINE"]))
        if not client.read_workers_for_work_pool(dep.work_pool_name, worker_filter=online):
            raise StageRunFailed(
                f"the {stage} stage goes to deployment '{name}', but its pool "
                f"'{dep.work_pool_name}' has no online worker: start one (`make up` starts one "
                f"per pool; on a GPU machine `prefect worker start --pool {dep.work_pool_name}`) "
                "or run the pipeline from the CLI"
            )
        return dep


def run_remote(deployment: Any, parameters: dict[str, BaseModel], env: dict[str, str]) -> Any:
    """Run `deployment` with these flow parameters as a sub-flow run and wait for it; `env` is added to the
    deployment's own job environment (which a job-variable override would otherwise replace whole).
    Returns the final flow run; raises StageRunFailed naming the run and its state unless it completed."""
    from prefect.deployments import run_deployment

    job_env = {**((deployment.job_variables or {}).get("env") or {}), **env}
    run = run_deployment(
        deployment.id,
        parameters={k: v.model_dump(mode="json") for k, v in parameters.items()},
        job_variables={"env": job_env},
        timeout=None,
        as_subflow=True,
    )
    if run.state is None or not run.state.is_completed():
        state = run.state.name if run.state else "no state"
        raise StageRunFailed(
            f"deployment run '{run.name}' ({run.id}) of {deployment.name} ended {state}: "
            f"{run.state.message if run.state else ''}; its log is in the Prefect UI"
        )
    return run
