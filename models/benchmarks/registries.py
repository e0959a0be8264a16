"""What a benchmark plugin implements and where it registers: the leaf every plugin module imports, so
the package has no import cycle (the package `__init__` imports the plugins, never the reverse).

Two kinds of benchmark:
- pass/fail benchmarks (GenEval, GenEval-shapes) register in `BENCHMARKS`: `judge` returns (task, passed)
  and the evaluate stage reports per-task accuracy;
- graded benchmarks (T2I-CompBench) return a score in [0, 1] per image, so they register in `SCORED`
  (`judge(image, meta) -> (category, value)`); their summaries have the same shape, with the mean score
  under "accuracy".
Each benchmark's prompt file is read by the sample stage (synrank.prompt_formats); its module here keeps a
strict reader of the same file (`read_<benchmark>`, a bad line is an error naming file:line) for tests and
scripts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from PIL import Image

from synrank.registry import Registry

from .common import Weights


class Benchmark(Protocol):
    """A pass/fail benchmark: judges one image against its prompt's metadata (the prompt table's `meta`)."""

    name: str
    tasks: Sequence[str]  # the tags that make up the overall score; any other tag is a probe, reported apart

    def weights(self) -> list[Weights]:
        """The models it will load; [] for an exact scorer."""
        ...

    def applies(self, meta: dict[str, Any]) -> bool:
        """Whether this benchmark scores a prompt with this metadata."""
        ...

    def judge(self, image: Image.Image, meta: dict[str, Any]) -> tuple[str, bool]:
        """(task, passed) for one image."""
        ...

    def summarize(self, results: list[tuple[str, bool]], prompts: list[str] | None = None) -> dict[str, Any]:
        """results: (task, passed) per image; prompts: the image's prompt id, the bootstrap's resampling unit."""
        ...


class ScoredBenchmark(Protocol):
    """A graded benchmark: a score in [0, 1] per image instead of pass/fail."""

    name: str

    def applies(self, meta: dict[str, Any]) -> bool:
        """Whether this benchmark scores a prompt with this metadata."""
        ...

    def judge(self, image: Image.Image, meta: dict[str, Any]) -> tuple[str, float]:
        """(category, score) for one image."""
        ...

    def summarize(self, results: list[tuple[str, float]], prompts: list[str] | None = None) -> dict[str, Any]:
        """Mean score per category and overall, in the shape of Benchmark.summarize."""
        ...


BENCHMARKS: Registry[type] = Registry("benchmark")
SCORED: Registry[type] = Registry("scored benchmark")
