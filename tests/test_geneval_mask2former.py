"""GenEval as published: Mask2Former's instance output through transformers' post-processing into GenEval's
official rules. Every one of the 553 real specs, judged on random synthetic detections, gets the same verdict
whether the detections are handed to the rules directly or go through Mask2Former's output format first;
a tiny random Mask2Former loads through from_pretrained and detects; OWLv2 stays as `geneval-owlv2`."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from models.benchmarks import load_benchmark
from models.benchmarks.geneval import GENEVAL_COLORS, GenEval, GenEvalOwlv2, evaluate, read_geneval, spec_classes
from models.benchmarks.mask2former import COCO_NAMES, Mask2FormerDetector, instance_detections
from models.shapes.verify import Detection
from tests.fixtures.benchmarks import COLOR_ATTR, save_tiny_mask2former
from tests.test_benchmark_geneval import GENEVAL_FILE

SIDE = 384  # transformers resizes mask logits to 384 x 384 first: at this size every step is exact


class BoxColors:
    """A color classifier that knows each box's color (the synthetic scene's truth)."""

    def __init__(self, colors: dict[tuple[float, ...], str]) -> None:
        self.colors = colors

    def classify(self, image: Image.Image, detections: list[Detection], classname: str) -> list[str]:
        return [self.colors[tuple(d.box)] for d in detections]


def scene(meta: dict, rng: random.Random) -> tuple[list[Detection], dict[tuple[float, ...], str]]:
    """0-3 instances of each of the spec's classes and one other, boxes on a 384 grid, scores either side of
    GenEval's thresholds (0.2, 0.5, 0.95, each + up to 0.01), a color each."""
    classes = [*spec_classes(meta), rng.choice(COCO_NAMES)]
    found, colors = [], {}
    for cls in classes:
        for _ in range(rng.randint(0, 3)):
            x0, y0 = rng.randrange(0, SIDE - 40, 8), rng.randrange(0, SIDE - 40, 8)
            box = (float(x0), float(y0), float(x0 + rng.randrange(16, 40, 8)), float(y0 + rng.randrange(16, 40, 8)))
            if box in colors:
                continue
            colors[box] = rng.choice(GENEVAL_COLORS)
            # Distinct scores: GenEval orders by confidence, and leaves the order of equal ones to chance.
            found.append(Detection(cls, box, rng.choice([0.2, 0.5, 0.95]) + rng.random() / 100))
    return found, colors


def as_mask2former_output(found: list[Detection]) -> SimpleNamespace:
    """Mask2Former's raw output for these instances: one query each, its class at the detection's
    probability (the rest 'no object'), its mask logits +20 inside the box and -20 outside."""
    logits = torch.full((1, len(found), len(COCO_NAMES) + 1), -30.0)
    masks = torch.full((1, len(found), SIDE, SIDE), -20.0)
    for q, d in enumerate(found):
        logits[0, q, COCO_NAMES.index(d.cls)] = torch.tensor(d.score).log()
        logits[0, q, -1] = torch.tensor(1 - d.score).log()
        x0, y0, x1, y1 = (int(v) for v in d.box)
        masks[0, q, y0:y1, x0:x1] = 20.0
    return SimpleNamespace(class_queries_logits=logits, masks_queries_logits=masks)


@pytest.mark.slow
def test_every_real_spec_is_judged_alike_through_mask2formers_output() -> None:
    from transformers import Mask2FormerImageProcessor

    processor, rng = Mask2FormerImageProcessor(), random.Random(0)
    image = Image.new("RGB", (SIDE, SIDE))
    verdicts = []
    for prompt in read_geneval(GENEVAL_FILE):
        found, colors = scene(prompt.meta, rng)
        direct = evaluate(found, prompt.meta, image, BoxColors(colors))
        if found:
            result = processor.post_process_instance_segmentation(
                as_mask2former_output(found), threshold=0.0, target_sizes=[(SIDE, SIDE)], return_binary_maps=True
            )[0]
            converted = instance_detections(result, COCO_NAMES, spec_classes(prompt.meta))
        else:
            converted = []
        via = evaluate(converted, prompt.meta, image, BoxColors(colors))
        assert (via.passed, via.reasons) == (direct.passed, direct.reasons), prompt.prompt
        verdicts.append(direct.passed)
    assert len(verdicts) == 553 and 0 < sum(verdicts) < 553  # both verdicts occur


def test_a_tiny_mask2former_loads_and_detects(tmp_path: Path) -> None:
    torch.manual_seed(0)
    folder = save_tiny_mask2former(tmp_path / "m2f")
    found = Mask2FormerDetector(folder).detect(Image.new("RGB", (48, 40), "blue"), list(COCO_NAMES))
    assert found and all(d.cls in COCO_NAMES and d.mask is not None and d.mask.shape == (40, 48) for d in found)
    assert all(0 <= d.box[0] < d.box[2] <= 48 and 0 <= d.box[1] < d.box[3] <= 40 for d in found)
    bench = GenEval(detector_weights=folder, colors=BoxColors({}))
    assert (
        bench.judge(Image.new("RGB", (48, 40)), {**COLOR_ATTR, "include": [{"class": "car", "count": 5}]})[1] is False
    )


def test_geneval_is_mask2former_and_owlv2_has_its_own_name(monkeypatch: pytest.MonkeyPatch) -> None:
    for env in ("SYNRANK_GENEVAL_MASK2FORMER", "SYNRANK_GENEVAL_OWLV2"):
        monkeypatch.delenv(env, raising=False)
    geneval, owlv2 = load_benchmark("geneval"), load_benchmark("geneval-owlv2")
    assert [w.path for w in geneval.weights()] == [
        "facebook/mask2former-swin-small-coco-instance",
        "openai/clip-vit-large-patch14",
    ]
    assert isinstance(owlv2, GenEvalOwlv2) and owlv2.weights()[0].path == "google/owlv2-base-patch16-ensemble"
