"""The shapes world: specs, renderer, exact verifier and benchmark scoring."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from models.shapes import (
    RESERVED,
    TASKS,
    detect,
    geneval_accuracy,
    make_specs,
    render,
    render_wrong,
    verify,
    verify_report,
)
from models.shapes.geometry import relation_holds
from models.shapes.specs import (
    COLORS,
    RELATIONS,
    SHAPES,
    heldout_prompts,
    heldout_specs,
    make_spec,
    probe_specs,
    sample_spec,
    spec_combos,
)
from synrank.config import ROOT
from synrank.eval_report import EvalReport

GENEVAL = ROOT.parent / "shared" / "benchmarks" / "geneval" / "evaluation_metadata.jsonl"


def _specs_per_task(n: int, seed: int, split: str = "eval") -> list[dict]:
    rng = np.random.default_rng(seed)
    return [sample_spec(tag, rng, split) for tag in TASKS for _ in range(n)]  # type: ignore[arg-type]


def _key_shapes(spec: dict) -> tuple:
    return (
        tuple(spec),
        tuple(tuple(it) for it in spec["include"]),
        tuple(tuple(it) for it in spec.get("exclude", [])),
    )


# --- verifier exactness ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("size", [32, 64])
def test_verifier_exact_on_clean_renders(size: int) -> None:
    rng = np.random.default_rng(100 + size)
    hits: dict[str, list[bool]] = {}
    for spec in _specs_per_task(100, seed=size):
        hits.setdefault(spec["tag"], []).append(verify(render(spec, size, rng), spec))
    acc = {tag: float(np.mean(v)) for tag, v in hits.items()}
    assert set(acc) == set(TASKS)
    assert all(a >= 0.99 for a in acc.values()), acc


def test_verifier_exact_on_every_shape_and_color() -> None:
    rng = np.random.default_rng(21)
    for shape in SHAPES:
        for color in COLORS:
            spec = make_spec("colors", [{"class": shape, "count": 1, "color": color}])
            for _ in range(3):
                img = render(spec, 32, rng, avoid_reserved=False)
                assert [(d.cls, d.color) for d in detect(img)] == [(shape, color)], (shape, color)
                assert verify(img, spec)


def test_detect_reports_every_object() -> None:
    rng = np.random.default_rng(3)
    spec = {
        "tag": "counting",
        "include": [{"class": "star", "count": 3}],
        "exclude": [{"class": "star", "count": 4}],
        "prompt": "a photo of three stars",
    }
    dets = detect(render(spec, 32, rng))
    assert [d.cls for d in dets] == ["star"] * 3
    assert all(0 < d.cx < 32 and 0 < d.cy < 32 and d.area > 10 for d in dets)


def test_blank_image_has_no_detections() -> None:
    img = np.full((32, 32, 3), 60, np.uint8)
    assert detect(img) == []
    spec = make_specs(1, 0)[0]
    assert not verify(img, spec)


# --- hard negatives ----------------------------------------------------------------------------

KIND_TASKS = {
    "count": TASKS,
    "color": ("colors", "color_attr"),
    "relation": ("position",),
    "shape": TASKS,
}
KIND_REASONS = {
    "count": {"count", "exclude"},
    "color": {"color"},
    "relation": {"position"},
    "shape": {"count", "exclude"},
}


@pytest.mark.parametrize("kind", list(KIND_TASKS))
def test_wrong_renders_fail_on_the_right_property(kind: str) -> None:
    rng = np.random.default_rng(7)
    for tag in KIND_TASKS[kind]:
        for _ in range(12):
            spec = sample_spec(tag, rng, "train")
            img, wrong = render_wrong(spec, kind, 32, rng, avoid_reserved=False)
            assert wrong != spec and wrong["tag"] == spec["tag"]
            assert verify(img, wrong), (kind, wrong, verify_report(img, wrong))
            report = verify_report(img, spec)
            assert not report["ok"], (kind, spec, wrong)
            reasons = {f["reason"] for f in report["failures"]}
            assert reasons <= KIND_REASONS[kind], (kind, spec, wrong, report["failures"])
            if kind == "shape":  # the replaced class is missing and the new one is there
                changed = [
                    k for k, (a, b) in enumerate(zip(spec["include"], wrong["include"])) if a["class"] != b["class"]
                ]
                assert len(changed) == 1
                assert any(f.get("item") == changed[0] and f["found_class"] == 0 for f in report["failures"])
            if kind == "count":
                assert sum(it["count"] for it in wrong["include"]) - sum(it["count"] for it in spec["include"]) in (
                    -1,
                    1,
                )


def test_wrong_kind_requires_the_property() -> None:
    rng = np.random.default_rng(0)
    spec = sample_spec("single_object", rng)
    with pytest.raises(ValueError):
        render_wrong(spec, "color", 32, rng)
    with pytest.raises(ValueError):
        render_wrong(spec, "relation", 32, rng)
    with pytest.raises(ValueError):
        render_wrong(spec, "texture", 32, rng)


# --- prompt-level holdout ----------------------------------------------------------------------


def test_grammar_has_hundreds_of_prompts_and_a_prompt_level_holdout() -> None:
    from models.shapes.dataset import split_specs

    train, evals, probe = (split_specs(s) for s in ("train", "eval", "probe"))
    assert len(train) >= 1500 and len(evals) >= 300
    per_task = Counter(s["tag"] for s in evals)
    assert set(per_task) == set(TASKS) and all(n >= 40 for t, n in per_task.items() if t != "single_object")
    assert per_task["single_object"] == len(SHAPES)  # its prompt space is the shape list, shared with train
    assert len({s["prompt"] for s in evals}) == len(evals) and len({s["prompt"] for s in train}) == len(train)
    shared = {s["prompt"] for s in evals} & {s["prompt"] for s in train}
    assert shared == {s["prompt"] for s in evals if s["tag"] == "single_object"}
    assert not {s["prompt"] for s in probe} & ({s["prompt"] for s in train} | {s["prompt"] for s in evals})


@pytest.mark.slow
def test_zoo_captions_never_hold_an_eval_prompt_and_see_every_eval_pairing() -> None:
    from models.shapes_zoo.data import build_pool

    pool = build_pool(3000, 11, ("count", "color", "relation", "shape"))
    captions = set(pool.captions) | {c for caps in pool.neg_captions for c in caps if c}
    assert not captions & heldout_prompts()
    assert not captions & {s["prompt"] for s in probe_specs()}
    # Every color-shape pairing the benchmark's prompts use is drawn in training; reserved ones never.
    seen = {pair for spec in pool.specs for pair in spec_combos(spec)}
    used = {pair for specs in heldout_specs().values() for spec in specs for pair in spec_combos(spec)}
    assert used <= seen and not seen & RESERVED and not used & RESERVED
    assert {it["class"] for spec in pool.specs for it in spec["include"]} == set(SHAPES)
    assert {c for c, _ in seen} == set(COLORS)
    assert {it["position"][0] for spec in pool.specs for it in spec["include"] if "position" in it} == set(RELATIONS)


def test_reserved_pairings_are_the_probe_and_never_drawn_in_training() -> None:
    assert len(RESERVED) == 5 and len({s for _, s in RESERVED}) == 5 and len({c for c, _ in RESERVED}) == 5
    probe = probe_specs()
    assert all(s["tag"] == "novel_binding" and set(spec_combos(s)) & RESERVED for s in probe)
    rng = np.random.default_rng(5)
    train = make_specs(600, seed=1, split="train")
    for spec in train[:120]:  # uncolored objects never get a reserved color either
        assert not {(d.color, d.cls) for d in detect(render(spec, 32, rng))} & RESERVED
    for kind in ("color", "shape"):
        for spec in [s for s in train if s["tag"] == "color_attr"][:20]:
            _, wrong = render_wrong(spec, kind, 32, rng)
            assert not set(spec_combos(wrong)) & RESERVED and wrong["prompt"] not in heldout_prompts()


# --- schema and grammar ------------------------------------------------------------------------


def test_specs_follow_genevals_schema() -> None:
    specs = make_specs(600, seed=2, split="train") + make_specs(600, seed=2, split="eval")
    counts = Counter(s["tag"] for s in specs)
    assert set(counts) == set(TASKS) and max(counts.values()) - min(counts.values()) <= 2
    for s in specs:
        assert list(s) in (["tag", "include", "prompt"], ["tag", "include", "exclude", "prompt"])
        for it in s["include"]:
            assert set(it) in ({"class", "count"}, {"class", "count", "color"}, {"class", "count", "position"})
            assert it["class"] in SHAPES and 1 <= it["count"] <= 4
        if s["tag"] == "counting":
            (inc,), (exc,) = s["include"], s["exclude"]
            assert 2 <= inc["count"] <= 4 and exc == {"class": inc["class"], "count": inc["count"] + 1}
            inc.pop("color", None)  # counting with a color is the grammar's own growth; the rest is GenEval's
        if s["tag"] == "position":
            assert s["include"][1]["position"][1] == 0 and s["include"][0]["class"] != s["include"][1]["class"]
        json.dumps(s)
    if GENEVAL.exists():  # every key layout we produce occurs in GenEval itself
        real = {(r["tag"], _key_shapes(r)) for r in map(json.loads, GENEVAL.read_text().splitlines())}
        assert {(s["tag"], _key_shapes(s)) for s in specs} <= real


def test_prompts_are_phrased_like_geneval() -> None:
    prompts = {s["prompt"] for s in make_specs(3000, seed=3, split="eval")}
    for p in ("a photo of a circle",):
        assert p in prompts, p
    assert any(p.startswith("a photo of an ") for p in prompts) and any(" left of " in p for p in prompts)
    assert any(" and a " in p for p in prompts) and any(p.startswith("a photo of four ") for p in prompts)
    assert all(p.startswith("a photo of ") for p in prompts)


# --- scoring -----------------------------------------------------------------------------------


def _results(n: int, rate: float, seed: int) -> list[tuple[str, bool]]:
    rng = np.random.default_rng(seed)
    return [(tag, bool(rng.random() < rate)) for tag in TASKS for _ in range(n)]


def test_score_is_the_mean_of_task_accuracies_with_bootstrap_cis() -> None:
    res = [("colors", True)] * 3 + [("colors", False)] + [("position", True)] * 10
    s = geneval_accuracy(res)
    assert s["tasks"]["colors"]["accuracy"] == 0.75 and s["tasks"]["position"]["accuracy"] == 1.0
    assert s["overall"]["accuracy"] == pytest.approx(0.875) and s["overall"]["n"] == 14
    for part in [s["overall"], *s["tasks"].values()]:
        lo, hi = part["ci95"]
        assert lo <= part["accuracy"] <= hi
    assert geneval_accuracy(res) == s  # seeded


def test_bootstrap_ci_narrows_with_more_samples() -> None:
    small, large = geneval_accuracy(_results(30, 0.7, 0)), geneval_accuracy(_results(600, 0.7, 0))
    width = lambda s: s["ci95"][1] - s["ci95"][0]  # noqa: E731
    assert width(large["overall"]) < width(small["overall"])
    assert all(width(large["tasks"][t]) < width(small["tasks"][t]) for t in TASKS)
    assert large["overall"]["ci95"][0] < 0.7 < large["overall"]["ci95"][1]


# --- determinism and geometry ------------------------------------------------------------------


def test_determinism() -> None:
    assert make_specs(50, seed=9, split="eval") == make_specs(50, seed=9, split="eval")
    assert make_specs(50, seed=9) != make_specs(50, seed=10)
    assert make_specs(50, seed=9, split="train") != make_specs(50, seed=9, split="eval")
    spec = make_specs(1, seed=4)[0]
    a = render(spec, 32, np.random.default_rng(1))
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, render(spec, 32, np.random.default_rng(1)))
    assert not np.array_equal(a, render(spec, 32, np.random.default_rng(2)))
    w1 = render_wrong(spec, "shape", 64, np.random.default_rng(1))
    w2 = render_wrong(spec, "shape", 64, np.random.default_rng(1))
    assert np.array_equal(w1[0], w2[0]) and w1[1] == w2[1]


def test_relations_use_image_coordinates_and_a_margin() -> None:
    assert relation_holds((5, 16), (25, 16), "left of", 32)
    assert relation_holds((16, 5), (16, 25), "above", 32)  # y grows downwards
    assert not relation_holds((16, 5), (16, 25), "below", 32)
    assert not relation_holds((14, 16), (16, 16), "left of", 32)  # within the 0.1 x size margin
    assert not relation_holds((10, 2), (16, 30), "left of", 32)  # mostly above, not left


def test_paired_delta_is_the_mean_of_task_differences() -> None:
    from models.stats import paired_task_delta

    # task a: one of two pairs gained (+0.5), task b: no change; the tasks weigh equally.
    d = paired_task_delta(np.array(["a", "a", "b", "b", "b"]), np.array([1.0, 0.0, 0.0, 0.0, 0.0]))
    assert d["delta"] == 0.25 and d["n_pairs"] == 5
    assert d["ci95"][0] <= 0.25 <= d["ci95"][1] and d["ci95"][0] >= 0.0
    same = paired_task_delta(np.array(["a", "b"]), np.array([1.0, -1.0]))
    assert same["delta"] == 0.0 and same["ci95"] == [0.0, 0.0]  # constant within each task


def test_benchmark_table_shows_the_paired_difference() -> None:
    from models.benchmark_table import benchmark_table

    cell = {"accuracy": 0.5, "ci95": [0.4, 0.6], "n": 8}
    report = {
        "benchmarks": {
            "geneval-shapes": {
                "b": {"tasks": {"colors": cell}, "overall": cell},
                "t": {"tasks": {"colors": cell}, "overall": cell},
            }
        },
        "paired": {"geneval-shapes": {"base": "b", "tuned": "t", "delta": 0.031, "ci95": [0.012, 0.05], "n_pairs": 8}},
    }
    table = benchmark_table(EvalReport.from_dict(report))
    assert "| t | 0.500 [0.40, 0.60] | 0.500 [0.40, 0.60] |" in table
    assert "t - b, paired on the same prompts and seeds: +0.031 [+0.012, +0.050] (95% CI, 8 image pairs)" in table
