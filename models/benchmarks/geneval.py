"""GenEval (Ghosh et al. 2023) on real images: its prompt file, and its scoring rules over detections.

Prompt adapter: `evaluation_metadata.jsonl`, 553 prompts, one JSON object a line with `tag` (one of the
six tasks), `include` ({class, count, color?, position?: [relation, index]}), optional `exclude`.

Scorer: GenEval's rules, implemented here on a list of `Detection`s so any detector can feed them:
- a detection counts when its score is above 0.3, or above 0.9 for `counting` prompts; per class the
  most confident come first and at most 16 are kept;
- include item: at least `count` detections of its class (the top `count` are the ones checked further);
  exclude item: fewer than `count` (counting prompts cap "at least 3" with "fewer than 4");
- color: each of those top `count` objects must be classified as the color (CLIP zero-shot on the crop);
- position: each of them must stand in the relation to every object matched by the referenced item.
  GenEval's margin is 0.1 x (sum of the two boxes' sizes) per axis, not 0.1 x the image size: each
  center offset component shrinks by it, and the shrunk offset over the raw offset's length must
  exceed 0.5 along the relation's axis. The rule is scale-free, so boxes may be in any units.
Overall = mean of the six task accuracies (models.shapes.geneval_accuracy).

Protocol: 4 images per prompt (2212 images); the evaluate stage sets images per prompt. The reference
detector is Mask2Former (mmdetection, COCO); here it is swappable (`Detector`), and the default is OWLv2
queried with the prompt's class names. The thresholds are GenEval's and were tuned for Mask2Former, so
numbers from another detector are comparable with each other, not with published GenEval scores."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from models.shapes import SHAPES, geneval_accuracy
from models.shapes.specs import RELATIONS, TASKS
from models.shapes.verify import Box, Detection
from synrank.prompt_formats import read_strict
from synrank.scorer_weights import SCORERS

from .common import BenchmarkPrompt, Weights
from .registries import BENCHMARKS

THRESHOLD = 0.3
COUNTING_THRESHOLD = 0.9
MAX_OBJECTS = 16
POSITION_THRESHOLD = 0.1
# GenEval's color vocabulary (its prompts' colors and its CLIP classifier's classes), not the shapes
# world's palette (models.shapes.specs.COLORS). Its relations are models.shapes.specs.RELATIONS.
GENEVAL_COLORS: tuple[str, ...] = (
    "red",
    "orange",
    "yellow",
    "green",
    "blue",
    "purple",
    "pink",
    "brown",
    "black",
    "white",
)
IMAGES_PER_PROMPT = 4

# Default weights; load_benchmark builds benchmarks without arguments, so these env vars override them.
COLOR = SCORERS["geneval"]["color"]  # synrank.scorer_weights: where every scorer's weights are
OWLV2_WEIGHTS, OWLV2_ENV = SCORERS["geneval-owlv2"]["detector"].default, SCORERS["geneval-owlv2"]["detector"].env
CLIP_WEIGHTS, CLIP_ENV = COLOR.default, COLOR.env


class Detector(Protocol):
    """An open-vocabulary detector queried with class names (models.shapes.verify.Detection, pixels)."""

    def detect(self, image: Image.Image, classes: list[str]) -> list[Detection]:
        """The objects of `classes` in the image, with scores in [0, 1]; [] when classes is empty."""
        ...


class ColorClassifier(Protocol):
    """GenEval's color check: one of GENEVAL_COLORS per detected object of class `classname`."""

    def classify(self, image: Image.Image, detections: list[Detection], classname: str) -> list[str]:
        """One color name per detection, in order."""
        ...


@dataclass
class Verdict:
    """GenEval's pass/fail for one image, and why it failed (one reason per failed clause)."""

    passed: bool
    reasons: list[str] = field(default_factory=list)


