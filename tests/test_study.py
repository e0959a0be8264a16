"""The study: its statistics by hand, its table, its checks, the rank stage's reward subsets, the
training-curve file, and one tiny end-to-end study whose MLflow runs are tagged by method and seed."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from models.stats import seeds_and_units_bootstrap
from models.study import StudyData, load_runs, study_markdown, study_results
from models.winrates import win_outcomes, winrates
from synrank.config import validate
from synrank.eval_report import EvalReport
from synrank.tracking import metric_key
from tasks.evaluate import summary_markdown

pytestmark = pytest.mark.slow  # needs a Prefect server, a subprocess or a training run


def test_seeds_and_units_bootstrap_by_hand() -> None:
    a = np.array([[1, 0, 1, 1], [0, 0, 1, 1]])  # 2 seeds; per unit over seeds: .5 0 1 1
    b = np.array([[0, 0, 1, 0]])
    strata = np.array(["x", "x", "y", "y"])
    # a: stratum x .25, y 1 -> .625; b: x 0, y .5 -> .25.
    assert seeds_and_units_bootstrap([a], [1.0], strata)["mean"] == 0.625
    d = seeds_and_units_bootstrap([a, b], [1.0, -1.0], strata)
    assert d["mean"] == 0.375 and d["n_seeds"] == [2, 1] and d["n_units"] == 4
    assert d["ci95"][0] <= 0.375 <= d["ci95"][1]
    sure = seeds_and_units_bootstrap([np.ones((3, 4)), np.zeros((1, 4))], [1.0, -1.0], strata)
    assert sure["mean"] == 1.0 and sure["ci95"] == [1.0, 1.0] and sure["p"] == 0.0
    same = seeds_and_units_bootstrap([b, b], [1.0, -1.0], strata)
    assert same["mean"] == 0.0 and same["p"] == 1.0
    # Win-rates are tested against 0.5.
    assert seeds_and_units_bootstrap([np.full((2, 5), 0.5)], [1.0], np.zeros(5), null=0.5)["p"] == 1.0
    with pytest.raises(ValueError, match="one value per unit"):
        seeds_and_units_bootstrap([np.ones((2, 3))], [1.0], strata)


def test_win_outcomes_and_winrates_by_hand() -> None:
    manifest = pd.DataFrame(
        {
            "image_id": [f"{m}{p}{i}" for m in "bt" for p in "PQ" for i in "01"],
            "prompt_id": [p for _ in "bt" for p in "PQ" for _ in "01"],
            "index": [int(i) for _ in "bt" for _ in "PQ" for i in "01"],
            "model": [m for m in ("base", "tuned") for _ in range(4)],
        }
    )
    # Base P0 P1 Q0 Q1 = 1 2 3 4; tuned = 2 (win) 2 (tie) 1 (loss) 5 (win).
    scores = pd.DataFrame(
        {"image_id": manifest["image_id"], "reward": "r", "score": [1.0, 2.0, 3.0, 4.0, 2.0, 2.0, 1.0, 5.0]}
    )
    w = win_outcomes(scores, manifest, "base", "tuned")
    assert list(w["win"]) == [1.0, 0.5, 0.0, 1.0] and list(w["delta"]) == [1.0, 0.0, -2.0, 1.0]
    r = winrates(scores, manifest, "base", "tuned")["r"]
    assert r["winrate"] == (0.75 + 0.5) / 2 and r["n_pairs"] == 4 and r["mean_delta"] == 0.0
    assert "categories" not in r
    cats = winrates(scores, manifest, "base", "tuned", {"P": "Food & Beverage", "Q": "Arts"})["r"]["categories"]
    assert list(cats) == ["Arts", "Food & Beverage"]
    assert (cats["Arts"]["winrate"], cats["Food & Beverage"]["winrate"]) == (0.5, 0.75)
    assert cats["Arts"]["n"] == 1 and cats["Arts"]["n_pairs"] == 2 and cats["Arts"]["mean_delta"] == -0.5
    md = summary_markdown(
        {"r": {"winrate": 0.625, "ci_low": 0.5, "ci_high": 0.75, "n_pairs": 4, "mean_delta": 0.0, "categories": cats}},
        "base",
        "tuned",
    )
    assert "| Arts | 1 | 0.500 [0.50, 0.50] |\n| Food & Beverage | 1 | 0.750 [0.75, 0.75] |" in md
    # MLflow refuses '&' in a metric name: the stage logs it as '_'.
    assert metric_key("winrate_r/Food & Beverage") == "winrate_r/Food _ Beverage"


def synthetic_study() -> StudyData:
    tasks = np.array(["a"] * 20 + ["b"] * 20)
    return StudyData(
        tasks=tasks,
        values={"base": np.zeros((1, 40)), "good": np.ones((3, 40)), "same": np.zeros((3, 40))},
        wins={"good": {"r": np.ones((3, 10))}, "same": {"r": np.full((3, 10), 0.5)}},
        seeds={"base": [], "good": [0, 1, 2], "same": [0, 1, 2]},
    )


def test_study_table_marks_only_the_real_differences() -> None:
    res = study_results(synthetic_study(), reference="good", n_boot=200)
    # good: vs base, win-rate; same: vs base, vs good, win-rate.
    assert res["comparisons"] == 5 and res["order"] == ["base", "good", "same"]
    assert res["arms"]["good"]["per_seed"] == [1.0, 1.0, 1.0] and "vs_reference" not in res["arms"]["good"]
    md = study_markdown(json.loads(json.dumps(res)), "bench")  # as read back from study.json
    lines = md.splitlines()
    assert lines[0] == ("| arm | seeds | bench overall | per seed | minus base | minus good | win-rate r |")
    assert lines[2] == "| base | - | 0.000 [0.000, 0.000] | - | - | - | - |"
    assert lines[3] == (
        "| good | 0, 1, 2 | 1.000 [1.000, 1.000] | 1.000 / 1.000 / 1.000 | "
        "+1.000 [+1.000, +1.000]** | - | 1.000 [1.000, 1.000]** |"
    )
    assert lines[4] == (
        "| same | 0, 1, 2 | 0.000 [0.000, 0.000] | 0.000 / 0.000 / 0.000 | "
        "+0.000 [+0.000, +0.000] | -1.000 [-1.000, -1.000]** | 0.500 [0.500, 0.500] |"
    )
    assert "| good | 1.000 | 1.000 |" in md and "table's 5 tests (p < 0.0100)" in md


def test_study_resamples_prompts_and_leaves_the_probe_out_of_the_overall() -> None:
    # Task a: prompt p passes both images, q neither; the probe prompt z passes both (tuned) or neither.
    tasks, prompts = np.array(["a"] * 4 + ["novel_binding"] * 2), np.array(["p", "p", "q", "q", "z", "z"])
    tuned = np.array([[1.0, 1.0, 0.0, 0.0, 1.0, 1.0]] * 2)
    data = StudyData(
        tasks=tasks,
        prompts=prompts,
        probes=["novel_binding"],
        seeds={"base": [], "t": [0, 1]},
        values={"base": np.zeros((1, 6)), "t": tuned},
        wins={"t": {}},
    )
    res = study_results(data, reference="t", n_boot=400)
    t = res["arms"]["t"]
    assert t["overall"]["mean"] == 0.5 and t["per_seed"] == [0.5, 0.5]
    assert t["tasks"] == {"a": 0.5, "novel_binding": 1.0}
    assert t["overall"] == seeds_and_units_bootstrap([tuned[:, :4]], [1.0], tasks[:4], n_boot=400, clusters=prompts[:4])
    assert t["overall"]["ci95"] == [0.0, 1.0] and t["overall"]["n_clusters"] == 2  # prompts p, q
    assert (res["n_images"], res["n_prompts"]) == (4, 2)
    md = study_markdown(res, "bench")
    assert "the 2 held-out prompts (4 images) as whole prompts" in md
    assert "probe novel_binding is not part of it" in md


def _eval_dir(root: Path, base: list[float], tuned: list[float], rewards: list[float]) -> Path:
    """An evaluate-stage folder: 2 prompts x 2 images, base model `b`, tuned `t`, one reward `r`."""
    root.mkdir(parents=True)
    (root / "_stage.json").write_text(json.dumps({"report": {"base": "b", "tuned": "t"}}))
    units = [("p1", 0, "x"), ("p1", 1, "x"), ("p2", 0, "y"), ("p2", 1, "y")]
    judged = pd.DataFrame(
        [(p, i, t, v, m) for m, vals in (("t", tuned), ("b", base)) for (p, i, t), v in zip(units, vals)],
        columns=["prompt_id", "index", "task", "value", "model"],
    )
    judged.to_parquet(root / "judged_bench.parquet")
    (root / "images").mkdir()
    manifest = pd.DataFrame(
        [(f"{m}{p}{i}", p, i, m) for m in "bt" for p, i, _ in units],
        columns=["image_id", "prompt_id", "index", "model"],
    )
    manifest.to_parquet(root / "images" / "manifest.parquet")
    pd.DataFrame({"image_id": manifest["image_id"], "reward": "r", "score": rewards}).to_parquet(root / "r.parquet")
    return root


def test_an_evaluation_without_its_stamp_is_named(tmp_path: Path) -> None:
    """An evaluate run that died before its stamp leaves judged rows but no report: refused, naming the folder."""
    (tmp_path / "ev").mkdir()
    with pytest.raises(ValueError, match=f"^{tmp_path / 'ev'}: no evaluate stamp"):
        load_runs([("dpo", 0, tmp_path / "ev")], "bench", ["r"])


def test_load_runs_lines_up_images_and_prompts(tmp_path: Path) -> None:
    base = [0.0, 1.0, 0.0, 0.0]
    # Reward: base images score 0; tuned seed 0 wins p1 twice and ties p2, seed 1 loses everything.
    runs = [
        ("x", 0, _eval_dir(tmp_path / "x0", base, [1, 1, 0, 1], [0.0] * 4 + [1, 1, 0, 0])),
        ("x", 1, _eval_dir(tmp_path / "x1", base, [0, 0, 1, 1], [0.0] * 4 + [-1.0] * 4)),
    ]
    data = load_runs(runs, "bench", ["r"])
    np.testing.assert_array_equal(data.tasks, ["x", "x", "y", "y"])
    np.testing.assert_array_equal(data.prompts, ["p1", "p1", "p2", "p2"])  # the bootstrap's clusters
    np.testing.assert_array_equal(data.values["base"], [base])
    np.testing.assert_array_equal(data.values["x"], [[1, 1, 0, 1], [0, 0, 1, 1]])
    np.testing.assert_array_equal(data.wins["x"]["r"], [[1.0, 0.5], [0.0, 0.0]])
    assert data.seeds == {"base": [], "x": [0, 1]}
    other = _eval_dir(tmp_path / "x2", [1.0, 1.0, 0.0, 0.0], [0, 0, 0, 0], [0.0] * 8)
    with pytest.raises(ValueError, match="base model's images differ from the first run's"):
        load_runs([*runs, ("x", 2, other)], "bench", ["r"])


def test_rank_with_a_reward_subset(tmp_path: Path) -> None:
    from tasks.rank import rank_images

    manifest = pd.DataFrame({"image_id": ["a", "b"], "prompt_id": ["P", "P"], "model": ["m1", "m2"]})
    manifest.to_parquet(tmp_path / "manifest.parquet")
    # r1 prefers a, r2 prefers b: all rewards tie them (phi .5 each); r1 alone ranks a first.
    pd.DataFrame(
        {"image_id": ["a", "b", "a", "b"], "reward": ["r1", "r1", "r2", "r2"], "score": [2.0, 1.0, 1.0, 2.0]}
    ).to_parquet(tmp_path / "scores.parquet")
    args = (
        str(tmp_path / "scores.parquet"),
        str(tmp_path / "manifest.parquet"),
        str(tmp_path / "out.parquet"),
        "algorithm1",
    )
    rank_images.fn(*args)
    assert list(pd.read_parquet(tmp_path / "out.parquet")["phi"]) == [0.5, 0.5]
    rank_images.fn(*args, ["r1"])
    ranked = pd.read_parquet(tmp_path / "out.parquet").set_index("image_id")
    assert ranked.loc["a", "phi"] == 1.0 and ranked.loc["b", "phi"] == 0.0 and ranked.loc["a", "tau"] == 1
    with pytest.raises(ValueError, match="rank.rewards: zz not scored; scored rewards: r1, r2"):
        rank_images.fn(*args, ["zz"])


def test_training_curve_keeps_the_latest_row_per_step(tmp_path: Path) -> None:
    from tasks.train import write_curve

    rows = [
        {"step": 10, "loss": 0.5},
        {"step": 20, "loss": 0.4},  # then a crash and a resume from step 10
        {"step": 20, "loss": 0.45},
        {"step": 30, "loss": 0.3},
        {"step": 30, "heldout_implicit_acc": 0.6},
    ]
    (tmp_path / "curve.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_curve(tmp_path / "curve.jsonl", tmp_path / "curve.csv")
    assert (tmp_path / "curve.csv").read_text() == "step,loss,heldout_implicit_acc\n10,0.5,\n20,0.45,\n30,0.3,0.6\n"


EVAL_PROMPTS = [
    {"prompt": "a photo of a circle", "tag": "single_object", "include": [{"class": "circle", "count": 1}]},
    {"prompt": "a photo of a star", "tag": "single_object", "include": [{"class": "star", "count": 1}]},
    {
        "prompt": "a photo of two squares",
        "tag": "counting",
        "include": [{"class": "square", "count": 2}],
        "exclude": [{"class": "square", "count": 3}],
    },
]


def test_tiny_study_end_to_end(tmp_path: Path) -> None:
    """2 trained arms (one on a reward subset) x 2 seeds on tiny random models: every run is in MLflow
    tagged with its method and seed, and the table's base score is the judged images' own mean."""
    import synrank.config
    import synrank.stamp
    from flows.study import study_flow
    from tests.test_pipeline import tiny_config

    cfg = tiny_config(tmp_path)
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(p) + "\n" for p in EVAL_PROMPTS))
    data = cfg.model_dump(mode="json")
    data["sample"]["sources"] = [
        {"path": str(tmp_path / "prompts.txt"), "split": "train"},
        {"path": str(tmp_path / "eval.jsonl"), "split": "eval"},
    ]
    data["score"]["rewards"].append({"name": "detector", "kind": "shapes-detector"})
    data["train"].update({"steps": 2, "log_every": 1})
    data["study"] = {
        "arms": [
            {"name": "base"},
            {"name": "dpo-one", "objective": "dpo", "rewards": ["clip"]},
            {"name": "rankdpo", "objective": "rankdpo"},
        ],
        "seeds": [0, 1],
        "reference": "rankdpo",
        "out": str(tmp_path / "study"),
    }
    cfg = validate(data)
    with pytest.MonkeyPatch.context() as mp:
        frozen = {s: synrank.stamp.code_hash(s) for s in synrank.config.STAGES}
        mp.setattr(synrank.stamp, "code_hash", frozen.__getitem__)
        md_path = Path(study_flow(cfg))
    md = md_path.read_text()
    assert [line.split(" | ")[0] for line in md.splitlines()[4:7]] == ["| base", "| dpo-one", "| rankdpo"]
    results = json.loads((md_path.parent / "study.json").read_text())
    judged = pd.read_parquet(md_path.parent / "runs" / "rankdpo-seed1" / "eval" / "judged_geneval-shapes.parquet")
    base = judged[judged["model"] == "gen-a"].groupby("task")["value"].mean().mean()
    assert results["arms"]["base"]["overall"]["mean"] == pytest.approx(base)
    assert (md_path.parent / "rankings" / "clip" / "rankings.parquet").exists()
    assert (md_path.parent / "runs" / "dpo-one-seed0" / "model" / "train_curve.csv").exists()
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    runs = mlflow.search_runs(experiment_names=["e2e"], filter_string="tags.`synrank.stage` = 'study-run'")
    assert sorted(zip(runs["tags.method"], runs["tags.seed"])) == [
        ("base", "-"),
        ("dpo-one", "0"),
        ("dpo-one", "1"),
        ("rankdpo", "0"),
        ("rankdpo", "1"),
    ]
    study_run = mlflow.search_runs(experiment_names=["e2e"], filter_string="tags.`synrank.stage` = 'study'")
    assert len(study_run) == 1 and set(runs["tags.mlflow.parentRunId"]) == {study_run["run_id"][0]}


def test_dvc_plots_render_the_stage_files(tmp_path: Path) -> None:
    """dvc.yaml's plots, in a fresh DVC repo, are the SVG files the train and evaluate stages write, shown
    byte for byte as DVC image plots."""
    import subprocess
    import sys

    import pandas as pd
    import yaml

    from synrank.config import ROOT
    from synrank.plots import benchmark_tasks_svg
    from tasks.evaluate import task_rows
    from tasks.train import write_curve

    report = {
        "benchmarks": {
            "g": {
                "m": {
                    "tasks": {"counting": {"accuracy": 0.5, "ci95": [0.25, 0.75]}},
                    "overall": {"accuracy": 0.5, "ci95": [0.25, 0.75]},
                }
            }
        }
    }
    (tmp_path / "outputs" / "eval").mkdir(parents=True)
    (tmp_path / "outputs" / "model").mkdir(parents=True)
    task_rows(EvalReport.from_dict(report)).to_csv(
        tmp_path / "outputs/eval/benchmark_tasks.csv", index=False, float_format="%.6g"
    )
    assert (tmp_path / "outputs/eval/benchmark_tasks.csv").read_text() == (
        "benchmark,model,task,label,accuracy,ci_low,ci_high\n"
        "g,m,counting,counting | m,0.5,0.25,0.75\ng,m,overall,overall | m,0.5,0.25,0.75\n"
    )
    rows = pd.read_csv(tmp_path / "outputs/eval/benchmark_tasks.csv")
    benchmark_tasks_svg(rows, "m", "m-tuned", tmp_path / "outputs/eval/benchmark_tasks.svg")
    (tmp_path / "c.jsonl").write_text('{"step": 1, "loss": 0.7, "implicit_acc": 0.5}\n')
    write_curve(tmp_path / "c.jsonl", tmp_path / "outputs/model/train_curve.csv")
    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"plots": plots}))
    dvc = [str(Path(sys.executable).parent / "dvc")]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*dvc, "init", "-q"], cwd=tmp_path, check=True)
    shown = json.loads(
        subprocess.run(
            [*dvc, "plots", "show", "--json"], cwd=tmp_path, check=True, capture_output=True, text=True
        ).stdout
    )["data"]
    assert sorted(shown) == ["outputs/eval/benchmark_tasks.svg", "outputs/model/train_curve.svg"]
    for name, (plot,) in shown.items():
        assert plot["type"] == "image" and Path(plot["url"]).read_bytes() == (tmp_path / name).read_bytes()
