"""Percentile-bootstrap confidence intervals, shared by every benchmark and win-rate."""

from __future__ import annotations

import numpy as np

N_BOOTSTRAP = 1000


def cluster_codes(clusters: np.ndarray) -> tuple[np.ndarray, int]:
    """(code per value, number of clusters): clusters numbered 0..k-1 in order of first appearance, so that
    values that are each their own cluster keep their order (and their bootstrap draws)."""
    _, first, inverse = np.unique(np.asarray(clusters), return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.reshape(-1)], len(first)


def bootstrap_means(
    values: np.ndarray, rng: np.random.Generator, n_boot: int = N_BOOTSTRAP, clusters: np.ndarray | None = None
) -> np.ndarray:
    """(n_boot,) means of resamples (with replacement) of values.

    clusters: one id per value (e.g. the prompt of each image); a resample then draws whole clusters, as
    many as there are, and its mean is the mean of all the drawn clusters' values. With equal cluster
    sizes that is the mean of the cluster means, and the full sample's mean is unchanged; only the spread
    grows when values within a cluster are correlated. None: every value is its own cluster (the same
    draws and means as clusters = range(len(values)))."""
    values = np.asarray(values, dtype=np.float64)
    if clusters is None:
        return values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)
    if len(clusters) != len(values):
        raise ValueError(f"clusters need one id per value ({len(values)}); got {len(clusters)}")
    codes, k = cluster_codes(clusters)
    sums, counts = np.bincount(codes, weights=values, minlength=k), np.bincount(codes, minlength=k)
    draws = rng.integers(0, k, size=(n_boot, k))
    return sums[draws].sum(axis=1) / counts[draws].sum(axis=1)


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The bootstrap percentile interval (Efron & Tibshirani 1993, ch. 13) of `level` coverage: the (1 - level)/2
    and (1 + level)/2 quantiles of the (n_boot,) resampled statistics, in their units."""
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(samples, [tail, 100 - tail])
    return float(lo), float(hi)


def mean_ci(values: np.ndarray, seed: int = 0, n_boot: int = N_BOOTSTRAP) -> tuple[float, float]:
    """95% CI of the mean of values; NaNs when there are none."""
    if len(values) == 0:
        return float("nan"), float("nan")
    return percentile_ci(bootstrap_means(values, np.random.default_rng(seed), n_boot))


def stratified_means(
    groups: dict[str, np.ndarray],
    seed: int = 0,
    n_boot: int = N_BOOTSTRAP,
    clusters: dict[str, np.ndarray] | None = None,
) -> tuple[dict, dict]:
    """Per group: mean, 95% CI (resampled within the group), n (values), n_units (distinct clusters, or
    values without clusters); overall: the mean of the group means (so large groups do not dominate, as
    GenEval averages its tasks) with its CI, n and n_units summed over the groups.

    clusters: per group, one cluster id per value (the prompt of each image): the bootstrap resamples
    whole clusters within each group (bootstrap_means). Point estimates do not depend on it. The seeded
    draws follow the groups' order, so the same order gives the same intervals."""
    rng = np.random.default_rng(seed)
    per, boots = {}, []
    for name, values in groups.items():
        values = np.asarray(values, dtype=np.float64)
        ids = None if clusters is None else np.asarray(clusters[name])
        boots.append(bootstrap_means(values, rng, n_boot, ids))
        per[name] = {
            "mean": float(values.mean()),
            "ci95": list(percentile_ci(boots[-1])),
            "n": len(values),
            "n_units": len(values) if ids is None else cluster_codes(ids)[1],
        }
    overall = {
        "mean": float(np.mean([g["mean"] for g in per.values()])),
        "ci95": list(percentile_ci(np.mean(boots, axis=0))),
        "n": sum(g["n"] for g in per.values()),
        "n_units": sum(g["n_units"] for g in per.values()),
    }
    return per, overall


def paired_task_delta(
    tasks: np.ndarray, diffs: np.ndarray, seed: int = 0, n_boot: int = N_BOOTSTRAP, clusters: np.ndarray | None = None
) -> dict:
    """Mean over tasks of the mean per-image difference (tuned - base, the same prompt and seed), with a
    95% CI from resampling within each task: whole clusters (one id per pair, e.g. its prompt: a prompt's
    images are not independent) or, without clusters, the image pairs. Pairing removes the
    prompt-to-prompt spread that both models share, so it resolves differences that two separate CIs
    cannot. tasks, diffs (and clusters): (n_pairs,). Returns {"delta", "ci95", "n_pairs", "n_units",
    "tasks": {task: the same keys}}, tasks sorted. ValueError without pairs."""
    tasks, diffs = np.asarray(tasks), np.asarray(diffs, dtype=np.float64)
    if len(diffs) == 0:
        raise ValueError("no image pairs to compare")
    if clusters is not None and len(clusters) != len(diffs):
        raise ValueError(f"clusters need one id per pair ({len(diffs)}); got {len(clusters)}")
    names = sorted(set(tasks.tolist()))
    ids = None if clusters is None else {t: np.asarray(clusters)[tasks == t] for t in names}
    per, overall = stratified_means({t: diffs[tasks == t] for t in names}, seed, n_boot, ids)

    def shaped(g: dict) -> dict:
        return {"delta": g["mean"], "ci95": g["ci95"], "n_pairs": g["n"], "n_units": g["n_units"]}

    return {**shaped(overall), "tasks": {t: shaped(g) for t, g in per.items()}}


