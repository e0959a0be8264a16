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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synrank.config import ROOT, PromptSource, SampleConfig

# The one list of reasons a line is dropped; reports and the stage's summary show every one of them.
# bad_unicode: text that decodes but cannot be written back as UTF-8 (a JSON "\ud800" escape);
# other_category: a good line whose category the source's `categories` does not list.
SKIP_REASONS = ("empty", "duplicate", "bad_utf8", "malformed", "bad_unicode", "too_long", "other_category")
COUNT_KEYS = ("good", *SKIP_REASONS)
BOM = "\ufeff"
FOLDER_FORMATS = ("t2i-compbench", "dpg-bench")  # the source formats whose path may be a folder
DEFAULT_MAX_PROMPT_CHARS: int = SampleConfig.model_fields["max_prompt_chars"].default

# Line-ish whitespace becomes a space (a prompt is one line); every other C0/C1 control and every BOM
# (files glued together keep theirs mid-file) disappear, so they neither reach a prompt nor split duplicates.
_SPACES = "\t\n\v\f\r\x85\u2028\u2029"
_CLEAN: dict[int, str | None] = dict.fromkeys((*range(0x20), *range(0x7F, 0xA0), ord(BOM)))
_CLEAN.update({ord(c): " " for c in _SPACES})

Parsed = tuple[str, str | None, str]  # prompt, category, meta as a JSON string
Parser = Callable[[str], Parsed | None]


class Malformed(ValueError):
    """One line that cannot be read as its format's record."""


@dataclass
class Prompts:
    rows: list[dict[str, Any]] = field(default_factory=list)  # prompt, category, source, meta
    report: dict[str, Any] = field(default_factory=dict)


def prompt_id(prompt: str) -> str:
    """Stable across runs and machines, so downstream stages can key images and scores by it.
    surrogatepass: the same bytes as plain UTF-8 for every valid string, and no crash on a lone surrogate."""
    return hashlib.sha1(prompt.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def clean(text: str) -> str:
    """The normal form prompts are kept and de-duplicated in: controls and BOMs out, ends stripped.
    Inner spaces are left as they are, so benchmark prompts stay byte-identical to their files."""
    return text.translate(_CLEAN).strip()


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
    p = Path(path)
    return p if p.is_absolute() else root / p


def _lines(path: Path) -> Iterator[bytes]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"prompt source '{path}' does not exist") from None
    yield from raw.splitlines()


def _decode(line: bytes) -> str:
    """UTF-8 text without BOMs (raises UnicodeDecodeError, which costs the line as bad_utf8)."""
    return line.decode("utf-8").replace(BOM, "")


def _json_object(text: str) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as err:  # RecursionError: nesting deeper than the stack
        raise Malformed(f"not JSON: {type(err).__name__}") from None
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
                obj = _json_object(_decode(line))
            except (UnicodeDecodeError, Malformed):
                continue
            return "geneval" if "tag" in obj and "include" in obj else "jsonl"
        return "jsonl"
    if suffix == ".tsv":
        return "partiprompts"
    return "text"


