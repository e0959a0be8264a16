"""T2I-CompBench (Huang et al. 2023): compositional prompts in eight categories, one scorer per category.

Prompt adapter: `<category>_val.txt`, `<category>_train.txt` and variant files such as
`complex_val_spatial.txt` (one prompt a line), the category taken from the file name: color, shape,
texture, spatial, non_spatial, complex, numeracy, 3d_spatial. A folder is read as its `<category>_val.txt`
files. The reader is synrank.prompt_formats' (the sample stage's `t2i-compbench` format), which also
lists the categories (T2I_CATEGORIES) and reads a category from a file name (t2i_category_of).

Scorers (pluggable per category; each maps (image, prompt) to a score in [0, 1]):
- color / shape / texture: BLIP-VQA. The prompt is split into noun phrases ("a green bench and a red
  car" -> "a green bench", "a red car"), each asked as "<phrase>?", and the image's score is the product
  of P(yes). The reference splits with spaCy noun chunks; splitting on "," and "and" matches the
  templated attribute prompts and needs no parser model.
- non_spatial: CLIP cosine similarity of image and prompt (the reference uses CLIP ViT-B/32).
- spatial: the GenEval `Detector` and GenEval's relation rule (geneval.relative_position) on the most
  confident box of each object: 1 if the relation holds, else 0 (also 0 when an object is missing).
  "next to" / "near" / "on side of" count as side by side (left of or right of). The reference uses
  UniDet with its own distance rule, so absolute numbers differ from published ones.
- complex: the mean of the scorers that apply (VQA on the noun phrases, CLIP, and spatial when the
  prompt names a relation), after the reference's "3-in-1" average.
- numeracy and 3d_spatial: substitutes for the reference's UniDet and depth model, in
  models.benchmarks.t2i_numeracy_3d (OWLv2 counts; OWLv2 boxes on a Depth Anything V2 depth map).

The scores are graded, not pass/fail, so the benchmark registers in registries.SCORED, not BENCHMARKS."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from models.shapes import geneval_accuracy
from synrank.prompt_formats import T2I_CATEGORIES, read_strict
from synrank.scorer_weights import SCORERS

from .common import BenchmarkPrompt, Weights
from .geneval import Detector, relative_position
from .registries import SCORED
from .relations import related_boxes, split_relation
from .t2i_numeracy_3d import NumeracyScorer, Spatial3dScorer

ATTRIBUTE_CATEGORIES: tuple[str, ...] = ("color", "shape", "texture")
DEFAULT_SCORED: tuple[str, ...] = T2I_CATEGORIES  # numeracy and 3d_spatial by substitutes (t2i_numeracy_3d)
SCORER_WEIGHTS = SCORERS["t2i-compbench"]  # synrank.scorer_weights
BLIP_WEIGHTS, BLIP_ENV = SCORER_WEIGHTS["blip"].default, SCORER_WEIGHTS["blip"].env
CLIP_WEIGHTS, CLIP_ENV = SCORER_WEIGHTS["clip"].default, SCORER_WEIGHTS["clip"].env

# Longest phrases first, so "on the left of" is found before anything shorter inside it could be.
SPATIAL_PHRASES: dict[str, str] = {
    "on the right of": "right of",
    "on the left of": "left of",
    "on the bottom of": "below",
    "on the top of": "above",
    "on side of": "beside",
    "next to": "beside",
    "near": "beside",
}
_SIDE_BY_SIDE = {"left of", "right of"}


class YesNoVqa(Protocol):
    """A VQA model that answers a yes/no question with P(yes) (vision.BlipVqa)."""

    def vqa_yes_probability(self, image: Image.Image, question: str) -> float:
        """P(yes) in [0, 1]."""
        ...


class ImageTextSimilarity(Protocol):
    """An image-text similarity (vision.ClipEncoder: cosine of the CLIP embeddings)."""

    def similarity(self, image: Image.Image, text: str) -> float:
        """Similarity of the image and text, a cosine in [-1, 1] for CLIP."""
        ...


CategoryScorer = Callable[[Image.Image, str], float]


def read_t2i_compbench(path: Path) -> list[BenchmarkPrompt]:
    """One prompt file (`<category>[_train|_val[_<variant>]].txt`), or a folder of `<category>_val.txt`
    files, read by synrank.prompt_formats' t2i-compbench reader: a cleaned prompt a line, blank lines
    skipped, meta {"benchmark", "category", "prompt"} (what `judge` reads). FileNotFoundError (no files),
    ValueError (a file name that names no category, or a line that is not UTF-8, naming file:line)."""
    return [BenchmarkPrompt(*record) for _, record in read_strict("t2i-compbench", Path(path))]


def noun_phrases(prompt: str) -> list[str]:
    """The prompt's noun phrases, split on "," and "and" ("a green bench and a red car." -> two phrases)."""
    return [p.strip() for p in re.split(r",|\band\b", prompt.strip().rstrip(".")) if p.strip()]


def parse_spatial(prompt: str) -> tuple[str, str, str] | None:
    """(object, relation, reference object) from "a <obj> <relation phrase> a <ref>", or None."""
    return split_relation(prompt, SPATIAL_PHRASES)


@dataclass
class AttributeVqaScorer:
    """color / shape / texture: the product over noun phrases of P(yes) to "<phrase>?" (BLIP-VQA)."""

    vqa: YesNoVqa
    template: str = "{phrase}?"

    def __call__(self, image: Image.Image, prompt: str) -> float:
        """Score in [0, 1] of one image for its prompt."""
        score = 1.0
        for phrase in noun_phrases(prompt):
            score *= self.vqa.vqa_yes_probability(image, self.template.format(phrase=phrase))
        return score