def relative_position(a: Box, b: Box, margin: float = POSITION_THRESHOLD) -> set[str]:
    """The relations in which box a stands to box b (GenEval's rule, see the module docstring)."""
    boxes = np.asarray([a, b], dtype=np.float64).reshape(2, 2, 2)  # (box, corner, xy)
    center_a, center_b = boxes.mean(axis=1)
    dim_a, dim_b = np.abs(boxes[:, 1] - boxes[:, 0])
    offset = center_a - center_b
    revised = np.maximum(np.abs(offset) - margin * (dim_a + dim_b), 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()  # too close on both axes: no relation at all
    dx, dy = revised / np.linalg.norm(offset)
    out = set()
    if dx < -0.5:
        out.add("left of")
    if dx > 0.5:
        out.add("right of")
    if dy < -0.5:  # image y grows downwards
        out.add("above")
    if dy > 0.5:
        out.add("below")
    return out


def group_detections(detections: list[Detection], tag: str) -> dict[str, list[Detection]]:
    """Per class, the detections above the task's threshold, most confident first, at most 16."""
    threshold = COUNTING_THRESHOLD if tag == "counting" else THRESHOLD
    out: dict[str, list[Detection]] = {}
    for det in sorted(detections, key=lambda d: -d.score):
        if det.cls is not None and det.score > threshold and len(out.setdefault(det.cls, [])) < MAX_OBJECTS:
            out[det.cls].append(det)
    return {k: v for k, v in out.items() if v}


def _colors_of(
    found: list[Detection], image: Image.Image | None, classifier: ColorClassifier | None, classname: str
) -> list[str]:
    if all(d.color is not None for d in found):
        return [str(d.color) for d in found]
    if classifier is None or image is None:
        raise ValueError(f"a color check on '{classname}' needs the image and a color classifier")
    return classifier.classify(image, found, classname)


def evaluate(
    detections: list[Detection],
    meta: dict[str, Any],
    image: Image.Image | None = None,
    classifier: ColorClassifier | None = None,
) -> Verdict:
    """GenEval's verdict for one image: include clauses ANDed, exclude clauses ORed."""
    objects = group_detections(detections, str(meta.get("tag", "")))
    reasons: list[str] = []
    matched: list[list[Detection] | None] = []  # per include item, its objects if it was satisfied
    for item in meta.get("include", []):
        cls, count = item["class"], int(item["count"])
        found = objects.get(cls, [])[:count]  # only the most confident `count` are checked further
        ok = len(found) >= count
        if not ok:
            reasons.append(f"expected {cls} >= {count}, found {len(found)}")
        if ok and "color" in item:
            colors = _colors_of(found, image, classifier, cls)
            if colors.count(item["color"]) < count:
                ok = False
                reasons.append(f"expected {count} {item['color']} {cls}, found colors {sorted(colors)}")
        if ok and "position" in item:
            relation, target = item["position"]
            targets = matched[target] if target < len(matched) else None
            if targets is None:
                ok = False
                reasons.append(f"no target for {cls} to be {relation}")
            else:
                for obj in found:
                    bad = [t for t in targets if relation not in relative_position(obj.box, t.box)]
                    if bad:
                        ok = False
                        reasons.append(
                            f"expected {cls} {relation} target, found "
                            f"{sorted(relative_position(obj.box, bad[0].box)) or 'no relation'}"
                        )
                        break
        matched.append(found if ok else None)
    for item in meta.get("exclude", []):
        cls, count = item["class"], int(item["count"])
        if len(objects.get(cls, [])) >= count:
            reasons.append(f"expected {cls} < {count}, found {len(objects[cls])}")
    return Verdict(not reasons, reasons)


def spec_classes(meta: dict[str, Any]) -> list[str]:
    """The classes a spec names (include then exclude, no repeats): the detector's text queries."""
    names = [i["class"] for i in meta.get("include", [])] + [i["class"] for i in meta.get("exclude", [])]
    return list(dict.fromkeys(names))


def _check_spec(obj: dict[str, Any], where: str) -> dict[str, Any]:
    """The spec, if GenEval's scorer can read it all (tag, include/exclude items, colors, positions);
    ValueError naming `where` (file:line) otherwise."""
    if obj.get("tag") not in TASKS:
        raise ValueError(f"{where}: tag {obj.get('tag')!r} is not one of {', '.join(TASKS)}")
    items = obj.get("include")
    if not isinstance(items, list) or not items:
        raise ValueError(f"{where}: 'include' must be a non-empty list")
    for item in items + list(obj.get("exclude", [])):
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("class"), str)
            or not isinstance(item.get("count"), int)
        ):
            raise ValueError(f"{where}: include/exclude item without a string 'class' and an int 'count': {item!r}")
        if "color" in item and item["color"] not in GENEVAL_COLORS:
            raise ValueError(f"{where}: color {item['color']!r} is not one of GenEval's colors")
        if "position" in item:
            rel, ref = item["position"]
            if rel not in RELATIONS or not 0 <= int(ref) < len(items):
                raise ValueError(f"{where}: bad position {item['position']!r}")
    return obj


