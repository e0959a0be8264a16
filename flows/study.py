"""`synrank study`: the paper's ablations at CPU scale (base / SFT / DPO with one reward / DPO / RankDPO /
GPO / SUDO, several seeds each) from the same Syn-Pic-style data, in one table with significance.

The shared stages (sample, generate, score) run once; each distinct reward subset is ranked once; then
every (arm, seed) trains with `train`'s settings and is evaluated against the base on the held-out
prompts with the same noise. Each (arm, seed) is an MLflow run tagged `method` and `seed` (its train
and evaluate stage runs nest under it) below one `study` run, so MLflow's compare view shows the study.
Finished runs are skipped on a rerun (their stage stamps match), so an interrupted study resumes."""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.evaluate import evaluate_flow
from flows.pipeline import STAGE_FLOWS
from flows.rank import rank_flow
from flows.train import train_flow
from models.study import study_markdown
from models.validate import validate_config
from synrank import tracking
from synrank.atomic import write_json
from synrank.config import ROOT, Config, Paths, StudyArm, flow_parameters
from synrank.deployment_params import with_deployment_defaults
from synrank.eval_report import EvalReport
from tasks.study import study_table


def arm_paths(cfg: Config, arm: StudyArm, out: Path) -> Paths:
    """The shared ranking, or one of the arm's reward subset under the study folder."""
    if not arm.rewards:
        return cfg.paths
    return cfg.paths.model_copy(update={"rankings": str(out / "rankings" / "+".join(sorted(arm.rewards)))})


@flow(name="study", log_prints=True)
def study_flow(cfg: Config) -> str:
    """`synrank study` (module docstring): the shared stages once, then every (arm, seed) trained and
    evaluated on study.benchmark; returns the path of study.md. Writes study.md and study.json (the table
    with its paired tests) in study.out, with each run's model, eval and metrics under runs/<arm>-seed<seed>.
    Raises ConfigError (synrank.config; models.validate.validate_config) for a bad setting or a name the
    study refers to (arms, rewards, reference, benchmark) that does not exist, before any compute."""
    cfg = with_deployment_defaults("cfg", cfg)  # a partial parameter from the API keeps the rest
    validate_config(cfg, command="study")  # before any compute
    study, t0 = cfg.study, time.time()
    out = Path(study.out) if Path(study.out).is_absolute() else ROOT / study.out
    tracking.setup(cfg.tracking)
    with mlflow.start_run(**tracking.run_identity("study")) as parent:
        _describe_parent(parent, cfg)
        with tracking.children_of(parent.info.run_id):
            for stage in ("sample", "generate", "score"):
                STAGE_FLOWS[stage](**flow_parameters(stage, cfg))
        runs = []
        for arm in (a for a in study.arms if a.objective):
            runs += _run_arm(cfg, arm, out, parent.info.run_id)
        base_arm = next(a.name for a in study.arms if not a.objective)
        results = study_table(runs, study.benchmark, [r.name for r in cfg.score.rewards], base_arm, study.reference)
        _log_base_arm(base_arm, study.benchmark, results)
        _publish(cfg, out, results, minutes=(time.time() - t0) / 60, run_id=parent.info.run_id)
    return str(out / "study.md")


def _describe_parent(parent: mlflow.ActiveRun, cfg: Config) -> None:
    """The study's MLflow run: linked from the Prefect flow run, tagged with the commit and data version, the
    study and train settings as its params."""
    tracking.link_from_prefect("study", parent.info.run_id, parent.info.experiment_id)
    mlflow.set_tags({"git_commit": tracking.git_commit(), "dvc_data_version": tracking.data_version()})
    mlflow.log_params(
        tracking.flatten("", {"study": cfg.study.model_dump(mode="json"), "train": cfg.train.model_dump(mode="json")})
    )


def _run_arm(cfg: Config, arm: StudyArm, out: Path, parent_id: str) -> list[tuple[str, int, Path]]:
    """Rank with the arm's rewards, then train and evaluate once per seed, each seed an MLflow run tagged
    `method` and `seed` under the study's run: [(arm, seed, its eval folder)]."""
    study = cfg.study
    evaluate = cfg.evaluate.model_copy(update={"all_generators": False, "benchmarks": [study.benchmark]})
    paths = arm_paths(cfg, arm, out)
    with tracking.children_of(parent_id):
        rank_flow(cfg.rank.model_copy(update={"rewards": arm.rewards}), paths, cfg.tracking)
    runs = []
    for seed in study.seeds:
        d = out / "runs" / f"{arm.name}-seed{seed}"
        paths_run = paths.model_copy(update={k: str(d / k) for k in ("model", "eval", "metrics")})
        tags = {
            "synrank.stage": "study-run",
            "method": arm.name,
            "seed": str(seed),
            "objective": arm.objective,
            "rewards": ",".join(arm.rewards) or "all",
        }
        with mlflow.start_run(run_name=f"{arm.name} seed {seed}", nested=True, tags=tags) as run:
            with tracking.children_of(run.info.run_id):
                train = cfg.train.model_copy(update={"objective": arm.objective, "seed": seed})
                train_flow(train, cfg.generate, paths_run, cfg.tracking)
                evaluate_flow(evaluate, cfg.score, cfg.generate, cfg.cluster, paths_run, cfg.tracking)
            _log_headline(d / "metrics" / "evaluate.json", study.benchmark)
        runs.append((arm.name, seed, d / "eval"))
    return runs


def _log_base_arm(base_arm: str, benchmark: str, results: dict) -> None:
    """The untrained base as its own tagged run (seed "-"), so that it lines up with the arms in MLflow."""
    with mlflow.start_run(
        run_name=f"{base_arm}", nested=True, tags={"synrank.stage": "study-run", "method": base_arm, "seed": "-"}
    ):
        mlflow.log_metric(f"{benchmark}/overall", results["arms"][base_arm]["overall"]["mean"])


def _publish(cfg: Config, out: Path, results: dict, minutes: float, run_id: str) -> None:
    """study.md and study.json in `out`, the same on the study's MLflow run (with its wall time in minutes)
    and as a Prefect artifact; the table is printed."""
    study = cfg.study
    md = (
        f"# Study: {len(study.arms)} arms x {len(study.seeds)} seeds\n\n"
        + study_markdown(results, study.benchmark)
        + f"\nWall time {minutes:.1f} min; MLflow run `{run_id}` (experiment "
        f"`{cfg.tracking.experiment}`), its children tagged `method` and `seed`.\n"
    )
    (out / "study.md").write_text(md)
    write_json(out / "study.json", results)
    mlflow.log_text(md, "study.md")
    mlflow.log_dict(results, "study.json")
    mlflow.log_metric("minutes", minutes)
    create_markdown_artifact(md, key="study", description="ablation study: arms x seeds")
    print(md)


def _log_headline(metrics_file: Path, benchmark: str) -> None:
    """The run's own numbers on its tagged run, so that MLflow's compare view lines the study up."""
    report = EvalReport.read(metrics_file)
    mlflow.log_metric(f"{benchmark}/overall", report.overall(benchmark, report.tuned))
    mlflow.log_metric(f"{benchmark}/base/overall", report.overall(benchmark, report.base))
    if d := report.paired.get(benchmark):
        mlflow.log_metric(f"{benchmark}/tuned_minus_base", d["delta"])
    for reward, r in report.winrate.items():
        mlflow.log_metric(f"winrate_{reward}", r["winrate"])
