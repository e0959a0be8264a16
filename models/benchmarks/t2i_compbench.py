"""T2I-CompBench (Huang et al. 2023): compositional prompts in eight categories, one scorer per category.

Prompt adapter: `<category>_val.txt`, `<category>_train.txt` and variant files such as
`complex_val_spatial.txt` (one prompt a line), the category taken from the file name: color, shape,
texture, spatial, non_spatial, complex, numeracy, 3d_spatial. A folder is read as its `<category>_val.txt`
files. The sample stage's `t2i-compbench` format reads through `prompt_files`, `category_of` and `record`.

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
numeracy and 3d_spatial prompts are read, but have no default scorer (their references need counting
with UniDet and a depth model); `applies` is False for them unless a scorer is passed in.

The scores are graded, not pass/fail, so the benchmark registers in common.SCORED, not BENCHMARKS."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from .common import ADAPTERS, SCORED, BenchmarkPrompt, Weights
from .geneval import OWLV2_ENV, OWLV2_WEIGHTS, Detector, group_detections, relative_position

CATEGORIES: tuple[str, ...] = (
    "color",
    "shape",
    "texture",
    "spatial",
    "non_spatial",
    "complex",
    "numeracy",
    "3d_spatial",
)
ATTRIBUTE_CATEGORIES: tuple[str, ...] = ("color", "shape", "texture")
DEFAULT_SCORED: tuple[str, ...] = (*ATTRIBUTE_CATEGORIES, "non_spatial", "spatial", "complex")
SUFFIX = "_val.txt"
# <category>, then _train or _val and an optional variant (complex_val_spatial), then .txt.
_FILE_NAME = re.compile(rf"^({'|'.join(sorted(CATEGORIES, key=len, reverse=True))})(?:_(?:train|val)(?:_\w+)?)?\.txt$")
BLIP_WEIGHTS, BLIP_ENV = "Salesforce/blip-vqa-base", "SYNRANK_T2I_BLIP"
CLIP_WEIGHTS, CLIP_ENV = "openai/clip-vit-base-patch32", "SYNRANK_T2I_CLIP"

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
_ARTICLE = re.compile(r"^(a|an|the)\s+", re.IGNORECASE)


class YesNoVqa(Protocol):
    def vqa_yes_probability(self, image: Image.Image, question: str) -> float: ...


class ImageTextSimilarity(Protocol):
    def similarity(self, image: Image.Image, text: str) -> float: ...


CategoryScorer = Callable[[Image.Image, str], float]


def category_of(path: Path) -> str:
    """The category named by a prompt file: `<category>[_train|_val[_<variant>]].txt`, e.g. color_val.txt,
    spatial_train.txt, complex_val_spatial.txt. Raises ValueError naming the file for any other name."""
    m = _FILE_NAME.match(Path(path).name)
    if m is None:
        raise ValueError(
            f"'{path}': not a T2I-CompBench prompt file (<category>_val.txt, <category>_train.txt "
            f"or <category>_val_<variant>.txt, category one of {', '.join(CATEGORIES)})"
        )
    return m.group(1)


def prompt_files(path: Path) -> list[Path]:
    """A file -> [it]; a folder -> its `<category>_val.txt` files in CATEGORIES order (train and variant
    files are left out: the folder is the benchmark). Raises FileNotFoundError when there are none and
    ValueError for a `*_val.txt` file whose category is unknown."""
    path = Path(path)
    if path.is_file():
        return [path]
    files = sorted(path.glob(f"*{SUFFIX}"), key=lambda p: CATEGORIES.index(category_of(p)))
    if not files:
        raise FileNotFoundError(f"no T2I-CompBench prompt files (*{SUFFIX}) at '{path}'")
    return files


def record(line: str, category: str) -> BenchmarkPrompt | None:
    """One line of a prompt file -> its prompt (ends stripped) with the scorer's meta; None for a blank line."""
    prompt = line.strip()
    if not prompt:
        return None
    return BenchmarkPrompt(prompt, category, {"benchmark": "t2i-compbench", "category": category, "prompt": prompt})


@ADAPTERS.register("t2i-compbench")
def read_t2i_compbench(path: Path) -> list[BenchmarkPrompt]:
    """One prompt file (see `category_of`), or a folder of `<category>_val.txt` files; blank lines skipped.
    Raises FileNotFoundError (no files), ValueError (a file name that names no category) and
    UnicodeDecodeError (a file that is not UTF-8)."""
    out = []
    for f in prompt_files(path):
        category = category_of(f)
        out += [r for line in f.read_text(encoding="utf-8").splitlines() if (r := record(line, category))]
    return out


def noun_phrases(prompt: str) -> list[str]:
    return [p.strip() for p in re.split(r",|\band\b", prompt.strip().rstrip(".")) if p.strip()]