@dataclass
class ClipSimilarityScorer:
    """non_spatial: the image-prompt similarity (CLIP cosine, as the reference's CLIPScore without scaling)."""

    model: ImageTextSimilarity

    def __call__(self, image: Image.Image, prompt: str) -> float:
        """The similarity of one image and its prompt."""
        return float(self.model.similarity(image, prompt))


@dataclass
class SpatialScorer:
    """spatial: 1.0 if the most confident boxes of the two objects stand in the prompt's relation, else 0.0."""

    detector: Detector

    def __call__(self, image: Image.Image, prompt: str) -> float:
        """0.0 or 1.0 for one image; ValueError for a prompt that names no relation (SPATIAL_PHRASES)."""
        relation, boxes = related_boxes(self.detector, image, prompt, SPATIAL_PHRASES, "spatial")
        if boxes is None:
            return 0.0
        found = relative_position(*boxes)
        ok = bool(found & _SIDE_BY_SIDE) if relation == "beside" else relation in found
        return float(ok)


@dataclass
class ComplexScorer:
    """complex: the mean of the attribute, CLIP and (when the prompt names a relation) spatial scores."""

    attribute: CategoryScorer
    clip: CategoryScorer
    spatial: CategoryScorer | None = None

    def __call__(self, image: Image.Image, prompt: str) -> float:
        """The mean of the scorers that apply to this prompt."""
        parts = [self.attribute(image, prompt), self.clip(image, prompt)]
        if self.spatial is not None and parse_spatial(prompt) is not None:
            parts.append(self.spatial(image, prompt))
        return sum(parts) / len(parts)


@SCORED.register("t2i-compbench")
class T2ICompBench:
    """T2I-CompBench's graded scoring with a scorer per category (the defaults load on first use)."""

    name = "t2i-compbench"
    tasks = T2I_CATEGORIES  # every category enters the overall and the paired headline

    def __init__(
        self,
        scorers: dict[str, CategoryScorer] | None = None,
        blip: str | None = None,
        clip: str | None = None,
        owlv2: str | None = None,
        device: str = "cpu",
        depth: str | None = None,
    ) -> None:
        self.scorers: dict[str, CategoryScorer] = dict(scorers or {})
        given = {"blip": blip, "clip": clip, "owlv2": owlv2, "depth": depth}
        self.weights_paths = {k: given[k] or w.path() for k, w in SCORER_WEIGHTS.items()}
        self.device = device
        self._models: dict[str, Any] = {}

    def weights(self) -> list[Weights]:
        """The models the default scorers load: BLIP-VQA (attributes), CLIP (non_spatial), OWLv2 (spatial,
        numeracy), a depth model (3d_spatial); complex uses the first three. Config validation checks them
        before any run."""
        return [Weights(w.role, self.weights_paths[k], w.env) for k, w in SCORER_WEIGHTS.items()]

    def applies(self, meta: dict[str, Any]) -> bool:
        """Whether the prompt is a T2I-CompBench one whose category has a scorer."""
        category = meta.get("category")
        return meta.get("benchmark") == self.name and (category in self.scorers or category in DEFAULT_SCORED)

    def _model(self, kind: str) -> Any:
        # Built on first use and shared between categories (complex reuses all three).
        if kind not in self._models:
            from .vision import BlipVqa, ClipEncoder, DepthModel, Owlv2Detector

            path = self.weights_paths[kind]
            self._models[kind] = {
                "blip": lambda: BlipVqa(path, self.device),
                "clip": lambda: ClipEncoder(path, "T2I-CompBench CLIP similarity", self.device),
                "owlv2": lambda: Owlv2Detector(path, self.device),
                "depth": lambda: DepthModel(path, self.device),
            }[kind]()
        return self._models[kind]

    def scorer(self, category: str) -> CategoryScorer:
        """The category's scorer: the one passed in, else the default (built once); ValueError if none."""
        if category not in self.scorers:
            if category in ATTRIBUTE_CATEGORIES:
                self.scorers[category] = AttributeVqaScorer(self._model("blip"))
            elif category == "non_spatial":
                self.scorers[category] = ClipSimilarityScorer(self._model("clip"))
            elif category == "spatial":
                self.scorers[category] = SpatialScorer(self._model("owlv2"))
            elif category == "numeracy":
                self.scorers[category] = NumeracyScorer(self._model("owlv2"))
            elif category == "3d_spatial":
                self.scorers[category] = Spatial3dScorer(self._model("owlv2"), self._model("depth"))
            elif category == "complex":
                self.scorers[category] = ComplexScorer(
                    self.scorer("color"), self.scorer("non_spatial"), self.scorer("spatial")
                )
            else:
                raise ValueError(f"T2I-CompBench category {category!r} has no default scorer; pass one in `scorers`")
        return self.scorers[category]

    def judge(self, image: Image.Image, meta: dict[str, Any]) -> tuple[str, float]:
        """(category, graded score in [0, 1]) of one image for its prompt's metadata row."""
        category = meta["category"]
        return category, float(self.scorer(category)(image, meta["prompt"]))

    def summarize(self, results: list[tuple[str, float]], prompts: list[str] | None = None) -> dict[str, Any]:
        """Mean score per category and overall (the mean of the category means), 95% CIs resampling prompts
        within each category; keys as GenEval's ("accuracy" holds the mean score)."""
        return geneval_accuracy(results, prompts=prompts, tasks=T2I_CATEGORIES)
