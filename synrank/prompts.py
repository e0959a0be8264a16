"""Prompt corpora -> one clean, de-duplicated list of prompts, plus a report of what was skipped.

Real prompt files are messy (blank lines, stray Latin-1 bytes, half-written JSONL), and one bad line
must not sink a run, so every line is judged on its own and counted under the reason it was dropped.
Files are read as bytes so that a non-UTF-8 line costs that line, not the whole file, and no line
can crash the stage: deep JSON, lone surrogates, NUL runs, stray BOMs and runaway lengths are each
dropped and counted too (tests/test_prompt_readers.py throws random bytes at every format).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synrank.config import ROOT, PromptSource, SampleConfig
from synrank.prompt_formats import Malformed, RecordReader, check_folder_format, clean, decode, detect_format, records

# The one list of reasons a line is dropped; reports and the stage's summary show every one of them.
# bad_unicode: text that decodes but cannot be written back as UTF-8 (a JSON "\ud800" escape);
# other_category: a good line whose category the source's `categories` does not list.
SKIP_REASONS = ("empty", "duplicate", "bad_utf8", "malformed", "bad_unicode", "too_long", "other_category")
COUNT_KEYS = ("good", *SKIP_REASONS)
DEFAULT_MAX_PROMPT_CHARS: int = SampleConfig.model_fields["max_prompt_chars"].default

Judged = tuple[str, str | None, str]  # clean prompt, category, meta as a JSON string


@dataclass
class Prompts:
    """The sample stage's reading: rows (prompt, category, source, meta JSON, split) and the skip report."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)


def prompt_id(prompt: str) -> str:
    """Stable across runs and machines, so downstream stages can key images and scores by it.
    surrogatepass: the same bytes as plain UTF-8 for every valid string, and no crash on a lone surrogate."""
    return hashlib.sha1(prompt.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def _encodable(*texts: str | None) -> bool:
    """Parquet and sha1 need UTF-8; a lone surrogate from a JSON escape cannot be written as UTF-8."""
    try:
        for t in texts:
            if t is not None:
                t.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def source_path(path: str | Path, root: Path = ROOT) -> Path:
    """A source's path as configured: absolute as is, relative to `root` (the project root) otherwise."""
    p = Path(path)
    return p if p.is_absolute() else root / p


def _judge(line: bytes, read: RecordReader, max_chars: int) -> Judged | str | None:
    """One raw record -> (clean prompt, category, meta JSON), None for a header, or the reason it is dropped.
    Duplicates are judged by the caller, which holds what was seen."""
    try:
        text = decode(line)
    except UnicodeDecodeError:
        return "bad_utf8"
    if not clean(text):  # blank, or only NULs, controls and BOMs
        return "empty"
    try:
        parsed = read(text)
        if parsed is None:
            return None
        prompt, category, meta = parsed
        meta_json = json.dumps(meta, ensure_ascii=False)
    except (Malformed, RecursionError):  # RecursionError: a meta object too deep to re-serialise
        return "malformed"
    if not _encodable(prompt, category, meta_json):
        return "bad_unicode"
    prompt = clean(prompt)
    if not prompt:
        return "empty"
    if len(prompt) > max_chars:
        return "too_long"
    return prompt, category, meta_json


def _read_one(
    src: PromptSource, path: Path, seen: set[tuple[str, str]], out: list[dict[str, Any]], max_chars: int
) -> dict[str, Any]:
    check_folder_format(path, src.format)
    fmt = detect_format(path) if src.format == "auto" else src.format
    counts = dict.fromkeys(COUNT_KEYS, 0)
    # A benchmark list pinned to eval may repeat training prompts on purpose (its images get their own
    # seeds); duplicates are judged within it, and separately within everything else.
    group = "eval" if src.split == "eval" else "pool"
    found: set[str | None] = set()  # the categories the file holds, to name a mistyped filter entry
    for _, line, read in records(fmt, path):
        if src.limit is not None and counts["good"] >= src.limit:
            break  # the rest of the file is not wanted, so it is not judged either
        verdict = _judge(line, read, max_chars)
        if verdict is None:
            continue
        if isinstance(verdict, str):
            counts[verdict] += 1
            continue
        prompt, category, meta = verdict
        found.add(category)
        if src.categories and category not in src.categories:
            counts["other_category"] += 1
        elif (group, prompt) in seen:
            counts["duplicate"] += 1
        else:
            seen.add((group, prompt))
            out.append({"prompt": prompt, "category": category, "source": src.path, "meta": meta, "split": src.split})
            counts["good"] += 1
    stopped_early = src.limit is not None and counts["good"] >= src.limit
    if (missing := [c for c in src.categories if c not in found]) and not stopped_early:
        raise ValueError(
            f"prompt source '{src.path}': no line has category {', '.join(map(repr, missing))}; "
            f"its categories are {', '.join(sorted(map(str, found - {None}))) or 'none'}"
        )
    return {"path": src.path, "format": fmt, **counts}


def read_sources(
    sources: list[PromptSource], root: Path = ROOT, max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS
) -> Prompts:
    """Read every source in order; a prompt already seen in an earlier line or source is a duplicate,
    except that eval-pinned sources are judged only against each other (`also_in_train` counts their
    prompts that the other sources contain too). Each line is good or counted under one SKIP_REASONS
    entry (a PartiPrompts header is neither); prompts longer than max_prompt_chars are too_long; with
    `categories`, the other categories' lines are other_category.

    Formats: text (a prompt a line), jsonl ({"prompt": ..., "category"?: ...}), geneval
    (evaluation_metadata.jsonl), partiprompts (TSV), t2i-compbench (`<category>_val.txt` /
    `<category>_train.txt`, a prompt a line, category from the file name; or a folder of `*_val.txt`) and
    dpg-bench (a folder of `<id>.txt`, a prompt each, in id order; a whole file is one record).
    Raises FileNotFoundError for a missing source and ValueError for a folder given in a format outside
    FOLDER_FORMATS, a T2I-CompBench file name that names no category, a `categories` entry that
    no line of its source has, or max_prompt_chars < 1."""
    if max_prompt_chars < 1:
        raise ValueError(f"max_prompt_chars must be at least 1, got {max_prompt_chars}")
    result = Prompts(report={"sources": {}})
    seen: set[tuple[str, str]] = set()
    for src in sources:
        one = _read_one(src, source_path(src.path, root), seen, result.rows, max_prompt_chars)
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
    order = sorted(
        range(n),
        key=lambda i: (hashlib.sha1(f"{seed}:{rows[i]['prompt']}".encode("utf-8", "surrogatepass")).digest(), i),
    )
    eval_idx = set(order[:n_eval])
    return ["eval" if i in eval_idx else "train" for i in range(n)]