def parse_spatial(prompt: str) -> tuple[str, str, str] | None:
    """(object, relation, reference object) from "a <obj> <relation phrase> a <ref>", or None."""
    text = prompt.strip().rstrip(".").lower()
    for phrase, relation in SPATIAL_PHRASES.items():
        m = re.search(rf"\b{phrase}\b", text)
        if m:
            obj, ref = _ARTICLE.sub("", text[: m.start()].strip()), _ARTICLE.sub("", text[m.end() :].strip())
            return (obj, relation, ref) if obj and ref else None
    return None


@dataclass
class AttributeVqaScorer:
    vqa: YesNoVqa
    template: str = "{phrase}?"

    def __call__(self, image: Image.Image, prompt: str) -> float:
        score = 1.0
        for phrase in noun_phrases(prompt):
            score *= self.vqa.vqa_yes_probability(image, self.template.format(phrase=phrase))
        return score


@dataclass
class ClipSimilarityScorer:
    model: ImageTextSimilarity

    def __call__(self, image: Image.Image, prompt: str) -> float:
        return float(self.model.similarity(image, prompt))


@dataclass
class SpatialScorer:
    detector: Detector

    def __call__(self, image: Image.Image, prompt: str) -> float:
        parsed = parse_spatial(prompt)
        if parsed is None:
            raise ValueError(f"no spatial relation ({', '.join(SPATIAL_PHRASES)}) found in {prompt!r}")
        obj, relation, ref = parsed
        objects = group_detections(self.detector.detect(image, [obj, ref]), "spatial")
        if obj not in objects or ref not in objects:
            return 0.0
        found = relative_position(objects[obj][0].box, objects[ref][0].box)
        ok = bool(found & _SIDE_BY_SIDE) if relation == "beside" else relation in found
        return float(ok)


@dataclass
class ComplexScorer:
    attribute: CategoryScorer
    clip: CategoryScorer
    spatial: CategoryScorer | None = None

    def __call__(self, image: Image.Image, prompt: str) -> float:
        parts = [self.attribute(image, prompt), self.clip(image, prompt)]
        if self.spatial is not None and parse_spatial(prompt) is not None:
            parts.append(self.spatial(image, prompt))
        return sum(parts) / len(parts)


@SCORED.register("t2i-compbench")
class T2ICompBench:
    name = "t2i-compbench"
    tasks = CATEGORIES  # every category enters the overall and the paired headline

    def __init__(
        self,
        scorers: dict[str, CategoryScorer] | None = None,
        blip: str | None = None,
        clip: str | None = None,
        owlv2: str | None = None,
        device: str = "cpu",
    ) -> None:
        self.scorers: dict[str, CategoryScorer] = dict(scorers or {})
        self.weights_paths = {
            "blip": blip or os.environ.get(BLIP_ENV) or BLIP_WEIGHTS,
            "clip": clip or os.environ.get(CLIP_ENV) or CLIP_WEIGHTS,
            "owlv2": owlv2 or os.environ.get(OWLV2_ENV) or OWLV2_WEIGHTS,
        }
        self.device = device
        self._models: dict[str, Any] = {}

    def weights(self) -> list[Weights]:
        """The models the default scorers load: BLIP-VQA (attributes), CLIP (non_spatial), OWLv2 (spatial);
        complex uses all three. Config validation checks them before any run."""
        return [
            Weights("T2I-CompBench BLIP-VQA", self.weights_paths["blip"], BLIP_ENV),
            Weights("T2I-CompBench CLIP", self.weights_paths["clip"], CLIP_ENV),
            Weights("T2I-CompBench detector (OWLv2)", self.weights_paths["owlv2"], OWLV2_ENV),
        ]

    def applies(self, meta: dict[str, Any]) -> bool:
        category = meta.get("category")
        return meta.get("benchmark") == self.name and (category in self.scorers or category in DEFAULT_SCORED)

    def _model(self, kind: str) -> Any:
        # Built on first use and shared between categories (complex reuses all three).
        if kind not in self._models:
            from .vision import BlipVqa, ClipEncoder, Owlv2Detector

            path = self.weights_paths[kind]
            self._models[kind] = {
                "blip": lambda: BlipVqa(path, self.device),
                "clip": lambda: ClipEncoder(path, "T2I-CompBench CLIP similarity", self.device),
                "owlv2": lambda: Owlv2Detector(path, self.device),
            }[kind]()
        return self._models[kind]

    def scorer(self, category: str) -> CategoryScorer:
        if category not in self.scorers:
            if category in ATTRIBUTE_CATEGORIES:
                self.scorers[category] = AttributeVqaScorer(self._model("blip"))
            elif category == "non_spatial":
                self.scorers[category] = ClipSimilarityScorer(self._model("clip"))
            elif category == "spatial":
                self.scorers[category] = SpatialScorer(self._model("owlv2"))
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
        from models.shapes.benchmark import geneval_accuracy

        return geneval_accuracy(results, prompts=prompts, tasks=CATEGORIES)
