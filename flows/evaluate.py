"""Stage 6: the tuned model against its base on held-out prompts: reward win-rates with 95% CIs, the
benchmarks per task (their CIs resample prompts; probes such as the novel-binding one apart from the
overall), metrics/evaluate.json for DVC, the same numbers and a side-by-side image grid in MLflow."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
from prefect import flow
from prefect.artifacts import create_image_artifact, create_markdown_artifact

from models.benchmark_table import benchmark_table
from models.winrates import winrates
from synrank.cluster_config import ClusterConfig
from synrank.config import EvaluateConfig, GenerateConfig, GeneratorSpec, Paths, ScoreConfig, TrackingConfig
from synrank.deployment_params import stage_deployment_run
from synrank.eval_report import EvalReport
from synrank.metrics_file import write_evaluate_metrics
from synrank.plots import benchmark_tasks_svg
from synrank.stage import Stage, finished, stage_run
from synrank.stamp import evaluate_identity, evaluate_models, read_stamp
from tasks.evaluate import comparison_grid, grid_prompts, run_benchmark, summary_markdown, task_rows
from tasks.generate import generate_all
from tasks.score import remove_stale_scores, score_all


@flow(name="evaluate", log_prints=True)
def evaluate_flow(
    cfg: EvaluateConfig,
    rewards: ScoreConfig,
    generate: GenerateConfig,
    cluster: ClusterConfig = ClusterConfig(),
    paths: Paths = Paths(),
    tracking: TrackingConfig = TrackingConfig(),
) -> str:
    """Stage 6: the tuned model (the train stage's tuned.json), its base and, with `all_generators`, every other
    generator on the held-out prompts (split eval); returns the eval folder. Writes its images, scores, judged
    benchmark tables, benchmark_tasks.csv, summary.md and base_vs_tuned.png there and metrics/evaluate.json;
    logs the reward win-rates (95% CIs, per category) and benchmark accuracies to MLflow. With an up-to-date
    stage stamp only evaluate.json is written again, from the stamp's report."""
    # A partial parameter from the API keeps the rest; changed settings make the run an experiment.
    cfg, paths = stage_deployment_run("evaluate", cfg, paths, rewards=rewards, generate=generate)
    model_dir, prompts_dir, out = paths.resolve("model"), paths.resolve("prompts"), paths.resolve("eval")
    base, tuned, others = evaluate_models(cfg, generate, model_dir)
    identity = evaluate_identity(cfg, rewards, generate, paths)
    with stage_run("evaluate", **identity, out=out, tracking_cfg=tracking) as st:
        if not st.up_to_date:
            prompts = pd.read_parquet(prompts_dir / "prompts.parquet")
            prompts = prompts[prompts["split"] == "eval"].head(cfg.max_prompts)
            pair, models = (base.name, tuned.name), [base, tuned, *others]
            manifest, scores = _images_and_scores(st, models, prompts, out, cfg, rewards, generate, cluster)
            results = _winrates(scores, manifest, prompts, *pair)
            benches, paired, verdicts = _benchmarks(cfg.benchmarks, manifest, prompts, out, pair)
            report = EvalReport(base.name, tuned.name, int(len(prompts)), results, benches, paired)
            st.report = report.to_dict()
            st.log(**benchmark_metrics(benches, paired, {base.name: "base", tuned.name: "tuned"}))
            _log_winrates(st, results)
            if cfg.grid_prompts:
                first = rewards.rewards[0].name  # each image's score under the first reward, under it
                _log_grid(st, pair, manifest, scores, prompts, out, cfg.grid_prompts, first, verdicts)
            _write_summary(report, results, out)
            _promote(st, report, cfg.benchmarks, model_dir, out)
        write_evaluate_metrics(paths, EvalReport.from_dict(st.report))
    return finished(st, out)


def _images_and_scores(
    st: Stage,
    models: list[GeneratorSpec],
    prompts: pd.DataFrame,
    out: Path,
    cfg: EvaluateConfig,
    rewards: ScoreConfig,
    generate: GenerateConfig,
    cluster: ClusterConfig,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(manifest, scores) of every model's images of the prompts (out/images, the same seeds for every model),
    each scored by every reward; the files of earlier runs that no longer match are removed and counted."""
    device = rewards.device  # "auto" is resolved by each task, on the worker that runs it
    images = out / "images"
    made = generate_all(  # rendered as the generate stage renders: its shard size, batch and device
        models,
        prompts,
        images,
        cfg.images_per_prompt,
        cfg.seed,
        shard_size=generate.shard_size,
        batch_size=generate.batch_size,
        device=generate.device,
        fan=generate,
        cluster=cluster,
    )
    manifest, stale = made.manifest, made.stale_removed
    scores, _ = score_all(
        rewards.rewards,
        str(images / "manifest.parquet"),
        str(images),
        str(out),
        rewards.batch_size,
        device,
        fan=rewards,
        cluster=cluster,
    )
    stale += remove_stale_scores(out, manifest, rewards.rewards, tables=False)
    st.log(stale_removed=stale)
    return manifest, scores


def _winrates(scores: pd.DataFrame, manifest: pd.DataFrame, prompts: pd.DataFrame, base: str, tuned: str) -> dict:
    """models.winrates of tuned over base per reward, per category too when the prompts have categories
    (PartiPrompts, GenEval tasks)."""
    # A prompt without a category (a plain text file) reads back from parquet as None or NaN.
    categories = {
        p: c if isinstance(c, str) and c else "(none)" for p, c in zip(prompts["prompt_id"], prompts["category"])
    }
    return winrates(scores, manifest, base, tuned, categories if set(categories.values()) != {"(none)"} else None)


def _benchmarks(
    names: list[str], manifest: pd.DataFrame, prompts: pd.DataFrame, out: Path, pair: tuple[str, str]
) -> tuple[dict, dict, dict]:
    """(results, paired base-vs-tuned differences, verdicts) of each benchmark; writes out/judged_<name>.parquet.
    The verdicts, (model, prompt_id, index) -> passed, are the first benchmark's (a graded score passes at 0.5)."""
    benches, paired, verdicts = {}, {}, {}
    for b in names:
        benches[b], paired[b], judged = run_benchmark(b, manifest, prompts, str(out / "images"), pair=pair)
        judged.to_parquet(out / f"judged_{b}.parquet", index=False)
        if not verdicts:
            verdicts = {
                (m, p, int(i)): v >= 0.5
                for m, p, i, v in zip(judged["model"], judged["prompt_id"], judged["index"], judged["value"])
            }
    return benches, paired, verdicts


def _promote(st: Stage, report: EvalReport, benchmarks: list[str], model_dir: Path, out: Path) -> None:
    """The evaluated registry version (the train stage's stamp names it; none with tracking.register_model
    off): tagged, the candidate, and the champion on evidence on the first benchmark (tasks.promote). Its
    judged rows go to this run, so that a later candidate can be paired with it."""
    from models.benchmarks import load_benchmark
    from tasks.promote import promote

    trained = (read_stamp(model_dir) or {}).get("report", {})
    if not trained.get("version") or not benchmarks:
        return
    bench = benchmarks[0]
    judged = out / f"judged_{bench}.parquet"
    mlflow.log_artifact(str(judged))
    name, version = trained["registered_model"], trained["version"]
    tasks = list(load_benchmark(bench).tasks)
    decided = promote(name, version, report, pd.read_parquet(judged), st.run_id, bench, tasks)
    print(f"registry: {name} version {version} is the candidate; {decided.reason}")


def _log_winrates(st: Stage, results: dict) -> None:
    """Each reward's win-rate with its 95% CI, and per category, as MLflow metrics."""
    for reward, r in results.items():
        st.log(
            **{
                f"winrate_{reward}": r["winrate"],
                f"winrate_{reward}_ci_low": r["ci_low"],
                f"winrate_{reward}_ci_high": r["ci_high"],
            },
            **{f"winrate_{reward}/{c}": v["winrate"] for c, v in r.get("categories", {}).items()},
        )


def _log_grid(
    st: Stage,
    pair: tuple[str, str],
    manifest: pd.DataFrame,
    scores: pd.DataFrame,
    prompts: pd.DataFrame,
    out: Path,
    n_prompts: int,
    first_reward: str,
    verdicts: dict,
) -> None:
    """The (base, tuned) image grid (n_prompts per task, each image labelled with its first-reward score and
    bordered by its benchmark verdict): out/base_vs_tuned.png, an MLflow image and a Prefect artifact."""
    labels = {
        i: f"{first_reward} {v:.2f}"
        for i, v in scores[scores["reward"] == first_reward][["image_id", "score"]].itertuples(index=False)
    }
    grid = comparison_grid(
        manifest, str(out / "images"), list(pair), grid_prompts(prompts, n_prompts), verdicts, labels
    )
    grid.save(out / "base_vs_tuned.png")
    mlflow.log_image(grid, "base_vs_tuned.png")
    if st.run_url:  # the MLflow server serves the file: the same grid as a Prefect artifact
        create_image_artifact(
            image_url=st.run_url.split("/#/")[0] + f"/get-artifact?path=base_vs_tuned.png&run_uuid={st.run_id}",
            key="base-vs-tuned",
            description="base and tuned on the same seeds; border = benchmark verdict",
        )


def _write_summary(report: EvalReport, results: dict, out: Path) -> None:
    """benchmark_tasks.csv and summary.md (win-rates, then the benchmark table) in out; the summary is also a
    Prefect artifact and printed."""
    task_rows(report).to_csv(out / "benchmark_tasks.csv", index=False, float_format="%.6g")
    rows = pd.read_csv(out / "benchmark_tasks.csv")
    benchmark_tasks_svg(rows, report.base, report.tuned, out / "benchmark_tasks.svg")
    md = summary_markdown(results, report.base, report.tuned) + "\n" + benchmark_table(report)
    (out / "summary.md").write_text(md)
    create_markdown_artifact(md, key="evaluation", description="tuned vs base reward win-rates")
    print(md)


def benchmark_metrics(benches: dict[str, dict], paired: dict[str, dict | None], roles: dict[str, str]) -> dict:
    """MLflow metrics of the benchmark results: per model (named by its role, base or tuned, if it has one)
    the overall accuracy with its 95% CI and each probe's accuracy; the paired tuned - base difference
    with its CI, and each probe's apart (`<bench>/probe/<tag>/...`)."""
    out: dict[str, float] = {}
    for bench, by_model in benches.items():
        if d := paired.get(bench):
            for prefix, x in [(bench, d), *((f"{bench}/probe/{t}", p) for t, p in d.get("probes", {}).items())]:
                out.update(
                    {
                        f"{prefix}/tuned_minus_base": x["delta"],
                        f"{prefix}/tuned_minus_base_ci_low": x["ci95"][0],
                        f"{prefix}/tuned_minus_base_ci_high": x["ci95"][1],
                    }
                )
        for model, s in by_model.items():
            role = roles.get(model, model)
            lo, hi = s["overall"]["ci95"]
            out.update(
                {
                    f"{bench}/{role}/overall": s["overall"]["accuracy"],
                    f"{bench}/{role}/overall_ci_low": lo,
                    f"{bench}/{role}/overall_ci_high": hi,
                }
            )
            out.update({f"{bench}/{role}/probe/{t}": c["accuracy"] for t, c in s.get("probes", {}).items()})
    return out
