"""Percentile-bootstrap confidence intervals, shared by every benchmark and win-rate."""

from __future__ import annotations

import numpy as np

N_BOOTSTRAP = 1000


def bootstrap_means(values: np.ndarray, rng: np.random.Generator, n_boot: int = N_BOOTSTRAP) -> np.ndarray:
    """n_boot means of resamples (with replacement) of values."""
    values = np.asarray(values, dtype=np.float64)
    return values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(samples, [tail, 100 - tail])
    return float(lo), float(hi)


def mean_ci(values: np.ndarray, seed: int = 0, n_boot: int = N_BOOTSTRAP) -> tuple[float, float]:
    """95% CI of the mean of values; NaNs when there are none."""
    if len(values) == 0:
        return float("nan"), float("nan")
    return percentile_ci(bootstrap_means(values, np.random.default_rng(seed), n_boot))


def stratified_means(groups: dict[str, np.ndarray], seed: int = 0, n_boot: int = N_BOOTSTRAP) -> tuple[dict, dict]:
    """Per group: mean, 95% CI (resampled within the group), n; overall: the mean of the group means
    (so large groups do not dominate, as GenEval averages its tasks) with its CI. The seeded draws
    follow the groups' order, so the same order gives the same intervals."""
    rng = np.random.default_rng(seed)
    per, boots = {}, []
    for name, values in groups.items():
        values = np.asarray(values, dtype=np.float64)
        boots.append(bootstrap_means(values, rng, n_boot))
        per[name] = {"mean": float(values.mean()), "ci95": list(percentile_ci(boots[-1])), "n": len(values)}
    overall = {"mean": float(np.mean([g["mean"] for g in per.values()])),
               "ci95": list(percentile_ci(np.mean(boots, axis=0))), "n": sum(g["n"] for g in per.values())}
    return per, overall


def paired_task_delta(tasks: np.ndarray, diffs: np.ndarray, seed: int = 0, n_boot: int = N_BOOTSTRAP) -> dict:
    """Mean over tasks of the mean per-image difference (tuned - base, the same prompt and seed), with
    a 95% CI from resampling the image pairs within each task. Pairing removes the prompt-to-prompt
    spread that both models share, so it resolves differences that two separate CIs cannot."""
    tasks, diffs = np.asarray(tasks), np.asarray(diffs, dtype=np.float64)
    if len(diffs) == 0:
        raise ValueError("no image pairs to compare")
    _, overall = stratified_means({t: diffs[tasks == t] for t in sorted(set(tasks.tolist()))}, seed, n_boot)
    return {"delta": overall["mean"], "ci95": overall["ci95"], "n_pairs": overall["n"]}


def _strata_mean(values: np.ndarray, groups: list[np.ndarray]) -> float:
    return float(np.mean([values[g].mean() for g in groups]))


def _strata_groups(strata: np.ndarray) -> list[np.ndarray]:
    strata = np.asarray(strata)
    return [np.flatnonzero(strata == s) for s in sorted(set(strata.tolist()))]


def mean_of_strata(values: np.ndarray, strata: np.ndarray) -> float:
    """The mean over strata of each stratum's mean (GenEval's overall: every task weighs the same)."""
    return _strata_mean(np.asarray(values, dtype=np.float64), _strata_groups(strata))


def seeds_and_units_bootstrap(arms: list[np.ndarray], signs: list[float], strata: np.ndarray, null: float = 0.0,
                              seed: int = 0, n_boot: int = N_BOOTSTRAP) -> dict:
    """A study's estimate with both sources of noise: sum over arms of sign * overall, where an arm is a
    (training seeds, units) matrix of per-unit values (an image's pass/fail, a prompt's win-rate) on the
    same units in the same order, and overall is the mean over strata of the stratum's mean over units of
    the mean over seeds. Each replicate resamples every arm's seeds (with replacement, independently:
    the arms were trained apart) and one resample of the units within each stratum, shared by all arms
    (they were judged on the same prompts and noise, which is what makes a difference paired).
    With one arm and sign 1 it is that arm's mean; with (a, b) and (1, -1) the paired difference a - b.
    p: the two-sided bootstrap p-value of the estimate against `null` (twice the smaller tail beyond it,
    so its resolution is 2 / n_boot)."""
    strata = np.asarray(strata)
    arms = [np.atleast_2d(np.asarray(a, dtype=np.float64)) for a in arms]
    if any(a.shape[1] != len(strata) for a in arms):
        raise ValueError(f"every arm needs one value per unit ({len(strata)}); got {[a.shape for a in arms]}")
    groups = _strata_groups(strata)

    def overall(arm_means: list[np.ndarray], units: list[np.ndarray]) -> float:
        return sum(sign * _strata_mean(m, units) for sign, m in zip(signs, arm_means))

    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    for b in range(n_boot):
        units = [g[rng.integers(0, len(g), len(g))] for g in groups]
        boots[b] = overall([a[rng.integers(0, len(a), len(a))].mean(axis=0) for a in arms], units)
    p = min(1.0, 2 * min(float((boots <= null).mean()), float((boots >= null).mean())))
    return {"mean": float(overall([a.mean(axis=0) for a in arms], groups)), "ci95": list(percentile_ci(boots)),
            "p": p, "n_units": int(len(strata)), "n_seeds": [int(len(a)) for a in arms]}
