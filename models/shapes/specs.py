"""Vocabulary and seeded prompt grammar of the shapes world.

Specs follow GenEval's evaluation_metadata.jsonl schema exactly: keys `tag`, `include`, optional
`exclude`, `prompt`; include items carry `class`, `count` and optionally `color` or
`position: [relation, index]` (this object is <relation> the object at include[index]).
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Literal

import numpy as np

SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "diamond",
    "heart",
    "crescent",
    "pentagon",
)
PLURALS: dict[str, str] = {s: ("crosses" if s == "cross" else s + "s") for s in SHAPES}
# Saturated colors spread over hue and lightness so that they stay separable after blur and noise
# on the dark-gray background (see render.BACKGROUND); white is the only achromatic one. Pink and
# cyan sit off the background-to-white and background-to-blue lines, so unmixing keeps them apart.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (240, 230, 40),
    "green": (30, 190, 50),
    "blue": (40, 90, 240),
    "purple": (170, 50, 220),
    "white": (240, 240, 240),
    "pink": (250, 130, 200),
    "cyan": (40, 210, 220),
}
# The shapes world's colors (its palette's names). GenEval's own ten are another table:
# models.benchmarks.geneval.GENEVAL_COLORS.
COLORS: tuple[str, ...] = tuple(PALETTE)
# GenEval's four relations, the only definition: the shapes world speaks GenEval's spec schema.
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
OPPOSITE: dict[str, str] = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
NUMBER_WORDS: dict[int, str] = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
TASKS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
PROBE_TASK = "novel_binding"  # reported apart from the overall score (benchmark.geneval_accuracy)
# GenEval's counting prompts use 2..4 (a count of one is the single_object task).
COUNTING_RANGE: tuple[int, int] = (2, 4)
MAX_COUNT = 4
# Held-out prompts per task (single_object's whole prompt space is the 10 shapes: it is shared with train).
EVAL_PER_TASK = 60
PROBE_COLOR_ATTR = 40  # color_attr prompts of the novel-binding probe
HOLDOUT_SEED = 20261130

Split = Literal["train", "eval", "probe"]
SPLITS: tuple[str, ...] = ("train", "eval", "probe")


def _reserved() -> frozenset[tuple[str, str]]:
    # One pairing per shape for half the shapes, on a diagonal, so that every color and every shape
    # keeps most of its pairings in training: the novel-binding probe (never drawn, never prompted).
    return frozenset((COLORS[(2 * i) % len(COLORS)], SHAPES[i]) for i in range(0, len(SHAPES), 2))


# 5 of the 90 (color, shape) pairings are withheld from all training for the novel-binding probe.
RESERVED: frozenset[tuple[str, str]] = _reserved()


def is_reserved(color: str, shape: str) -> bool:
    """Whether (color, shape) is withheld for the novel-binding probe."""
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


def _pick(rng: np.random.Generator, seq: list | tuple):
    return seq[int(rng.integers(len(seq)))]


def _uses_reserved(spec: dict) -> bool:
    return any(is_reserved(c, s) for c, s in spec_combos(spec))


def task_space(tag: str) -> list[dict]:
    """Every spec of a task, in a fixed order, none naming a reserved pairing. Sizes with 10 shapes,
    9 colors and counts 2-4: single_object 10, two_object 90, counting 285 (each count with or without
    a color), colors 85, position 360, color_attr 5,780."""
    if tag == "single_object":
        out = [make_spec(tag, [_item(s)]) for s in SHAPES]
    elif tag == "two_object":
        out = [make_spec(tag, [_item(a), _item(b)]) for a in SHAPES for b in SHAPES if a != b]
    elif tag == "counting":
        out = [
            make_spec(tag, [_item(s, n, c)], [_item(s, n + 1)])
            for s in SHAPES
            for n in range(COUNTING_RANGE[0], COUNTING_RANGE[1] + 1)
            for c in (None, *COLORS)
        ]
    elif tag == "colors":
        out = [make_spec(tag, [_item(s, 1, c)]) for s in SHAPES for c in COLORS]
    elif tag == "position":
        out = []
        for ref in SHAPES:
            for obj in SHAPES:
                for rel in RELATIONS if obj != ref else ():
                    moved = _item(obj)
                    moved["position"] = [rel, 0]
                    out.append(make_spec(tag, [_item(ref), moved]))
    elif tag == "color_attr":  # distinct shapes and distinct colors, as in GenEval's color_attr
        combos = [(c, s) for s in SHAPES for c in COLORS]
        out = [
            make_spec(tag, [_item(s1, 1, c1), _item(s2, 1, c2)])
            for c1, s1 in combos
            for c2, s2 in combos
            if s1 != s2 and c1 != c2
        ]
    else:
        raise ValueError(f"unknown task tag {tag!r}; known: {TASKS}")
    return [s for s in out if not _uses_reserved(s)]


@cache
def heldout_specs() -> dict[str, tuple[dict, ...]]:
    """The benchmark's prompts: per task, EVAL_PER_TASK specs drawn without replacement from the task's
    space with a fixed seed (single_object: the whole space). No other split ever prompts them."""
    rng = np.random.default_rng(HOLDOUT_SEED)
    out = {}
    for tag in TASKS:
        space = task_space(tag)
        if tag == "single_object":
            out[tag] = tuple(space)
            continue
        order = rng.permutation(len(space))[:EVAL_PER_TASK]
        out[tag] = tuple(space[int(i)] for i in sorted(order))
    return out


@cache
def heldout_prompts() -> frozenset[str]:
    """Prompts of the held-out benchmark that training never sees (single_object's shared ones excluded)."""
    return frozenset(s["prompt"] for tag, specs in heldout_specs().items() if tag != "single_object" for s in specs)


@cache
def probe_specs() -> tuple[dict, ...]:
    """The novel-binding probe: each reserved pairing as a colors prompt, and PROBE_COLOR_ATTR color_attr
    prompts that pair one reserved combination with a trained one. Tag: PROBE_TASK."""
    colors = [make_spec(PROBE_TASK, [_item(s, 1, c)]) for c, s in sorted(RESERVED)]
    pairs = []
    for c1, s1 in sorted(RESERVED):
        for s2 in SHAPES:
            for c2 in COLORS:
                if s2 != s1 and c2 != c1 and not is_reserved(c2, s2):
                    pairs.append(make_spec(PROBE_TASK, [_item(s1, 1, c1), _item(s2, 1, c2)]))
    rng = np.random.default_rng(HOLDOUT_SEED + 1)
    chosen = sorted(rng.permutation(len(pairs))[:PROBE_COLOR_ATTR])
    return tuple(colors + [pairs[int(i)] for i in chosen])


@cache
def train_space(tag: str) -> tuple[dict, ...]:
    """A task's specs that training may use: its space minus the held-out ones. Cached (color_attr has
    5,720): callers must not mutate the specs (sample_spec hands out copies)."""
    held = heldout_prompts()
    return tuple(s for s in task_space(tag) if s["prompt"] not in held)


def sample_spec(tag: str, rng: np.random.Generator, split: Split = "train") -> dict:
    """One spec of the given task: train specs are uniform over the task's train space; eval specs are
    drawn from the held-out benchmark prompts; probe specs from the novel-binding probe (tag ignored)."""
    if tag not in TASKS:
        raise ValueError(f"unknown task tag {tag!r}; known: {TASKS}")
    if split == "train":
        return copy.deepcopy(_pick(rng, train_space(tag)))
    if split == "eval":
        return copy.deepcopy(_pick(rng, heldout_specs()[tag]))
    if split == "probe":
        return copy.deepcopy(_pick(rng, probe_specs()))
    raise ValueError(f"split must be one of {SPLITS}, not {split!r}")


def make_specs(n: int, seed: int, split: Split = "train") -> list[dict]:
    """`n` specs, the six tasks in equal shares (±1), in a seeded shuffled order."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    # Distinct streams per split so train and eval sets differ for the same seed.
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    tags = [TASKS[i % len(TASKS)] for i in range(n)]
    order = rng.permutation(n)
    return [sample_spec(tags[int(i)], rng, split) for i in order]


def spec_combos(spec: dict) -> list[tuple[str, str]]:
    """The (color, shape) combinations a spec names."""
    return [(it["color"], it["class"]) for it in spec["include"] if "color" in it]


def task_order(found: set[str]) -> list[str]:
    """GenEval's task order first, then any other task alphabetically."""
    return [t for t in TASKS if t in found] + sorted(found - set(TASKS))
