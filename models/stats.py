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