# Each parser turns one decoded, non-blank, BOM-free line into (prompt, category, meta-JSON) or raises
# Malformed.
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
    """PartiPrompts TSV: the first line names the columns; quotes are literal text, not CSV quoting.
    The header is not a prompt line and is not counted; a header without a 'Prompt' column is
    malformed, and so is every line after it, since their cells cannot be named."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.columns: list[str] | None = None

    def __call__(self, text: str) -> Parsed | None:
        cells = text.split("\t")
        if self.columns is None:  # the header line yields no prompt
            self.columns = [clean(c) for c in cells]
            if "Prompt" not in self.columns:
                raise Malformed("PartiPrompts header without a 'Prompt' column")
            return None
        if "Prompt" not in self.columns:
            raise Malformed("no 'Prompt' column in this file's header")
        if len(cells) > len(self.columns):
            raise Malformed("more cells than header columns")
        # Editors often strip trailing tabs, so missing trailing cells are read as empty.
        record = dict(zip(self.columns, cells + [""] * (len(self.columns) - len(cells))))
        prompt = record.pop("Prompt")
        category = record.pop("Category", "").strip() or None
        return prompt, category, json.dumps(record, ensure_ascii=False)


def _parser(fmt: str, path: Path) -> Parser:
    """The line parser of a one-file format (text, jsonl, geneval, partiprompts)."""
    return {"text": _parse_text, "jsonl": _parse_jsonl, "geneval": _parse_geneval}.get(fmt) or _PartiParser(path)


def _via(record: Callable[[str, str], Any], key: str) -> Parser:
    """A line parser that calls a benchmark adapter's `record(text, key)` (key: the T2I-CompBench category
    or the DPG-Bench item id) on the cleaned line, so the prompt in meta is the row's prompt. The record
    (models.benchmarks.common.BenchmarkPrompt) becomes (prompt, category, meta JSON). A blank record cannot
    reach it, since _judge drops blank text first, but would be malformed all the same."""

    def parse(text: str) -> Parsed:
        item = record(clean(text), key)
        if item is None:
            raise Malformed("blank benchmark record")
        return item.prompt, item.category, json.dumps(item.meta, ensure_ascii=False)

    return parse


def _records(fmt: str, path: Path) -> Iterator[tuple[bytes, Parser]]:
    """Each raw record of a source with the parser that reads it: a line of a file, or for dpg-bench the
    whole of each `<id>.txt` of the folder. The benchmark formats read through their adapters' own file
    listing and record functions (models/benchmarks/t2i_compbench.py, dpg_bench.py), so there is one
    reader per format. Raises FileNotFoundError for a missing source (or a benchmark folder without prompt
    files) and ValueError for a T2I-CompBench file name that names no category."""
    if fmt == "t2i-compbench":
        from models.benchmarks import t2i_compbench

        for f in t2i_compbench.prompt_files(path):
            parse = _via(t2i_compbench.record, t2i_compbench.category_of(f))
            yield from ((line, parse) for line in _lines(f))
    elif fmt == "dpg-bench":
        from models.benchmarks import dpg_bench

        for f in dpg_bench.prompt_files(path):  # one prompt per file: the whole file is one record
            yield f.read_bytes(), _via(dpg_bench.record, f.stem)
    else:
        parse = _parser(fmt, path)
        yield from ((line, parse) for line in _lines(path))


def _judge(line: bytes, parse: Parser, max_chars: int) -> Parsed | str | None:
    """One line -> (clean prompt, category, meta), None for a header, or the reason it is dropped.
    Duplicates are judged by the caller, which holds what was seen."""
    try:
        text = _decode(line)
    except UnicodeDecodeError:
        return "bad_utf8"
    if not clean(text):  # blank, or only NULs, controls and BOMs
        return "empty"
    try:
        parsed = parse(text)
    except (Malformed, RecursionError):  # RecursionError: a meta object too deep to re-serialise
        return "malformed"
    if parsed is None:
        return None
    prompt, category, meta = parsed
    if not _encodable(prompt, category, meta):
        return "bad_unicode"
    prompt = clean(prompt)
    if not prompt:
        return "empty"
    if len(prompt) > max_chars:
        return "too_long"
    return prompt, category, meta


def _read_one(
    src: PromptSource, path: Path, seen: set[tuple[str, str]], out: list[dict[str, Any]], max_chars: int
) -> dict[str, Any]:
    if path.is_dir() and src.format not in FOLDER_FORMATS:
        raise ValueError(
            f"prompt source '{path}' is a folder, but format '{src.format}' reads one file; "
            f"the formats that read a folder are {', '.join(FOLDER_FORMATS)}"
        )
    fmt = detect_format(path) if src.format == "auto" else src.format
    counts = dict.fromkeys(COUNT_KEYS, 0)
    # A benchmark list pinned to eval may repeat training prompts on purpose (its images get their own
    # seeds); duplicates are judged within it, and separately within everything else.
    group = "eval" if src.split == "eval" else "pool"
    found: set[str | None] = set()  # the categories the file holds, to name a mistyped filter entry
    for line, parse in _records(fmt, path):
        if src.limit is not None and counts["good"] >= src.limit:
            break  # the rest of the file is not wanted, so it is not judged either
        verdict = _judge(line, parse, max_chars)
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
