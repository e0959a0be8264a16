"""The evaluation's statistics resample prompts, not images (a prompt's images are not independent):
hand-computed cases, the seeded resample against a direct numpy computation of it, and the widening of
the CI when a prompt's images are correlated; GenEval-shapes' summary, paired difference, evaluate-stage
metrics and `synrank table` with the novel-binding probe reported apart from the overall."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from models.benchmarks.geneval_shapes import GenEvalShapes
from models.stats import bootstrap_means, paired_task_delta, percentile_ci, seeds_and_units_bootstrap, stratified_means
from synrank.eval_report import EvalReport


def _direct_cluster_means(values: np.ndarray, clusters: list[str], rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """The prompt-level resample written out: draw as many prompts as there are (numbered in order of
    first appearance), pool all their images, take the mean."""
    names = list(dict.fromkeys(clusters))
    members = [values[[c == n for c in clusters]] for n in names]
    draws = rng.integers(0, len(names), size=(n_boot, len(names)))
    return np.array([np.concatenate([members[i] for i in d]).mean() for d in draws])


def test_cluster_resample_matches_a_direct_numpy_computation() -> None:
    values = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0])
    clusters = ["p", "p", "q", "q", "q", "r", "r"]  # unequal sizes: the pooled mean, not the mean of means
    got = bootstrap_means(values, np.random.default_rng(7), 300, np.array(clusters))
    np.testing.assert_allclose(got, _direct_cluster_means(values, clusters, np.random.default_rng(7), 300))


def test_every_value_its_own_cluster_is_the_image_level_bootstrap() -> None:
    values = np.random.default_rng(0).random(25)
    image = bootstrap_means(values, np.random.default_rng(3), 200)
    np.testing.assert_array_equal(bootstrap_means(values, np.random.default_rng(3), 200, np.arange(25)), image)
    with pytest.raises(ValueError, match="one id per value"):
        bootstrap_means(values, np.random.default_rng(3), 200, np.arange(3))


def test_two_prompts_enumerated() -> None:
    # Prompt p passes both images, q fails both. Drawing 2 prompts: pp, pq, qp, qq -> 1, .5, .5, 0 (1/4, 1/2,
    # 1/4); drawing 4 images instead also gives .25 and .75.
    values, clusters = np.array([1.0, 1.0, 0.0, 0.0]), np.array(["p", "p", "q", "q"])
    prompt = bootstrap_means(values, np.random.default_rng(0), 4000, clusters)
    assert set(np.unique(prompt)) == {0.0, 0.5, 1.0}
    assert np.mean(prompt == 0.5) == pytest.approx(0.5, abs=0.03)
    assert np.mean(prompt == 1.0) == pytest.approx(0.25, abs=0.03)
    assert {0.25, 0.75} <= set(np.unique(bootstrap_means(values, np.random.default_rng(0), 4000)))


def test_stratified_means_by_prompt_by_hand() -> None:
    # Task a: prompt p 1 1, q 0 0 -> a resample's mean is 0, .5 or 1. Task b: r 1 0, s 0 1: every prompt
    # passes half, so every prompt-level resample of b has mean .5 (an image-level one does not).
    groups = {"a": np.array([1.0, 1.0, 0.0, 0.0]), "b": np.array([1.0, 0.0, 0.0, 1.0])}
    prompts = {"a": np.array(["p", "p", "q", "q"]), "b": np.array(["r", "r", "s", "s"])}
    per, overall = stratified_means(groups, seed=0, n_boot=1000, clusters=prompts)
    assert per["a"] == {"mean": 0.5, "ci95": [0.0, 1.0], "n": 4, "n_units": 2}
    assert per["b"] == {"mean": 0.5, "ci95": [0.5, 0.5], "n": 4, "n_units": 2}
    # Overall = (a + .5) / 2 in {.25, .5, .75}, each end with probability 1/4.
    assert overall == {"mean": 0.5, "ci95": [0.25, 0.75], "n": 8, "n_units": 4}
    image_per, image_overall = stratified_means(groups, seed=0, n_boot=1000)
    assert image_per["b"]["ci95"][0] < 0.5 < image_per["b"]["ci95"][1] and image_per["b"]["n_units"] == 4
    assert image_overall["mean"] == overall["mean"]  # the point estimate does not depend on the unit


def test_paired_delta_by_prompt_by_hand_and_against_numpy() -> None:
    tasks = np.array(["a"] * 4 + ["b"] * 4)
    diffs = np.array([1.0, 1.0, 0.0, 0.0, 1.0, -1.0, -1.0, 1.0])
    prompts = np.array(["p", "p", "q", "q", "r", "r", "s", "s"])
    d = paired_task_delta(tasks, diffs, seed=5, n_boot=1000, clusters=prompts)
    # Task a: .5, resampled in {0, .5, 1}; task b: every prompt nets 0. Overall .25 in {0, .25, .5}.
    assert (d["delta"], d["n_pairs"], d["n_units"]) == (0.25, 8, 4) and d["ci95"] == [0.0, 0.5]
    assert d["tasks"]["b"] == {"delta": 0.0, "ci95": [0.0, 0.0], "n_pairs": 4, "n_units": 2}
    # The same resample by hand: tasks in sorted order, prompts drawn with replacement within each.
    rng = np.random.default_rng(5)
    boots = [_direct_cluster_means(diffs[tasks == t], list(prompts[tasks == t]), rng, 1000) for t in ("a", "b")]
    assert d["ci95"] == list(percentile_ci(np.mean(boots, axis=0)))
    assert paired_task_delta(tasks, diffs, seed=5, n_boot=1000)["tasks"]["b"]["ci95"] != [0.0, 0.0]  # images
    with pytest.raises(ValueError, match="one id per pair"):
        paired_task_delta(tasks, diffs, clusters=prompts[:3])


def _correlated(n_prompts: int, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """k images per prompt that all pass or all fail together (the prompt's own difficulty)."""
    passes = np.repeat(rng.random(n_prompts) < 0.5, k).astype(float)
    return passes, np.repeat([f"p{i}" for i in range(n_prompts)], k)


def test_correlated_images_widen_the_prompt_level_ci() -> None:
    rng = np.random.default_rng(1)
    values, prompts = _correlated(40, 16, rng)
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    (per_p, _), (per_i, _) = (stratified_means({"t": values}, clusters=c) for c in ({"t": prompts}, None))
    # Perfectly correlated images: 640 images carry the information of 40 prompts, so the honest CI is
    # about sqrt(16) = 4 times as wide as the image-level one.
    assert per_p["t"]["mean"] == per_i["t"]["mean"]
    assert 3.0 < width(per_p["t"]["ci95"]) / width(per_i["t"]["ci95"]) < 5.5
    # Independent images: the two agree.
    independent = (rng.random(640) < 0.5).astype(float)
    (ind_p, _), (ind_i, _) = (stratified_means({"t": independent}, clusters=c) for c in ({"t": prompts}, None))
    assert 0.7 < width(ind_p["t"]["ci95"]) / width(ind_i["t"]["ci95"]) < 1.4


def test_seeds_and_units_bootstrap_resamples_whole_prompts() -> None:
    # Stratum x: prompt p passes both images, q fails both; stratum y: r and s pass one image each.
    strata = np.array(["x", "x", "x", "x", "y", "y", "y", "y"])
    prompts = np.array(["p", "p", "q", "q", "r", "r", "s", "s"])
    arm = np.array([[1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0]])
    by_prompt = seeds_and_units_bootstrap([arm], [1.0], strata, clusters=prompts, n_boot=1000)
    assert by_prompt["mean"] == 0.5 and by_prompt["ci95"] == [0.25, 0.75]  # x in {0, .5, 1}, y always .5
    assert by_prompt["n_units"] == 8 and by_prompt["n_clusters"] == 4
    by_image = seeds_and_units_bootstrap([arm], [1.0], strata, n_boot=1000)
    assert by_image["mean"] == 0.5 and by_image["ci95"] != by_prompt["ci95"] and by_image["n_clusters"] == 8
    with pytest.raises(ValueError, match="spans two strata"):
        seeds_and_units_bootstrap([arm], [1.0], strata, clusters=np.array(["p"] * 8))
    with pytest.raises(ValueError, match="one id per unit"):
        seeds_and_units_bootstrap([arm], [1.0], strata, clusters=prompts[:4])


def test_seeds_and_units_bootstrap_against_numpy() -> None:
    """One replicate by hand: the prompts of each stratum (sorted) are drawn first, then each arm's seeds."""
    rng0 = np.random.default_rng(2)
    strata = np.repeat(["x", "y"], 6)
    prompts = np.repeat(["p1", "p2", "p3", "q1", "q2", "q3"], 2)
    a, b = (rng0.random((3, 12)) < 0.6).astype(float), (rng0.random((2, 12)) < 0.4).astype(float)
    got = seeds_and_units_bootstrap([a, b], [1.0, -1.0], strata, seed=9, n_boot=50, clusters=prompts)
    rng, boots = np.random.default_rng(9), []
    for _ in range(50):
        drawn = [rng.integers(0, 3, 3) for _ in ("x", "y")]
        total = 0.0
        for sign, arm in ((1.0, a), (-1.0, b)):
            m = arm[rng.integers(0, len(arm), len(arm))].mean(axis=0)
            # Stratum s holds prompts 3s..3s+2, each two adjacent units.
            total += sign * np.mean(
                [np.concatenate([m[6 * s + 2 * i : 6 * s + 2 * i + 2] for i in d]).mean() for s, d in enumerate(drawn)]
            )
        boots.append(total)
    assert got["ci95"] == pytest.approx(list(percentile_ci(np.array(boots))), abs=1e-12)
    diff = a.mean(axis=0) - b.mean(axis=0)
    assert got["mean"] == pytest.approx((diff[:6].mean() + diff[6:].mean()) / 2)


# --- GenEval-shapes: prompt-level CIs, the novel-binding probe apart, the table ------------------------


def test_geneval_shapes_summary_resamples_prompts_and_keeps_the_probe_apart() -> None:
    # colors: prompt c1 passes both images, c2 neither -> .5; position: p1 and p2 pass one of two -> .5,
    # and every prompt-level resample of it is .5; the probe (novel_binding) passes all and stays out of
    # the overall, which is the mean of colors and position only.
    results = (
        [("colors", True)] * 2
        + [("colors", False)] * 2
        + [("position", True), ("position", False)] * 2
        + [("novel_binding", True)] * 2
    )
    prompts = ["c1", "c1", "c2", "c2", "p1", "p1", "p2", "p2", "n1", "n1"]
    s = GenEvalShapes().summarize(results, prompts=prompts)
    assert list(s["tasks"]) == ["colors", "position"] and list(s["probes"]) == ["novel_binding"]
    assert s["overall"]["accuracy"] == 0.5 and (s["overall"]["n"], s["overall"]["n_prompts"]) == (8, 4)
    assert s["tasks"]["colors"] == {"accuracy": 0.5, "ci95": [0.0, 1.0], "n": 4, "n_prompts": 2}
    assert s["tasks"]["position"]["ci95"] == [0.5, 0.5]
    assert s["probes"]["novel_binding"] == {"accuracy": 1.0, "ci95": [1.0, 1.0], "n": 2, "n_prompts": 1}
    by_image = GenEvalShapes().summarize(results)  # every image its own unit: same estimates, other CIs
    assert by_image["overall"]["accuracy"] == 0.5 and by_image["tasks"]["position"]["ci95"] != [0.5, 0.5]
    assert by_image["overall"]["n_prompts"] == 8
    only_probe = GenEvalShapes().summarize([("novel_binding", True)])
    assert only_probe["tasks"] == {} and only_probe["overall"]["n"] == 0
    assert np.isnan(only_probe["overall"]["accuracy"])
    with pytest.raises(ValueError, match="one id per result"):
        GenEvalShapes().summarize(results, prompts=prompts[:3])


def test_paired_score_headline_is_over_the_tasks_and_the_probe_apart() -> None:
    from models.shapes.benchmark import paired_score

    tags = ["colors"] * 4 + ["novel_binding"] * 2
    d = paired_score(tags, [1, 1, 0, 0, 1, 1], ["c1", "c1", "c2", "c2", "n1", "n1"])
    assert (d["delta"], d["ci95"], d["n_pairs"], d["n_prompts"]) == (0.5, [0.0, 1.0], 4, 2)
    assert list(d["tasks"]) == ["colors"] and d["tasks"]["colors"]["delta"] == 0.5
    assert d["probes"] == {"novel_binding": {"delta": 1.0, "ci95": [1.0, 1.0], "n_pairs": 2, "n_prompts": 1}}


def _judged_world(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Prompts (two colors prompts, one probe prompt, one text prompt no benchmark applies to) and a manifest
    of 2 images per prompt for `base` (all black) and `tuned` (white for c1 and the probe, black for c2),
    one shard per model."""
    from synrank.shards import png_bytes, write_shard

    metas = {
        "c1": {"tag": "colors", "include": [{"class": "circle", "count": 1, "color": "red"}]},
        "c2": {"tag": "colors", "include": [{"class": "star", "count": 1, "color": "blue"}]},
        "n1": {"tag": "novel_binding", "include": [{"class": "square", "count": 1, "color": "green"}]},
        "t1": {},
    }
    prompts = pd.DataFrame({"prompt_id": list(metas), "meta": [json.dumps(m) for m in metas.values()]})
    rows = []
    for model, white in (("base", set()), ("tuned", {"c1", "n1"})):
        color = {p: "white" if p in white else "black" for p in metas}
        members = [
            (f"{model}-{p}-{i}.png", png_bytes(Image.new("RGB", (8, 8), color[p]))) for p in metas for i in range(2)
        ]
        write_shard(f"shards/{model}.tar", members, root)
        rows += [
            {
                "model": model,
                "prompt_id": p,
                "index": i,
                "shard": f"shards/{model}.tar",
                "member": f"{model}-{p}-{i}.png",
            }
            for p in metas
            for i in range(2)
        ]
    return prompts, pd.DataFrame(rows)


def test_run_benchmark_and_table_report_prompts_images_and_the_probe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli.main import main
    from flows.evaluate import benchmark_metrics
    from models.benchmark_table import benchmark_table
    from tasks.evaluate import run_benchmark

    monkeypatch.setattr(GenEvalShapes, "judge", lambda self, im, meta: (meta["tag"], im.getpixel((0, 0))[0] > 127))
    prompts, manifest = _judged_world(tmp_path)
    out, paired, judged = run_benchmark.fn("geneval-shapes", manifest, prompts, str(tmp_path), pair=("base", "tuned"))
    assert out["base"]["overall"]["accuracy"] == 0.0 and out["tuned"]["overall"]["accuracy"] == 0.5
    assert out["tuned"]["tasks"]["colors"] == {"accuracy": 0.5, "ci95": [0.0, 1.0], "n": 4, "n_prompts": 2}
    assert out["tuned"]["probes"]["novel_binding"]["accuracy"] == 1.0
    assert (paired["delta"], paired["ci95"], paired["n_pairs"], paired["n_prompts"]) == (0.5, [0.0, 1.0], 4, 2)
    assert paired["probes"]["novel_binding"]["delta"] == 1.0 and len(judged) == 12  # t1 is not judged
    metrics = benchmark_metrics({"geneval-shapes": out}, {"geneval-shapes": paired}, {"base": "base", "tuned": "tuned"})
    assert metrics["geneval-shapes/tuned_minus_base"] == 0.5 and metrics["geneval-shapes/tuned/overall"] == 0.5
    assert metrics["geneval-shapes/probe/novel_binding/tuned_minus_base"] == 1.0
    assert metrics["geneval-shapes/tuned/probe/novel_binding"] == 1.0
    report = {
        "base": "base",
        "tuned": "tuned",
        "benchmarks": {"geneval-shapes": out},
        "paired": {"geneval-shapes": paired},
    }
    lines = benchmark_table(EvalReport.from_dict(json.loads(json.dumps(report)))).splitlines()
    assert lines[2:8] == [
        "| model | colors | overall | probe: novel_binding |",
        "|---|---|---|---|",
        "| base | 0.000 [0.00, 0.00] | 0.000 [0.00, 0.00] | 0.000 [0.00, 0.00] |",
        "| tuned | 0.500 [0.00, 1.00] | 0.500 [0.00, 1.00] | 1.000 [1.00, 1.00] |",
        "| tuned - base (paired) | +0.500 [+0.00, +1.00] | +0.500 [+0.00, +1.00] | +1.000 [+1.00, +1.00] |",
        "",
    ]
    assert lines[8:11] == [
        "- n (prompts/images): colors 2/4, probe novel_binding 1/2",
        "- tuned - base, paired on the same prompts and seeds: +0.500 [+0.000, +1.000] "
        "(95% CI, 4 image pairs on 2 prompts, prompts resampled within tasks)",
        "- probe novel_binding (not in overall): +1.000 [+1.000, +1.000] (95% CI, 2 image pairs on 1 prompt)",
    ]
    (tmp_path / "evaluate.json").write_text(json.dumps(report))
    assert main(["table", "--metrics", str(tmp_path / "evaluate.json")]) == 0
    assert capsys.readouterr().out.rstrip("\n").splitlines() == lines  # `synrank table` prints the same


def test_the_result_line_puts_base_tuned_and_the_paired_difference_in_one_line() -> None:
    from models.benchmark_table import result_line

    acc = lambda a, lo, hi: {"overall": {"accuracy": a, "ci95": [lo, hi]}}  # noqa: E731
    report = {
        "base": "b",
        "tuned": "t",
        "benchmarks": {"geneval": {"b": acc(0.25, 0.2, 0.3), "t": acc(0.5, 0.4, 0.6)}},
        "paired": {"geneval": {"delta": 0.25, "ci95": [0.125, 0.375]}},
    }
    assert (
        result_line(EvalReport.from_dict(report))
        == "geneval: base 0.250 [0.20, 0.30], tuned 0.500 [0.40, 0.60], tuned - base +0.250 [+0.12, +0.38]"
    )
    assert result_line(EvalReport()) == ""
