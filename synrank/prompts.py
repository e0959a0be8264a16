"""Prompt corpora -> one clean, de-duplicated list of prompts, plus a report of what was skipped.

Real prompt files are messy (blank lines, stray Latin-1 bytes, half-written JSONL), and one bad line
must not sink a run, so every line is judged on its own and counted under the reason it was dropped.
Files are read as bytes so that a non-UTF-8 line costs that line, not the whole file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synrank.config import ROOT, PromptSource

SKIP_REASONS = ("empty", "duplicate", "bad_utf8", "malformed")
COUNT_KEYS = ("good", *SKIP_REASONS)
BOM = b"\xef\xbb\xbf"

Parsed = tuple[str, str | None, str]  # prompt, category, meta as a JSON string
Parser = Callable[[str], Parsed | None]


class Malformed(ValueError):
    """One line that cannot be read as its format's record."""


@dataclass
class Prompts:
    rows: list[dict[str, Any]] = field(default_factory=list)  # prompt, category, source, meta
    report: dict[str, Any] = field(default_factory=dict)


def prompt_id(prompt: str) -> str:
    """Stable across runs and machines, so downstream stages can key images and scores by it."""
    return hashlib.sha1(prompt.encode("utf-8")).hexdigest()[:12]


def source_path(path: str | Path, root: Path = ROOT) -> Path:
    p = Path(path)
    return p if p.is_absolute() else root / p


def _lines(path: Path) -> Iterator[bytes]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"prompt source '{path}' does not exist") from None
    yield from raw.removeprefix(BOM).splitlines()


def _json_object(text: str) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except ValueError as err:
        raise Malformed(f"not JSON: {err}") from None
    if not isinstance(obj, dict):
        raise Malformed("not a JSON object")
    return obj


def _prompt_field(obj: dict[str, Any]) -> str:
    prompt = obj.get("prompt")
    if not isinstance(prompt, str):
        raise Malformed("no string 'prompt' field")
    return prompt


def detect_format(path: Path) -> str:
    """'auto' -> a concrete format, by file name and, for .jsonl, by the first object's keys."""
    if path.name == "evaluation_metadata.jsonl":
        return "geneval"
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        for line in _lines(path):
            try:
                obj = _json_object(line.decode("utf-8"))
            except (UnicodeDecodeError, Malformed):
                continue
            return "geneval" if "tag" in obj and "include" in obj else "jsonl"
        return "jsonl"
    if suffix == ".tsv":
        return "partiprompts"
    return "text"


# Each parser turns one decoded, non-blank line into (prompt, category, meta-JSON) or raises Malformed.
def _parse_text(text: str) -> Parsed:
    return text, None, "{}"


def _parse_jsonl(text: str) -> Parsed:
    obj = _json_object(text)
    prompt = _prompt_field(obj)
    rest = {k: v for k, v in obj.items() if k != "prompt"}
    category = rest.get("category") if isinstance(rest.get("category"), str) else None
    return prompt, category, json.dumps(rest, ensure_ascii=False)


def _parse_geneval(text: str) -> Parsed:
    obj = _json_object(text)
    prompt = _prompt_field(obj)
    # GenEval's scorer needs tag and include; a line without them cannot be evaluated.
    if not isinstance(obj.get("tag"), str) or not isinstance(obj.get("include"), list):
        raise Malformed("GenEval line without 'tag' or 'include'")
    return prompt, obj["tag"], json.dumps(obj, ensure_ascii=False)