def _strata_mean(values: np.ndarray, groups: list[np.ndarray]) -> float:
    return float(np.mean([values[g].mean() for g in groups]))


def _strata_groups(strata: np.ndarray) -> list[np.ndarray]:
    strata = np.asarray(strata)
    return [np.flatnonzero(strata == s) for s in sorted(set(strata.tolist()))]


def mean_of_strata(values: np.ndarray, strata: np.ndarray) -> float:
    """The mean over strata of each stratum's mean (GenEval's overall: every task weighs the same)."""
    return _strata_mean(np.asarray(values, dtype=np.float64), _strata_groups(strata))


def _strata_clusters(strata: np.ndarray, clusters: np.ndarray | None) -> list[tuple[np.ndarray, ...]]:
    """Per stratum (sorted): its unit positions, each unit's cluster code (order of first appearance)
    and the clusters' sizes; without clusters every unit is its own cluster."""
    out = []
    for g in _strata_groups(strata):
        codes, k = (np.arange(len(g)), len(g)) if clusters is None else cluster_codes(np.asarray(clusters)[g])
        out.append((g, codes, np.bincount(codes, minlength=k)))
    return out


def _resampled_mean(values: np.ndarray, strata: list, draws: list[np.ndarray]) -> float:
    """The mean over strata of the mean over units of the drawn clusters (with repeats)."""
    means = [
        np.bincount(codes, weights=values[g], minlength=len(sizes))[d].sum() / sizes[d].sum()
        for (g, codes, sizes), d in zip(strata, draws)
    ]
    return float(np.mean(means))


def _check_clusters(strata: np.ndarray, clusters: np.ndarray) -> None:
    if len(clusters) != len(strata):
        raise ValueError(f"clusters need one id per unit ({len(strata)}); got {len(clusters)}")
    pairs = {(c, s) for c, s in zip(np.asarray(clusters).tolist(), strata.tolist())}
    if len({c for c, _ in pairs}) != len(pairs):
        raise ValueError("a cluster spans two strata; every cluster (prompt) must lie in one stratum (task)")


def seeds_and_units_bootstrap(
    arms: list[np.ndarray],
    signs: list[float],
    strata: np.ndarray,
    null: float = 0.0,
    seed: int = 0,
    n_boot: int = N_BOOTSTRAP,
    clusters: np.ndarray | None = None,
) -> dict:
    """A study's estimate with both sources of noise: sum over arms of sign * overall, where an arm is a
    (training seeds, units) matrix of per-unit values (an image's pass/fail, a prompt's win-rate) on the
    same units in the same order, and overall is the mean over strata of the stratum's mean over units of
    the mean over seeds. Each replicate resamples every arm's seeds (with replacement, independently:
    the arms were trained apart) and one resample of the units within each stratum, shared by all arms
    (they were judged on the same prompts and noise, which is what makes a difference paired).
    clusters: one id per unit (the prompt of each image), each within one stratum: the units are then
    resampled as whole clusters (a prompt's images are not independent); the estimate is unchanged.
    With one arm and sign 1 it is that arm's mean; with (a, b) and (1, -1) the paired difference a - b.
    p: the two-sided bootstrap p-value of the estimate against `null` (twice the smaller tail beyond it,
    so its resolution is 2 / n_boot). n_clusters: distinct clusters (= n_units without clusters).
    ValueError when an arm or clusters do not have one value per unit, or a cluster spans strata."""
    strata = np.asarray(strata)
    arms = [np.atleast_2d(np.asarray(a, dtype=np.float64)) for a in arms]
    if any(a.shape[1] != len(strata) for a in arms):
        raise ValueError(f"every arm needs one value per unit ({len(strata)}); got {[a.shape for a in arms]}")
    if clusters is not None:
        _check_clusters(strata, clusters)
    groups, members = _strata_groups(strata), _strata_clusters(strata, clusters)
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    for b in range(n_boot):
        draws = [rng.integers(0, len(sizes), len(sizes)) for _, _, sizes in members]
        boots[b] = sum(
            sign * _resampled_mean(a[rng.integers(0, len(a), len(a))].mean(axis=0), members, draws)
            for sign, a in zip(signs, arms)
        )
    p = min(1.0, 2 * min(float((boots <= null).mean()), float((boots >= null).mean())))
    mean = sum(sign * _strata_mean(a.mean(axis=0), groups) for sign, a in zip(signs, arms))
    return {
        "mean": float(mean),
        "ci95": list(percentile_ci(boots)),
        "p": p,
        "n_units": int(len(strata)),
        "n_clusters": int(sum(len(sizes) for _, _, sizes in members)),
        "n_seeds": [int(len(a)) for a in arms],
    }
