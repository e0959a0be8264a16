"""GenEval-shapes scoring: per-task accuracy, overall = mean of the six task accuracies (GenEval's
overall score), with seeded bootstrap 95% confidence intervals that resample prompts within each task.

Results whose tag is not one of the six tasks (the novel-binding probe, `specs.PROBE_TASK`) are probes:
reported apart under "probes" and never part of the overall score or of the headline paired difference.
Another benchmark passes its own `tasks` (T2I-CompBench: its categories, graded scores in [0, 1] instead
of pass/fail; the statistics are the same means)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from models.stats import N_BOOTSTRAP, paired_task_delta, stratified_means

from .specs import TASKS


def _as_accuracy(group: dict) -> dict:
    return {"accuracy": group["mean"], "ci95": group["ci95"], "n": group["n"], "n_prompts": group["n_units"]}


def _as_delta(group: dict) -> dict:
    return {"delta": group["delta"], "ci95": group["ci95"], "n_pairs": group["n_pairs"], "n_prompts": group["n_units"]}


def _grouped(results: Iterable[tuple[str, bool | float]], prompts: Sequence[str] | None) -> tuple[dict, dict | None]:
    """(tag -> values (pass = 1.0, or a graded score), tag -> prompt ids or None); prompts parallel to results."""
    results = list(results)
    if prompts is not None and len(prompts) != len(results):
        raise ValueError(f"prompts need one id per result ({len(results)}); got {len(prompts)}")
    by_tag: dict[str, list[float]] = {}
    ids: dict[str, list[str]] = {}
    for i, (tag, value) in enumerate(results):
        by_tag.setdefault(tag, []).append(float(value))
        if prompts is not None:
            ids.setdefault(tag, []).append(prompts[i])
    return by_tag, (ids if prompts is not None else None)


def split_tags(tags: Iterable[str], tasks: Sequence[str] = TASKS) -> tuple[list[str], list[str]]:
    """(the `tasks` among tags, in their order (GenEval's six by default); any other tag, sorted: the probes)."""
    found = set(tags)
    return [t for t in tasks if t in found], sorted(found - set(tasks))


def geneval_accuracy(
    results: Iterable[tuple[str, bool]],
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
    prompts: Sequence[str] | None = None,
    tasks: Sequence[str] = TASKS,
) -> dict:
    """results: (task tag, passed) pairs, e.g. from verify(); prompts: the prompt id of each result (a
    prompt's images are not independent, so the CIs resample whole prompts within each task); without
    prompts every result counts as its own prompt. The point estimates do not depend on prompts.

    Returns {"overall": {"accuracy", "ci95", "n", "n_prompts"}, "tasks": {tag: the same},
    "probes": {tag: the same}}; n counts images. Overall is the mean over the six tasks present (tasks
    without results are left out); probes (any other tag) never enter it. With only probe results the
    overall accuracy and CI are NaN and its n 0. ValueError when there are no results."""
    by_tag, ids = _grouped(results, prompts)
    if not by_tag:
        raise ValueError("no results to score")
    tasks, probes = split_tags(by_tag, tasks)
    out: dict = {"tasks": {}, "probes": {}}
    for key, tags in (("tasks", tasks), ("probes", probes)):
        if tags:
            per, overall = stratified_means(
                {t: by_tag[t] for t in tags}, seed, n_boot, None if ids is None else {t: ids[t] for t in tags}
            )
            out[key] = {t: _as_accuracy(g) for t, g in per.items()}
            if key == "tasks":
                out["overall"] = _as_accuracy(overall)
    out.setdefault("overall", {"accuracy": float("nan"), "ci95": [float("nan")] * 2, "n": 0, "n_prompts": 0})
    return {"overall": out["overall"], "tasks": out["tasks"], "probes": out["probes"]}


def paired_score(
    tags: Sequence[str],
    diffs: Sequence[float],
    prompts: Sequence[str] | None = None,
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
    tasks: Sequence[str] = TASKS,
) -> dict:
    """The paired tuned-minus-base difference: tags, diffs (tuned - base pass, -1/0/1, on the same prompt
    and seed) and prompts, one per image pair. The headline is the mean over the six tasks of the mean
    difference, its 95% CI resampling whole prompts within each task (models.stats.paired_task_delta);
    each probe tag gets its own, reported apart.

    Returns {"delta", "ci95", "n_pairs", "n_prompts", "tasks": {tag: the same keys}, "probes": {tag: the
    same keys}}; with no task pairs the headline is NaN with n_pairs 0. ValueError without pairs."""
    tags, diffs = np.asarray(tags), np.asarray(diffs, dtype=np.float64)
    if len(diffs) == 0:
        raise ValueError("no image pairs to compare")
    ids = None if prompts is None else np.asarray(prompts)
    tasks, probes = split_tags(tags.tolist(), tasks)

    def delta(mask: np.ndarray) -> dict:
        d = paired_task_delta(tags[mask], diffs[mask], seed, n_boot, None if ids is None else ids[mask])
        return {**_as_delta(d), "tasks": {t: _as_delta(g) for t, g in d["tasks"].items()}}

    head = (
        delta(np.isin(tags, tasks))
        if tasks
        else {"delta": float("nan"), "ci95": [float("nan")] * 2, "n_pairs": 0, "n_prompts": 0, "tasks": {}}
    )
    head["tasks"] = {t: head["tasks"][t] for t in tasks}  # GenEval's order
    head["probes"] = {p: {k: v for k, v in delta(tags == p).items() if k != "tasks"} for p in probes}
    return head


def format_table(scores: dict) -> str:
    """A plain-text table of a score() result: the tasks, the overall score, then any probe."""
    rows = list(scores["tasks"].items()) + [("overall", scores["overall"])]
    rows += [(f"{tag} (probe)", s) for tag, s in scores.get("probes", {}).items()]
    w = max(14, *(len(tag) + 1 for tag, _ in rows))
    lines = [f"{'task':<{w}}{'acc':>7}  {'95% CI':<15}{'n':>6}"]
    for tag, s in rows:
        lo, hi = s["ci95"]
        lines.append(f"{tag:<{w}}{s['accuracy']:>7.3f}  [{lo:.3f}, {hi:.3f}]{s['n']:>6}")
    return "\n".join(lines)