class _PartiParser:
    """PartiPrompts TSV: the first line names the columns; quotes are literal text, not CSV quoting."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.columns: list[str] | None = None

    def __call__(self, text: str) -> Parsed | None:
        cells = text.split("\t")
        if self.columns is None:  # the header line yields no prompt
            self.columns = [c.strip() for c in cells]
            if "Prompt" not in self.columns:
                raise ValueError(f"'{self.path}': PartiPrompts header without a 'Prompt' column: {text!r}")
            return None
        if len(cells) > len(self.columns):
            raise Malformed("more cells than header columns")
        # Editors often strip trailing tabs, so missing trailing cells are read as empty.
        record = dict(zip(self.columns, cells + [""] * (len(self.columns) - len(cells))))
        prompt = record.pop("Prompt")
        category = record.pop("Category", "").strip() or None
        return prompt, category, json.dumps(record, ensure_ascii=False)


def _parser(fmt: str, path: Path) -> Parser:
    return {"text": _parse_text, "jsonl": _parse_jsonl, "geneval": _parse_geneval}.get(fmt) or _PartiParser(path)


def _read_one(src: PromptSource, path: Path, seen: set[tuple[str, str]], out: list[dict[str, Any]]) -> dict[str, Any]:
    fmt = detect_format(path) if src.format == "auto" else src.format
    parse = _parser(fmt, path)
    counts = dict.fromkeys(COUNT_KEYS, 0)
    # A benchmark list pinned to eval may repeat training prompts on purpose (its images get their own
    # seeds); duplicates are judged within it, and separately within everything else.
    group = "eval" if src.split == "eval" else "pool"
    for line in _lines(path):
        if src.limit is not None and counts["good"] >= src.limit:
            break  # the rest of the file is not wanted, so it is not judged either
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            counts["bad_utf8"] += 1
            continue
        if not text.strip():
            counts["empty"] += 1
            continue
        try:
            parsed = parse(text)
        except Malformed:
            counts["malformed"] += 1
            continue
        if parsed is None:
            continue
        prompt, category, meta = parsed
        prompt = prompt.strip()
        if not prompt:
            counts["empty"] += 1
        elif (group, prompt) in seen:
            counts["duplicate"] += 1
        else:
            seen.add((group, prompt))
            out.append({"prompt": prompt, "category": category, "source": src.path, "meta": meta,
                        "split": src.split})
            counts["good"] += 1
    return {"path": src.path, "format": fmt, **counts}


def read_sources(sources: list[PromptSource], root: Path = ROOT) -> Prompts:
    """Read every source in order; a prompt already seen in an earlier line or source is a duplicate,
    except that eval-pinned sources are judged only against each other (`also_in_train` counts their
    prompts that the other sources contain too)."""
    result = Prompts(report={"sources": {}})
    seen: set[tuple[str, str]] = set()
    for src in sources:
        one = _read_one(src, source_path(src.path, root), seen, result.rows)
        key, n = src.path, 1
        while key in result.report["sources"]:  # the same file listed twice keeps both reports
            n += 1
            key = f"{src.path}#{n}"
        result.report["sources"][key] = one
    for k in COUNT_KEYS:
        result.report[k] = sum(s[k] for s in result.report["sources"].values())
    result.report["also_in_train"] = sum(("eval", p) in seen for g, p in seen if g == "pool")
    return result


def split(rows: list[dict[str, Any]], eval_fraction: float, seed: int) -> list[str]:
    """'train'/'eval' per row. The permutation orders rows by a seeded hash of the prompt, so it is
    the same on every machine and Python version and a prompt keeps its side when others are added.
    Rows from a source pinned to a split keep it and take no part in the draw."""
    pinned = {i: r["split"] for i, r in enumerate(rows) if r.get("split", "auto") != "auto"}
    if pinned:
        free = [i for i in range(len(rows)) if i not in pinned]
        drawn = dict(zip(free, split([rows[i] for i in free], eval_fraction, seed)))
        return [pinned.get(i) or drawn[i] for i in range(len(rows))]
    n = len(rows)
    n_eval = round(n * eval_fraction)
    if eval_fraction > 0 and n >= 2:
        n_eval = max(n_eval, 1)
    n_eval = min(n_eval, max(n - 1, 0))  # keep at least one training prompt
    order = sorted(range(n), key=lambda i: (hashlib.sha1(f"{seed}:{rows[i]['prompt']}".encode()).digest(), i))
    eval_idx = set(order[:n_eval])
    return ["eval" if i in eval_idx else "train" for i in range(n)]
