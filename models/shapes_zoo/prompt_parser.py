"""Prompts of the shapes grammar back to GenEval-schema specs (the inverse of specs.prompt_for).

    "a photo of two red circles"          -> include [{class: circle, count: 2, color: red}]
    "a photo of a star left of a ring"    -> include [{ring}, {star, position: [left of, 0]}]

A reward that reads prompts (the detector reward) needs the requirements back; anything outside
the grammar parses to None rather than to a guess.
"""

from __future__ import annotations

import re

from models.shapes.specs import COLORS, NUMBER_WORDS, PLURALS, RELATIONS, make_spec

PREFIX = "a photo of "
_SINGULAR = {plural: shape for shape, plural in PLURALS.items()}
_NUMBERS = {word: n for n, word in NUMBER_WORDS.items()}
_RELATION = re.compile(r" (" + "|".join(re.escape(r) for r in RELATIONS) + r") ")


def parse_noun_phrase(text: str) -> dict | None:
    """'an orange star' -> {class: star, count: 1, color: orange}; None if not of the grammar."""
    words = text.strip().split()
    if len(words) not in (2, 3):
        return None
    head, *rest = words
    if head in ("a", "an"):
        count, nouns = 1, {s: s for s in PLURALS}
    elif head in _NUMBERS and _NUMBERS[head] > 1:
        count, nouns = _NUMBERS[head], _SINGULAR
    else:
        return None
    color = None
    if len(rest) == 2:
        color, rest = rest[0], rest[1:]
        if color not in COLORS:
            return None
    if rest[0] not in nouns:
        return None
    item: dict = {"class": nouns[rest[0]], "count": count}
    if color:
        item["color"] = color
    return item


def _tag(include: list[dict]) -> str:
    if any("position" in it for it in include):
        return "position"
    if len(include) == 1:
        it = include[0]
        if it["count"] > 1:
            return "counting"
        return "colors" if "color" in it else "single_object"
    return "color_attr" if all("color" in it for it in include) else "two_object"


def parse_prompt(prompt: str) -> dict | None:
    """The spec a grammar prompt describes, with GenEval's keys; None for any other text."""
    text = prompt.strip().lower().rstrip(".")
    if not text.startswith(PREFIX):
        return None
    body = text[len(PREFIX) :]
    rel = _RELATION.search(body)
    if rel:
        moved, ref = parse_noun_phrase(body[: rel.start()]), parse_noun_phrase(body[rel.end() :])
        if moved is None or ref is None:
            return None
        # prompt_for names the positioned object first; GenEval's schema lists the reference first.
        moved["position"] = [rel.group(1), 0]
        include = [ref, moved]
    else:
        include = [parse_noun_phrase(p) for p in body.split(" and ")]
        if any(it is None for it in include):
            return None
    exclude = None
    if len(include) == 1 and include[0]["count"] > 1:
        exclude = [{"class": include[0]["class"], "count": include[0]["count"] + 1}]  # GenEval's counting form
    return make_spec(_tag(include), include, exclude)
