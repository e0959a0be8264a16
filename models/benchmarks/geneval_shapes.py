"""GenEval-shapes: GenEval's six tasks and rules on the shapes world, scored by its exact verifier; the
novel-binding probe's prompts are judged the same way and reported apart from the overall score."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from models.benchmarks import BENCHMARKS
from models.shapes import SHAPES, geneval_accuracy, verify
from models.shapes.specs import TASKS


@BENCHMARKS.register("geneval-shapes")
class GenEvalShapes:
    name = "geneval-shapes"
    tasks = TASKS

    def weights(self) -> list:
        return []  # the exact verifier: no model to load

    def applies(self, meta: dict[str, Any]) -> bool:
        items = meta.get("include")
        return isinstance(items, list) and bool(items) and all(i.get("class") in SHAPES for i in items)

    def judge(self, image: Image.Image, meta: dict[str, Any]) -> tuple[str, bool]:
        return meta["tag"], bool(verify(np.asarray(image.convert("RGB")), meta))

    def summarize(self, results: list[tuple[str, bool]], prompts: list[str] | None = None) -> dict[str, Any]:
        """Per-task accuracy, the overall over the six tasks and the novel-binding probe apart, with CIs
        that resample prompts (one id per result) within each task: models.shapes.benchmark.geneval_accuracy."""
        return geneval_accuracy(results, prompts=prompts)
