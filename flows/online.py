"""GPO's online self-improvement (arXiv 2505.11070) as a flow of the existing stages.

Round r: the current model generates G images for every train prompt -> the reward models score them
-> Algorithm 1 ranks each group -> the objective (GPO by default) tunes the current model on those
groups -> evaluation against the round's starting model. The tuned weights are fused into a full
pipeline that starts round r + 1. Every round keeps its own folders under outputs/online/round-<r>/
and its own MLflow runs under one parent run."""

from __future__ import annotations

from pathlib import Path

import mlflow
from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.evaluate import evaluate_flow
from flows.generate import generate_flow
from flows.rank import rank_flow
from flows.sample import sample_flow
from flows.score import score_flow
from flows.train import train_flow
from models.validate import validate_config
from synrank import tracking
from synrank.atomic import write_json
from synrank.config import Config, base_generator
from synrank.deployment_params import with_deployment_defaults
from synrank.storage import write_bytes
from tasks.online import fuse_tuned, rounds_markdown, rounds_summary


@flow(name="online", log_prints=True)
def online_flow(cfg: Config) -> str:
    """GPO's online loop (arXiv 2505.11070): the sample stage once, then `cfg.online.rounds` rounds of
    generate (the current model, `online.images_per_prompt` per prompt) -> score -> rank -> train
    (`online.objective`) -> evaluate against the round's starting model, the tuned model fused into a full
    pipeline (tasks.online.fuse_tuned) that starts the next round. Each round writes its own folders under
    `<paths.model>/../online/round-<r>/` (images, scores, rankings, model, eval, metrics, fused); after each
    round online.json, online.md, a Prefect artifact and MLflow metrics (step = round) under one parent run.

    Every stage is skipped when its stamp is current (synrank.stage), so a rerun resumes where it stopped.
    Raises ConfigError before any compute for a bad config, and any stage's error. Returns the last fused
    model's path."""
    cfg = with_deployment_defaults("cfg", cfg)  # a partial parameter from the API keeps the rest
    validate_config(
        cfg, command="online"
    )  # a bad train.base (once a bare StopIteration) or key fails here, before any compute
    current = base_generator(cfg.train, cfg.generate)
    tracking.setup(cfg.tracking)
    sample_flow(cfg.sample, cfg.paths, cfg.tracking)
    root, name = cfg.paths.resolve("model").parent / "online", current.name
    with mlflow.start_run(**tracking.run_identity("online")) as run:
        tracking.link_from_prefect("online", run.info.run_id, run.info.experiment_id)
        mlflow.log_params(tracking.flatten("online", cfg.online.model_dump(mode="json")))
        with tracking.children_of(run.info.run_id):
            for r in range(1, cfg.online.rounds + 1):
                d = root / f"round-{r}"
                paths = cfg.paths.model_copy(
                    update={k: str(d / k) for k in ("images", "scores", "rankings", "model", "eval", "metrics")}
                )
                spec = current.model_copy(update={"name": f"{name}-r{r - 1}"})
                gen = cfg.generate.model_copy(
                    update={"generators": [spec], "images_per_prompt": cfg.online.images_per_prompt}
                )
                train = cfg.train.model_copy(update={"base": spec.name, "objective": cfg.online.objective})
                generate_flow(gen, cfg.cluster, paths, cfg.tracking)
                score_flow(cfg.score, cfg.cluster, paths, cfg.tracking)
                rank_flow(cfg.rank, paths, cfg.tracking)
                train_flow(train, gen, paths, cfg.tracking)
                evaluate_flow(cfg.evaluate, cfg.score, gen, cfg.cluster, paths, cfg.tracking)
                current = fuse_tuned(paths.model, str(d / "fused"))
                print(f"round {r}: tuned model -> {current.path}")
                _report_rounds(root, r, cfg.evaluate.benchmarks[0])
    return current.path


def _report_rounds(root: Path, rounds: int, benchmark: str) -> None:
    """The table of every round so far: online.json, online.md, a Prefect artifact and MLflow metrics
    with the round as their step, so the loop's progress shows while it runs."""
    from models.benchmarks import load_benchmark

    rows = rounds_summary(
        [root / f"round-{r}" for r in range(1, rounds + 1)], benchmark, load_benchmark(benchmark).tasks
    )
    md = f"# Online {benchmark}: rounds 0-{rounds}\n\n" + rounds_markdown(rows, benchmark)
    write_json(root / "online.json", rows)
    write_bytes(str(root / "online.md"), md.encode(), root)
    create_markdown_artifact(md, key="online", description="online loop: held-out accuracy per round")
    last = rows[-1]
    mlflow.log_metric(f"{benchmark}/overall", last["accuracy"]["accuracy"], step=rounds)
    mlflow.log_metric(f"{benchmark}/since_start", last["since_start"]["delta"], step=rounds)
    print(md)
