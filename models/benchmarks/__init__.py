"""Benchmarks: a prompt adapter plus a scorer. Each is one module registering a class in BENCHMARKS.

A benchmark judges one image against its prompt's metadata (the `meta` column of the prompt table)
and returns (task, passed); `summarize` turns those into per-task accuracy with 95% CIs."""

from __future__ import annotations

from typing import Any, Protocol

from PIL import Image

from synrank.registry import Registry, import_all


class Benchmark(Protocol):
    name: str

    def applies(self, meta: dict[str, Any]) -> bool: ...

    def judge(self, image: Image.Image, meta: dict[str, Any]) -> tuple[str, bool]: ...

    def summarize(self, results: list[tuple[str, bool]], prompts: list[str] | None = None) -> dict[str, Any]:
        """results: (task, passed) per image; prompts: the image's prompt id, the bootstrap's resampling unit."""
        ...


BENCHMARKS: Registry[type] = Registry("benchmark")


def load_benchmark(name: str) -> Benchmark:
    import_all("models.benchmarks")

    return BENCHMARKS.get(name)()
