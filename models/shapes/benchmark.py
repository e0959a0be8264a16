"""GenEval-shapes scoring: per-task accuracy, overall = mean of the task accuracies (GenEval's
overall score), with seeded bootstrap 95% confidence intervals resampled within each task."""

from __future__ import annotations

from collections.abc import Iterable

from models.stats import N_BOOTSTRAP, stratified_means

from .specs import TASKS


def _as_accuracy(group: dict) -> dict:
    return {"accuracy": group["mean"], "ci95": group["ci95"], "n": group["n"]}


def score(results: Iterable[tuple[str, bool]], n_boot: int = N_BOOTSTRAP, seed: int = 0) -> dict:
    """results: (task tag, passed) pairs, e.g. from verify().

    Returns {"overall": {"accuracy", "ci95", "n"}, "tasks": {tag: {"accuracy", "ci95", "n"}}}.
    Tasks without results are left out and the overall mean is over the tasks present."""
    by_task: dict[str, list[bool]] = {}
    for tag, ok in results:
        by_task.setdefault(tag, []).append(bool(ok))
    if not by_task:
        raise ValueError("no results to score")
    # Known tasks first in their canonical order, any others after.
    tags = [t for t in TASKS if t in by_task] + sorted(t for t in by_task if t not in TASKS)
    per, overall = stratified_means({t: by_task[t] for t in tags}, seed, n_boot)
    return {"overall": _as_accuracy(overall), "tasks": {t: _as_accuracy(g) for t, g in per.items()}}


def format_table(scores: dict) -> str:
    """A plain-text table of a score() result."""
    lines = [f"{'task':<14}{'acc':>7}  {'95% CI':<15}{'n':>6}"]
    rows = list(scores["tasks"].items()) + [("overall", scores["overall"])]
    for tag, s in rows:
        lo, hi = s["ci95"]
        lines.append(f"{tag:<14}{s['accuracy']:>7.3f}  [{lo:.3f}, {hi:.3f}]{s['n']:>6}")
    return "\n".join(lines)