def read_geneval(path: Path) -> list[BenchmarkPrompt]:
    """Every spec of evaluation_metadata.jsonl (synrank.prompt_formats' geneval reader), validated: a bad
    line is a ValueError naming file:line, since the benchmark is fixed. Prompt as written, category the
    tag, meta the whole spec (what `evaluate` reads)."""
    return [
        BenchmarkPrompt(prompt, tag, _check_spec(spec, where))
        for where, (prompt, tag, spec) in read_strict("geneval", Path(path))
    ]


@BENCHMARKS.register("geneval")
class GenEval:
    """GenEval as published: Mask2Former (Swin-S, COCO instance; models.benchmarks.vision) finds the objects,
    CLIP ViT-L/14 names their colors, and the official rules judge (thresholds 0.3 / 0.9 for counting, at most
    16 objects per class, no NMS, position margin 0.1). A detector and a color classifier can be given (tests);
    the default models load on first use."""

    name = "geneval"
    tasks = TASKS

    def __init__(
        self,
        detector: Detector | None = None,
        colors: ColorClassifier | None = None,
        detector_weights: str | None = None,
        clip: str | None = None,
        device: str = "cpu",
    ) -> None:
        self._detector, self._colors = detector, colors
        self.scorers = SCORERS[self.name]
        self.detector_weights = detector_weights or self.scorers["detector"].path()
        self.clip = clip or self.scorers["color"].path()
        self.device = device

    def weights(self) -> list[Weights]:
        """The models this benchmark loads (config validation checks they are on disk before any run)."""
        paths = {"detector": self.detector_weights, "color": self.clip}
        return [Weights(w.role, paths[k], w.env) for k, w in self.scorers.items()]

    def load_detector(self) -> Detector:
        """Mask2Former from `detector_weights` (FileNotFoundError if absent)."""
        from .mask2former import Mask2FormerDetector

        return Mask2FormerDetector(self.detector_weights, device=self.device)

    def applies(self, meta: dict[str, Any]) -> bool:
        """Whether the spec names a class outside the shapes world (the detector's job)."""
        # The complement of geneval-shapes: a spec whose classes are all shapes-world shapes is scored
        # by the exact verifier, any other GenEval spec by the detector.
        items = meta.get("include")
        return isinstance(items, list) and bool(items) and not all(i.get("class") in SHAPES for i in items)

    def detector(self) -> Detector:
        """The detector given, else this benchmark's own (load_detector), loaded on first use."""
        if self._detector is None:
            self._detector = self.load_detector()
        return self._detector

    def color_classifier(self) -> ColorClassifier:
        """The classifier given, else CLIP from `clip`, loaded on first use (FileNotFoundError if absent)."""
        if self._colors is None:
            from .vision import ClipColorClassifier, ClipEncoder

            encoder = ClipEncoder(self.clip, "GenEval color classifier: CLIP", self.device)
            self._colors = ClipColorClassifier(encoder, GENEVAL_COLORS)
        return self._colors

    def verdict(self, image: Image.Image, meta: dict[str, Any]) -> Verdict:
        """GenEval's verdict on one image for its spec, with the reasons it failed."""
        image = image.convert("RGB")
        detections = self.detector().detect(image, spec_classes(meta))
        needs_color = any("color" in i for i in meta.get("include", []))
        return evaluate(detections, meta, image, self.color_classifier() if needs_color else None)

    def judge(self, image: Image.Image, meta: dict[str, Any]) -> tuple[str, bool]:
        """(task tag, passed) for one image."""
        return meta["tag"], self.verdict(image, meta).passed

    def summarize(self, results: list[tuple[str, bool]], prompts: list[str] | None = None) -> dict[str, Any]:
        """Per-task accuracy and GenEval's overall, CIs resampling prompts (one id per result) within tasks."""
        return geneval_accuracy(results, prompts=prompts)


@BENCHMARKS.register("geneval-owlv2")
class GenEvalOwlv2(GenEval):
    """GenEval's prompts and rules with OWLv2 (open vocabulary) in place of its Mask2Former: NOT comparable with
    published GenEval scores (the thresholds were tuned for Mask2Former's confidences), hence its own name in
    every table and metric."""

    name = "geneval-owlv2"

    def __init__(self, *args: Any, owlv2: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.detector_weights = owlv2 or self.detector_weights

    def load_detector(self) -> Detector:
        """OWLv2 from `detector_weights` (FileNotFoundError if absent)."""
        from .vision import Owlv2Detector

        return Owlv2Detector(self.detector_weights, device=self.device)
