"""T2I-CompBench's numeracy and 3d_spatial categories, scored with transformers models that stand in for the
reference's (UniDet for counting, UniDet plus a depth model for 3D relations), so these two categories'
numbers are substitutes, not comparable with published ones (README "Reproducing the paper").

- numeracy ("three apples and a dog"): each noun phrase's number (a word, a digit, or a/an = 1) against the
  detector's count of that object above GenEval's confidence (0.3); the score is the share of phrases whose
  count is right.
- 3d_spatial ("a cat in front of a sofa", "behind", "hidden by"): the most confident box of each object, the
  median of the depth model's relative inverse depth (larger = nearer) inside each box; 1.0 if the order
  matches the relation, else 0.0 (also 0.0 when an object is missing)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

from .geneval import Detector, group_detections
from .relations import related_boxes, split_relation

NUMBERS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten".split())}
NUMBERS.update({"a": 1, "an": 1})
# relation -> whether the first object is the nearer one; longest phrases first.
DEPTH_RELATIONS = {"in front of": True, "hidden by": False, "behind": False}


class DepthEstimator(Protocol):
    """Relative inverse depth of an image, one value per pixel (H, W), larger = nearer."""

    def inverse_depth(self, image: Image.Image) -> np.ndarray:
        """(H, W) float array for the image."""
        ...


def counted_phrases(prompt: str) -> list[tuple[int, str]]:
    """(number, object) per noun phrase: "three apples, and a dog." -> [(3, "apples"), (1, "dog")]; a phrase
    without a leading number is left out."""
    found = []
    for phrase in re.split(r",|\band\b", prompt.strip().rstrip(".").lower()):
        words = phrase.split()
        if len(words) >= 2 and (words[0] in NUMBERS or words[0].isdigit()):
            found.append((int(words[0]) if words[0].isdigit() else NUMBERS[words[0]], " ".join(words[1:])))
    return found


def parse_depth_relation(prompt: str) -> tuple[str, bool, str] | None:
    """(object, object_is_nearer, reference) from "a <obj> in front of / behind / hidden by a <ref>", or None."""
    return split_relation(prompt, DEPTH_RELATIONS)


@dataclass
class NumeracyScorer:
    """numeracy: the share of the prompt's counted objects the detector finds exactly that many of."""

    detector: Detector

    def __call__(self, image: Image.Image, prompt: str) -> float:
        """Score in [0, 1]; ValueError for a prompt that counts nothing."""
        counted = counted_phrases(prompt)
        if not counted:
            raise ValueError(f"no counted object (a number word before a noun) in {prompt!r}")
        objects = group_detections(self.detector.detect(image, [obj for _, obj in counted]), "numeracy")
        return sum(len(objects.get(obj, [])) == n for n, obj in counted) / len(counted)


@dataclass
class Spatial3dScorer:
    """3d_spatial: 1.0 if the two objects' depths are in the prompt's order, else 0.0."""

    detector: Detector
    depth: DepthEstimator

    def __call__(self, image: Image.Image, prompt: str) -> float:
        """0.0 or 1.0; ValueError for a prompt with no depth relation (DEPTH_RELATIONS)."""
        nearer, boxes = related_boxes(self.detector, image, prompt, DEPTH_RELATIONS, "3d_spatial")
        if boxes is None:
            return 0.0
        disparity = self.depth.inverse_depth(image)

        def inside(box: tuple[float, float, float, float]) -> float:
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            patch = disparity[max(y0, 0) : max(y1, y0 + 1), max(x0, 0) : max(x1, x0 + 1)]
            return float(np.median(patch)) if patch.size else float("nan")

        a, b = (inside(box) for box in boxes)
        return float(a > b if nearer else a < b)
