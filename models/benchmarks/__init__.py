"""Benchmarks: a prompt adapter plus a scorer. Each is one module registering a class in BENCHMARKS.

A benchmark judges one image against its prompt's metadata (the `meta` column of the prompt table)
and returns (task, passed); `summarize` turns those into per-task accuracy with 95% CIs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from PIL import Image

from synrank.registry import Registry, import_all


class Benchmark(Protocol):
    name: str
    tasks: Sequence[str]  # the tags that make up the overall score; any other tag is a probe, reported apart

    def weights(self) -> list[Any]:
        """The models it will load (common.Weights: role, path, env setting); [] for an exact scorer."""
        ...

    def applies(self, meta: dict[str, Any]) -> bool: ...

    def judge(self, image: Image.Image, meta: dict[str, Any]) -> tuple[str, bool]: ...

    def summarize(self, results: list[tuple[str, bool]], prompts: list[str] | None = None) -> dict[str, Any]:
        """results: (task, passed) per image; prompts: the image's prompt id, the bootstrap's resampling unit."""
        ...


BENCHMARKS: Registry[type] = Registry("benchmark")


def benchmark_names() -> list[str]:
    """Every benchmark the evaluate stage can run: pass/fail (BENCHMARKS) and graded (common.SCORED)."""
    from models.benchmarks.common import SCORED

    import_all("models.benchmarks")
    return sorted([*BENCHMARKS.names(), *SCORED.names()])


def load_benchmark(name: str) -> Benchmark:
    """The benchmark `name` from either registry (KeyError naming the choices from BENCHMARKS otherwise)."""
    from models.benchmarks.common import SCORED

    import_all("models.benchmarks")
    return (SCORED if name in SCORED.names() else BENCHMARKS).get(name)()


def missing_weights(name: str) -> list[Any]:
    """The weights (common.Weights) benchmark `name` would load that are not on this machine. Building a
    benchmark reads only settings; nothing is loaded, so config validation can call this before any run."""
    from models.benchmarks.common import SCORED

    import_all("models.benchmarks")
    bench = (SCORED if name in SCORED.names() else BENCHMARKS).get(name)()
    return [w for w in bench.weights() if not w.on_disk()]
