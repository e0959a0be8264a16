"""GenEval-shapes: GenEval's six tasks and rules on the shapes world, scored by its exact verifier; the
novel-binding probe's prompts are judged the same way and reported apart from the overall score."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from models.shapes import SHAPES, geneval_accuracy, verify
from models.shapes.specs import TASKS

from .common import Weights
from .registries import BENCHMARKS


@BENCHMARKS.register("geneval-shapes")
class GenEvalShapes:
    """GenEval's rules on shapes-world images, scored exactly by models.shapes.verify (no detector)."""

    name = "geneval-shapes"
    tasks = TASKS

    def weights(self) -> list[Weights]:
        """No weights: the verifier is exact."""
        return []  # the exact verifier: no model to load

    def applies(self, meta: dict[str, Any]) -> bool:
        """Whether every class the spec includes is a shapes-world shape."""
        items = meta.get("include")
        return isinstance(items, list) and bool(items) and all(i.get("class") in SHAPES for i in items)

    def judge(self, image: Image.Image, meta: dict[str, Any]) -> tuple[str, bool]:
        """(task tag, passed) for one shapes-world image (HxWx3 after RGB conversion)."""
        return meta["tag"], bool(verify(np.asarray(image.convert("RGB")), meta))

    def summarize(self, results: list[tuple[str, bool]], prompts: list[str] | None = None) -> dict[str, Any]:
        """Per-task accuracy, the overall over the six tasks and the novel-binding probe apart, with CIs
        that resample prompts (one id per result) within each task: models.shapes.benchmark.geneval_accuracy."""
        return geneval_accuracy(results, prompts=prompts)
