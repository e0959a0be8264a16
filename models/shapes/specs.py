"""Vocabulary and seeded prompt grammar of the shapes world.

Specs follow GenEval's evaluation_metadata.jsonl schema exactly: keys `tag`, `include`, optional
`exclude`, `prompt`; include items carry `class`, `count` and optionally `color` or
`position: [relation, index]` (this object is <relation> the object at include[index]).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring")
PLURALS: dict[str, str] = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "star": "stars",
    "cross": "crosses",
    "ring": "rings",
}
# Saturated colors spread over hue and lightness so that they stay separable after blur and noise
# on the dark-gray background (see render.BACKGROUND); white is the only achromatic one.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (240, 230, 40),
    "green": (30, 190, 50),
    "blue": (40, 90, 240),
    "purple": (170, 50, 220),
    "white": (240, 240, 240),
}
COLORS: tuple[str, ...] = tuple(PALETTE)
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
OPPOSITE: dict[str, str] = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
NUMBER_WORDS: dict[int, str] = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
TASKS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
# GenEval's counting prompts use 2..4 (a count of one is the single_object task).
COUNTING_RANGE: tuple[int, int] = (2, 4)
MAX_COUNT = 4

Split = Literal["train", "eval"]


def _reserved() -> frozenset[tuple[str, str]]:
    # Fixed rule, a cyclic design: every shape loses exactly two colors and every color keeps
    # most of its shapes, so each attribute and each object is still seen in training.
    out = set()
    for i, shape in enumerate(SHAPES):
        for j, color in enumerate(COLORS):
            if (j - i) % len(COLORS) in (0, 3):
                out.add((color, shape))
    return frozenset(out)


# 12 of the 42 (color, shape) combinations are held out for evaluation.
RESERVED: frozenset[tuple[str, str]] = _reserved()


def is_reserved(color: str, shape: str) -> bool:
    return (color, shape) in RESERVED


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def noun_phrase(item: dict) -> str:
    """'a red circle', 'an orange star', 'two squares'."""
    count = int(item["count"])
    color = item.get("color")
    noun = item["class"] if count == 1 else PLURALS[item["class"]]
    words = f"{color} {noun}" if color else noun
    if count == 1:
        return f"{_article(words)} {words}"
    return f"{NUMBER_WORDS[count]} {words}"


def prompt_for(spec: dict) -> str:
    """GenEval's phrasing; the position task names the positioned object first."""
    inc = spec["include"]
    for item in inc:
        if "position" in item:
            rel, ref = item["position"]
            return f"a photo of {noun_phrase(item)} {rel} {noun_phrase(inc[ref])}"
    return "a photo of " + " and ".join(noun_phrase(item) for item in inc)


def make_spec(tag: str, include: list[dict], exclude: list[dict] | None = None) -> dict:
    """Assemble a spec with GenEval's key order and a prompt generated from its content."""
    spec: dict = {"tag": tag, "include": include}
    if exclude:
        spec["exclude"] = exclude
    spec["prompt"] = prompt_for(spec)
    return spec


def _item(shape: str, count: int = 1, color: str | None = None) -> dict:
    item: dict = {"class": shape, "count": count}
    if color is not None:
        item["color"] = color
    return item


def _combos(split: Split) -> list[tuple[str, str]]:
    everything = [(c, s) for s in SHAPES for c in COLORS]
    return [x for x in everything if not is_reserved(*x)] if split == "train" else everything


def _pick(rng: np.random.Generator, seq: list | tuple):
    return seq[int(rng.integers(len(seq)))]


def _two_shapes(rng: np.random.Generator) -> tuple[str, str]:
    a, b = rng.choice(len(SHAPES), size=2, replace=False)
    return SHAPES[int(a)], SHAPES[int(b)]


def _colored_pair(rng: np.random.Generator, split: Split) -> tuple[tuple[str, str], tuple[str, str]]:
    pool = _combos(split)
    while True:  # distinct shapes and distinct colors, as in GenEval's color_attr
        (c1, s1), (c2, s2) = _pick(rng, pool), _pick(rng, pool)
        if s1 == s2 or c1 == c2:
            continue
        if split == "eval" and not (is_reserved(c1, s1) or is_reserved(c2, s2)):
            continue
        return (c1, s1), (c2, s2)


def sample_spec(tag: str, rng: np.random.Generator, split: Split = "train") -> dict:
    """One spec of the given task. Eval color tasks always contain a reserved combination."""
    if tag == "single_object":
        return make_spec(tag, [_item(_pick(rng, SHAPES))])
    if tag == "two_object":
        a, b = _two_shapes(rng)
        return make_spec(tag, [_item(a), _item(b)])
    if tag == "counting":
        shape = _pick(rng, SHAPES)
        n = int(rng.integers(COUNTING_RANGE[0], COUNTING_RANGE[1] + 1))
        return make_spec(tag, [_item(shape, n)], [_item(shape, n + 1)])
    if tag == "colors":
        pool = _combos(split) if split == "train" else sorted(RESERVED)
        color, shape = _pick(rng, pool)
        return make_spec(tag, [_item(shape, 1, color)])
    if tag == "position":
        ref, obj = _two_shapes(rng)
        moved = _item(obj)
        moved["position"] = [_pick(rng, RELATIONS), 0]
        return make_spec(tag, [_item(ref), moved])
    if tag == "color_attr":
        (c1, s1), (c2, s2) = _colored_pair(rng, split)
        return make_spec(tag, [_item(s1, 1, c1), _item(s2, 1, c2)])
    raise ValueError(f"unknown task tag {tag!r}")


def make_specs(n: int, seed: int, split: Split = "train") -> list[dict]:
    """`n` specs, the six tasks in equal shares (±1), in a seeded shuffled order."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', not {split!r}")
    # Distinct streams per split so train and eval sets differ for the same seed.
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    tags = [TASKS[i % len(TASKS)] for i in range(n)]
    order = rng.permutation(n)
    return [sample_spec(tags[int(i)], rng, split) for i in order]


def spec_combos(spec: dict) -> list[tuple[str, str]]:
    """The (color, shape) combinations a spec names."""
    return [(it["color"], it["class"]) for it in spec["include"] if "color" in it]
