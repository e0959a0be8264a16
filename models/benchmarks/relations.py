"""Two-object relations of compositional prompts ("a cat on the left of a dog", "a ball hidden by a box"):
the prompt split around its relation phrase, and the most confident box of each object. Shared by
T2I-CompBench's spatial and 3d_spatial scorers."""

from __future__ import annotations

import re
from typing import TypeVar

from PIL import Image

from models.shapes.verify import Box

from .geneval import Detector, group_detections

_ARTICLE = re.compile(r"^(a|an|the)\s+", re.IGNORECASE)
T = TypeVar("T")


def split_relation(prompt: str, phrases: dict[str, T]) -> tuple[str, T, str] | None:
    """(object, phrases[phrase], reference object) from "a <obj> <phrase> a <ref>" for the first of `phrases`
    (longest first) the prompt holds, articles dropped; None when it holds none."""
    text = prompt.strip().rstrip(".").lower()
    for phrase, relation in phrases.items():
        m = re.search(rf"\b{phrase}\b", text)
        if m:
            obj, ref = _ARTICLE.sub("", text[: m.start()].strip()), _ARTICLE.sub("", text[m.end() :].strip())
            return (obj, relation, ref) if obj and ref else None
    return None


def two_objects(detector: Detector, image: Image.Image, obj: str, ref: str, task: str) -> tuple[Box, Box] | None:
    """The most confident box of each of the two objects above GenEval's confidence, or None if one is missing."""
    objects = group_detections(detector.detect(image, [obj, ref]), task)
    if obj not in objects or ref not in objects:
        return None
    return objects[obj][0].box, objects[ref][0].box


def related_boxes(
    detector: Detector, image: Image.Image, prompt: str, phrases: dict[str, T], task: str
) -> tuple[T, tuple[Box, Box] | None]:
    """The prompt's relation (phrases' value) and the boxes of its two objects (None if one is missing);
    ValueError naming the phrases for a prompt that holds none of them."""
    parsed = split_relation(prompt, phrases)
    if parsed is None:
        raise ValueError(f"no {task} relation ({', '.join(phrases)}) found in {prompt!r}")
    obj, relation, ref = parsed
    return relation, two_objects(detector, image, obj, ref, task)
