"""What the benchmark plugins share: the prompt record adapters return, the adapter and scored-benchmark
registries, score summaries with bootstrap CIs, and the one check that model weights are on disk.

Two kinds of benchmark live in this package:
- pass/fail benchmarks (GenEval, GenEval-shapes) register in `BENCHMARKS`: `judge` returns (task, passed)
  and the evaluate stage reports per-task accuracy;
- graded benchmarks (T2I-CompBench) return a score in [0, 1] per image, so they register in `SCORED`
  (`score(image, meta) -> (category, value)`, `summarize` over values) instead of bending `judge`'s bool.
Benchmarks that are only a prompt set scored by reward models (PartiPrompts, DPG-Bench prompts) register
just their prompt adapter in `ADAPTERS`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from models.stats import N_BOOTSTRAP, stratified_means
from synrank.models_io import resolve_model_path
from synrank.registry import Registry


@dataclass(frozen=True)
class BenchmarkPrompt:
    """One benchmark prompt; `meta` is what the benchmark's scorer reads back (the prompt table's `meta`)."""

    prompt: str
    category: str | None
    meta: dict[str, Any] = field(default_factory=dict)

    def as_row(self, source: str) -> dict[str, Any]:
        """The row shape of synrank.prompts (meta JSON-encoded), so adapters can feed the prompt stage."""
        return {"prompt": self.prompt, "category": self.category, "source": source,
                "meta": json.dumps(self.meta, ensure_ascii=False), "split": "eval"}


Adapter = Callable[[Path], list[BenchmarkPrompt]]


class ScoredBenchmark(Protocol):
    name: str

    def applies(self, meta: dict[str, Any]) -> bool: ...

    def score(self, image: Image.Image, meta: dict[str, Any]) -> tuple[str, float]: ...

    def summarize(self, results: list[tuple[str, float]]) -> dict[str, Any]: ...


ADAPTERS: Registry[Adapter] = Registry("benchmark prompt adapter")
SCORED: Registry[type] = Registry("scored benchmark")


def summarize_scores(results: Iterable[tuple[str, float]], n_boot: int = N_BOOTSTRAP, seed: int = 0) -> dict:
    """Mean score per category with seeded bootstrap 95% CIs (resampled within the category); overall is
    the mean of the category means, as GenEval does for accuracies, so large categories do not dominate.

    Returns {"overall": {"mean", "ci95", "n"}, "tasks": {category: {"mean", "ci95", "n"}}}."""
    by_cat: dict[str, list[float]] = {}
    for cat, value in results:
        by_cat.setdefault(cat, []).append(float(value))
    if not by_cat:
        raise ValueError("no results to summarize")
    tasks, overall = stratified_means({cat: by_cat[cat] for cat in sorted(by_cat)}, seed, n_boot)
    return {"overall": overall, "tasks": tasks}


def local_weights(path: str, what: str) -> str:
    """A weights folder that is on this machine (a local path or a cached hub snapshot), else a
    FileNotFoundError naming the weights: scoring must never start a silent multi-GB download."""
    resolved = resolve_model_path(path, what)
    if not Path(resolved).exists():
        raise FileNotFoundError(f"{what}: weights '{path}' are not on this machine (no local folder, no cached "
                                f"hub snapshot); download them first, e.g. `huggingface-cli download {path}`, "
                                f"or point to a folder saved with save_pretrained")
    return resolved
