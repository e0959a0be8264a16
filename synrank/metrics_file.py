"""The evaluate stage's files for DVC: `metrics/headline.json`, the metrics DVC compares, and
`metrics/evaluate.json`, the full report beside it.

headline.json is small and flat enough for `dvc exp show` and `dvc metrics diff` to put two runs side by
side: keyed by role (`base`, `tuned`, `tuned_minus_base`) and task, never by model name (a run with another
base has the same columns), each 95% CI as two numbers (`ci_lo`, `ci_hi`):

    {"geneval-shapes": {"base": {"overall": 0.221, "overall_ci_lo": 0.183, "overall_ci_hi": 0.259,
                                 "colors": 0.544, ...},
                        "tuned": {...},
                        "tuned_minus_base": {"overall": 0.007, "overall_ci_lo": -0.005, "overall_ci_hi": 0.019,
                                             "colors": -0.038, "colors_ci_lo": -0.067, "colors_ci_hi": -0.010, ...}},
     "winrate": {"clip-p4": {"tuned_vs_base": 0.535, "ci_lo": 0.505, "ci_hi": 0.563}, ...}}

git tracks it (dvc.yaml: `cache: false`), so every commit and every DVC experiment carries its numbers.
"""

from __future__ import annotations

from typing import Any

from synrank.atomic import write_json
from synrank.config import Paths
from synrank.eval_report import EvalReport

ROLES = ("base", "tuned")


def _accuracies(scores: dict[str, Any]) -> dict[str, float]:
    """One model's benchmark result: overall accuracy with its CI, then each task's accuracy."""
    lo, hi = scores["overall"]["ci95"]
    out = {"overall": scores["overall"]["accuracy"], "overall_ci_lo": lo, "overall_ci_hi": hi}
    out.update({task: t["accuracy"] for task, t in sorted(scores.get("tasks", {}).items())})
    return out


def _differences(paired: dict[str, Any]) -> dict[str, float]:
    """The paired tuned - base difference, overall and per task, each with its CI."""
    out: dict[str, float] = {}
    for name, d in [("overall", paired), *sorted(paired.get("tasks", {}).items())]:
        out.update({name: d["delta"], f"{name}_ci_lo": d["ci95"][0], f"{name}_ci_hi": d["ci95"][1]})
    return out


def headline(report: EvalReport) -> dict[str, Any]:
    """The headline metrics (module docstring) of an evaluate report."""
    names = {report.base: "base", report.tuned: "tuned"}
    out: dict[str, Any] = {}
    for bench, by_model in sorted(report.benchmarks.items()):
        roles = {names[m]: _accuracies(s) for m, s in by_model.items() if m in names}
        if paired := report.paired.get(bench):
            roles["tuned_minus_base"] = _differences(paired)
        out[bench] = {r: roles[r] for r in (*ROLES, "tuned_minus_base") if r in roles}
    rates = report.winrate
    if rates:
        out["winrate"] = {
            reward: {"tuned_vs_base": w["winrate"], "ci_lo": w["ci_low"], "ci_hi": w["ci_high"]}
            for reward, w in sorted(rates.items())
        }
    return out


def write_evaluate_metrics(paths: Paths, report: EvalReport) -> None:
    """`paths.metrics`/headline.json (headline) and evaluate.json (the whole report), written whenever the
    evaluate stage runs or is found current (by its flow or by `synrank pipeline` before Prefect starts)."""
    folder = paths.resolve("metrics")
    write_json(folder / "evaluate.json", report.to_dict())
    write_json(folder / "headline.json", headline(report))
