"""The parent flow: sample -> generate -> score -> rank -> train -> evaluate.

It opens one MLflow parent run (git commit, DVC data version, the whole config) and every stage
opens its own child run under it. Stages whose inputs, config and code did not change are skipped
(see synrank.stage), so a second run with nothing changed is cheap. Run from a deployment, the train
stage runs as the train deployment on its own (gpu) pool (synrank.subdeploy)."""

from __future__ import annotations

import mlflow
from prefect import flow

from flows.evaluate import evaluate_flow
from flows.generate import generate_flow
from flows.rank import rank_flow
from flows.sample import sample_flow
from flows.score import score_flow
from flows.train import train_flow
from synrank import runlock, subdeploy, tracking
from synrank.deployment_params import with_deployment_defaults
from synrank.config import stage_outputs
from synrank.stage import note_runs, read_stamp
from synrank.config import Config, flow_parameters
from synrank.validate import validate_config

STAGE_FLOWS = {"sample": sample_flow, "generate": generate_flow, "score": score_flow, "rank": rank_flow,
               "train": train_flow, "evaluate": evaluate_flow}


@flow(name="pipeline", log_prints=True)
def pipeline_flow(cfg: Config) -> str:
    cfg = with_deployment_defaults("cfg", cfg)  # a partial parameter from the API keeps the rest
    validate_config(cfg)  # a run triggered with a bad value fails here, before any compute
    tracking.setup(cfg.tracking)
    # All six output folders are held for the whole run: a second pipeline on the same folders stops
    # at once instead of interleaving with this one (synrank.runlock).
    # A train stage handed to its deployment (the gpu pool; synrank.subdeploy) takes its own lock there.
    remote = {s: d for s in STAGE_FLOWS if (d := subdeploy.remote_deployment(s)) is not None}
    with runlock.hold(stage_outputs(cfg.paths, [s for s in STAGE_FLOWS if s not in remote])):
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
                        print(f"{stage}: running deployment '{remote[stage].name}' on pool "
                              f"'{remote[stage].work_pool_name}'")
                        subdeploy.run_remote(remote[stage], flow_parameters(stage, cfg),
                                             {tracking.PARENT_ENV: run.info.run_id})
                    else:
                        stage_flow(**flow_parameters(stage, cfg))
            stamp = read_stamp(cfg.paths.resolve("eval")) or {}
            mlflow.log_metrics(headline_metrics(stamp.get("metrics", {})))
            return run.info.run_id


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
