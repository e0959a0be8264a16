"""The parent flow: sample -> generate -> score -> rank -> train -> evaluate.

It opens one MLflow parent run (git commit, DVC data version, the whole config) and every stage
opens its own child run under it. Stages whose inputs, config and code did not change are skipped
(see synrank.stage), so a second run with nothing changed is cheap. Run from a deployment, the train
stage runs as the train deployment on its own (gpu) pool (synrank.subdeploy)."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import mlflow
from prefect import flow

from flows.evaluate import evaluate_flow
from flows.generate import generate_flow
from flows.rank import rank_flow
from flows.sample import sample_flow
from flows.score import score_flow
from flows.train import train_flow
from models.validate import validate_config
from synrank import runlock, subdeploy, tracking
from synrank.config import Config, flow_parameters, stage_outputs
from synrank.deployment_params import pipeline_deployment_run
from synrank.eval_report import EvalReport
from synrank.stage import note_runs
from synrank.stamp import fingerprint, output_id, read_stamp, train_identity

STAGE_FLOWS = {
    "sample": sample_flow,
    "generate": generate_flow,
    "score": score_flow,
    "rank": rank_flow,
    "train": train_flow,
    "evaluate": evaluate_flow,
}


@flow(name="pipeline", log_prints=True)
def pipeline_flow(cfg: Config) -> str:
    """The whole pipeline: sample -> generate -> score -> rank -> train -> evaluate, each stage a child flow
    with its own MLflow run under one parent run (git commit, DVC data version, the whole config), reading
    and writing the folders of `cfg.paths`. Each stage is skipped on its own when its stamp is current
    (synrank.stage), so a rerun with nothing changed is cheap; run from a deployment, train runs as its own
    deployment on the gpu pool (synrank.subdeploy). Every output folder is locked for the whole run. Logs the
    evaluate stage's headline metrics on the parent run and returns its MLflow run id.

    Raises ConfigError before any compute for a bad config, runlock.LockHeld when another run holds an
    output folder, subdeploy.StageRunFailed when the remote train run fails or leaves another run's model,
    and any stage's error."""
    # A partial parameter (the form shows a subset) keeps the rest; changed settings make the run an experiment.
    cfg = pipeline_deployment_run(cfg, list(STAGE_FLOWS))
    validate_config(cfg)  # a run triggered with a bad value fails here, before any compute
    tracking.setup(cfg.tracking)
    # A train stage handed to its deployment (the gpu pool; synrank.subdeploy) takes its own lock there;
    # every other output folder is held for the whole run, so a second pipeline on the same folders stops
    # at once instead of interleaving with this one (synrank.runlock).
    remote = {s: d for s in STAGE_FLOWS if (d := subdeploy.remote_deployment(s)) is not None}
    with runlock.hold(stage_outputs(cfg.paths, [s for s in STAGE_FLOWS if s not in remote])), ExitStack() as held:
        if marked := runlock.mark_crashed(runlock.pop_killed()):
            print("the previous run on these outputs was killed; marked " + ", ".join(marked))
        with mlflow.start_run(**tracking.run_identity("pipeline")) as run:
            note_runs(run.info.run_id)
            tracking.link_from_prefect("pipeline", run.info.run_id, run.info.experiment_id)
            mlflow.set_tags({"git_commit": tracking.git_commit(), "dvc_data_version": tracking.data_version()})
            mlflow.log_params(tracking.flatten("", cfg.model_dump(mode="json")))
            with tracking.children_of(run.info.run_id):
                for stage, stage_flow in STAGE_FLOWS.items():
                    if stage in remote:
                        train_remotely(remote[stage], cfg, run.info.run_id, held)
                    else:
                        stage_flow(**flow_parameters(stage, cfg))
            stamp = read_stamp(cfg.paths.resolve("eval")) or {}
            headline = headline_metrics(stamp.get("metrics", {}))
            mlflow.log_metrics({tracking.metric_key(k): v for k, v in headline.items()})
            report_result(EvalReport.from_dict(stamp.get("report", {})))
            return run.info.run_id


def report_result(report: EvalReport) -> None:
    """The run's answer where a Prefect user looks: the benchmark table as the flow run's artifact
    `pipeline-result`, and its one-line summary as the run's last log line."""
    from prefect.artifacts import create_markdown_artifact

    from models.benchmark_table import benchmark_table, result_line

    if not report.benchmarks:
        return
    create_markdown_artifact(
        benchmark_table(report), key="pipeline-result", description="the evaluate stage's benchmark table"
    )
    print(f"result: {result_line(report)}")


def train_remotely(deployment: Any, cfg: Config, parent_run_id: str, held: ExitStack) -> None:
    """The train stage as a run of its deployment (synrank.subdeploy), then the model folder locked for the
    rest of the pipeline and checked to hold this run's training (its stamp's fingerprint is the one this
    config, these rankings and these base weights give): another train run, or a worker that wrote to
    another filesystem, is an error here instead of a wrong model under this run's metrics."""
    paths = cfg.paths.model_copy(update={k: str(cfg.paths.resolve(k)) for k in type(cfg.paths).model_fields})
    print(f"train: running deployment '{deployment.name}' on pool '{deployment.work_pool_name}'")
    params = {**flow_parameters("train", cfg), "paths": paths}
    subdeploy.run_remote(
        deployment, params, {tracking.PARENT_ENV: parent_run_id, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()}
    )
    out = paths.resolve("model")
    held.enter_context(runlock.hold([out]))  # nothing replaces the model before evaluate has read it
    stamp = read_stamp(out) or {}
    expected = fingerprint("train", **train_identity(cfg.train, cfg.generate, paths))
    if stamp.get("fingerprint") != expected or stamp.get("outputs") != output_id(out):
        raise subdeploy.StageRunFailed(
            f"train: deployment '{deployment.name}' completed, but '{out}' does not hold this run's model "
            f"(stamp fingerprint {str(stamp.get('fingerprint'))[:16]}, expected {expected[:16]}): another train "
            "run replaced it, or the worker's machine does not share these output folders"
        )


def headline_metrics(evaluate: dict[str, float]) -> dict[str, float]:
    """The evaluate stage's numbers that answer "did tuning help", for the parent run's row in MLflow:
    per benchmark the base and tuned overall and the paired tuned - base difference with their CIs, and
    each reward's win-rate with its CI; per-task, per-category and probe breakdowns stay on the
    evaluate run."""

    def headline(key: str) -> bool:
        if key.startswith("winrate_"):
            return "/" not in key
        return "/probe/" not in key and key.split("/")[-1].startswith(("overall", "tuned_minus_base"))

    return {k: v for k, v in evaluate.items() if headline(k)}
