"""Benchmarks: a scorer and a strict reader of its prompt file, each one plugin module of this package
registering into the registries of `registries` (BENCHMARKS pass/fail, SCORED graded).

A benchmark judges one image against its prompt's metadata (the `meta` column of the prompt table)
and returns (task, passed) or (category, score); `summarize` turns those into per-task accuracy (or
mean score) with 95% CIs. The lookups here import every plugin first (`import_all`)."""

from __future__ import annotations

from synrank.registry import import_all

from .common import Weights
from .registries import BENCHMARKS, SCORED, Benchmark


def benchmark_names() -> list[str]:
    """Every benchmark the evaluate stage can run: pass/fail (BENCHMARKS) and graded (SCORED)."""
    import_all("models.benchmarks")
    return sorted([*BENCHMARKS.names(), *SCORED.names()])


def load_benchmark(name: str) -> Benchmark:
    """The benchmark `name` from either registry (KeyError naming the choices from BENCHMARKS otherwise)."""
    import_all("models.benchmarks")
    return (SCORED if name in SCORED.names() else BENCHMARKS).get(name)()


def missing_weights(name: str) -> list[Weights]:
    """The weights benchmark `name` would load that are not on this machine. Building a benchmark reads
    only settings; nothing is loaded, so config validation can call this before any run."""
    import_all("models.benchmarks")
    bench = (SCORED if name in SCORED.names() else BENCHMARKS).get(name)()
    return [w for w in bench.weights() if not w.on_disk()]
