"""One reader per prompt-file format, shared by the sample stage (synrank.prompts) and the benchmark
prompt adapters (models/benchmarks/): what a line (or file) of each format holds, and how a source is
walked record by record.

Formats: text (a prompt a line), jsonl ({"prompt": ..., "category"?: ...} a line), geneval
(GenEval's evaluation_metadata.jsonl, Ghosh et al. 2023), partiprompts (PartiPrompts.tsv, Yu et al.
2022), t2i-compbench (`<category>_val.txt` files, Huang et al. 2023) and dpg-bench (a folder of
`<item_id>.txt`, one prompt each, plus the questions CSV `dpg_bench.csv`; ELLA, Hu et al. 2024).

A record reader turns one decoded, BOM-free, non-blank record into (prompt, category, meta) or raises
Malformed; it does not judge (clean, de-duplicate, cap length): the sample stage does, leniently, by
counting each bad line under a reason, and `read_strict` does for the adapters, by raising. Files are
split into lines as bytes (b"\\n", b"\\r\\n", b"\\r"), so that a non-UTF-8 line costs that line only.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

BOM = "\ufeff"
FOLDER_FORMATS = ("t2i-compbench", "dpg-bench")  # the source formats whose path may be a folder

# Line-ish whitespace becomes a space (a prompt is one line); every other C0/C1 control and every BOM
# (files glued together keep theirs mid-file) disappear, so they neither reach a prompt nor split duplicates.
_SPACES = "\t\n\v\f\r\x85\u2028\u2029"
_CLEAN: dict[int, str | None] = dict.fromkeys((*range(0x20), *range(0x7F, 0xA0), ord(BOM)))
_CLEAN.update({ord(c): " " for c in _SPACES})

# T2I-CompBench's eight categories, in the order a folder's files are read.
T2I_CATEGORIES: tuple[str, ...] = (
    "color",
    "shape",
    "texture",
    "spatial",
    "non_spatial",
    "complex",
    "numeracy",
    "3d_spatial",
)
T2I_SUFFIX = "_val.txt"
# <category>, then _train or _val and an optional variant (complex_val_spatial), then .txt.
_T2I_FILE = re.compile(
    rf"^({'|'.join(sorted(T2I_CATEGORIES, key=len, reverse=True))})(?:_(?:train|val)(?:_\w+)?)?\.txt$"
)

Parsed = tuple[str, str | None, dict[str, Any]]  # prompt, category, meta
RecordReader = Callable[[str], Parsed | None]


class Malformed(ValueError):
    """One record that cannot be read as its format's record."""


def clean(text: str) -> str:
    """The normal form prompts are kept and de-duplicated in: controls and BOMs out, ends stripped.
    Inner spaces are left as they are, so benchmark prompts stay byte-identical to their files."""
    return text.translate(_CLEAN).strip()


def decode(raw: bytes) -> str:
    """UTF-8 text without BOMs; raises UnicodeDecodeError, which costs the record (bad_utf8)."""
    return raw.decode("utf-8").replace(BOM, "")


def file_lines(path: Path) -> Iterator[bytes]:
    """The file's lines as bytes, without their ends; FileNotFoundError naming a missing source."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"prompt source '{path}' does not exist") from None
    yield from raw.splitlines()


def json_object(text: str) -> dict[str, Any]:
    """One JSON object; Malformed for anything else, including nesting deeper than the stack."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise Malformed(f"not JSON: {type(err).__name__}") from None
    if not isinstance(obj, dict):
        raise Malformed("not a JSON object")
    return obj


def _prompt_field(obj: dict[str, Any]) -> str:
    prompt = obj.get("prompt")
    if not isinstance(prompt, str):
        raise Malformed("no string 'prompt' field")
    return prompt


def check_folder_format(path: Path, fmt: str) -> None:
    """ValueError if `path` is a folder and format `fmt` reads one file (FOLDER_FORMATS read folders)."""
    if path.is_dir() and fmt not in FOLDER_FORMATS:
        raise ValueError(
            f"'{path}' is a folder, but format '{fmt}' reads one file; the formats that read a folder are "
            f"{', '.join(FOLDER_FORMATS)}"
        )


def detect_format(path: Path) -> str:
    """'auto' -> a concrete format, by file name and, for .jsonl, by the first object's keys
    (GenEval's `tag` and `include`). FileNotFoundError for a missing .jsonl file."""
    if path.name == "evaluation_metadata.jsonl":
        return "geneval"
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        for line in file_lines(path):
            try:
                obj = json_object(decode(line))
            except (UnicodeDecodeError, Malformed):
                continue
            return "geneval" if "tag" in obj and "include" in obj else "jsonl"
        return "jsonl"
    if suffix == ".tsv":
        return "partiprompts"
    return "text"


def read_text_line(text: str) -> Parsed:
    """A text line is its prompt, with no category and empty meta."""
    return text, None, {}


def read_jsonl_line(text: str) -> Parsed:
    """{"prompt": str, "category"?: str, ...}: meta is every other field; a non-string category is ignored."""
    obj = json_object(text)
    prompt = _prompt_field(obj)
    meta = {k: v for k, v in obj.items() if k != "prompt"}
    category = meta.get("category") if isinstance(meta.get("category"), str) else None
    return prompt, category, meta


def read_geneval_line(text: str) -> Parsed:
    """A GenEval spec: (prompt, tag, the whole object). GenEval's scorer needs `tag` and `include`, so a
    line without a string tag and an include list is Malformed (the GenEval adapter checks the rest)."""
    obj = json_object(text)
    prompt = _prompt_field(obj)
    if not isinstance(obj.get("tag"), str) or not isinstance(obj.get("include"), list):
        raise Malformed("GenEval line without 'tag' or 'include'")
    return prompt, obj["tag"], obj


def partiprompts_header(text: str) -> list[str]:
    """The column names of a PartiPrompts header line (Prompt, Category, Challenge, Note), cleaned."""
    return [clean(c) for c in text.split("\t")]


class PartiPromptsLines:
    """PartiPrompts TSV: the first line names the columns; quotes are literal text, not CSV quoting
    (prompts quote the words to render), so a line is a plain split on tabs. The header yields no
    prompt; a header without a 'Prompt' column is Malformed, and so is every line after it, since their
    cells cannot be named. A line is (Prompt cell, stripped Category cell or None, the other cells by
    column name, unstripped)."""

    def __init__(self) -> None:
        self.columns: list[str] | None = None

    def __call__(self, text: str) -> Parsed | None:
        """One line: None for the header, else the row (Malformed: no Prompt column, too many cells)."""
        cells = text.split("\t")
        if self.columns is None:
            self.columns = partiprompts_header(text)
            if "Prompt" not in self.columns:
                raise Malformed("PartiPrompts header without a 'Prompt' column")
            return None
        if "Prompt" not in self.columns:
            raise Malformed("no 'Prompt' column in this file's header")
        if len(cells) > len(self.columns):
            raise Malformed(f"{len(cells)} cells for {len(self.columns)} columns")
        # Editors often strip trailing tabs, so missing trailing cells are read as empty.
        row = dict(zip(self.columns, cells + [""] * (len(self.columns) - len(cells))))
        prompt = row.pop("Prompt")
        category = row.pop("Category", "").strip() or None
        return prompt, category, row


def t2i_category_of(path: Path) -> str:
    """The category named by a T2I-CompBench prompt file: `<category>[_train|_val[_<variant>]].txt`, e.g.
    color_val.txt, spatial_train.txt, complex_val_spatial.txt. ValueError naming the file otherwise."""
    m = _T2I_FILE.match(Path(path).name)
    if m is None:
        raise ValueError(
            f"'{path}': not a T2I-CompBench prompt file (<category>_val.txt, <category>_train.txt "
            f"or <category>_val_<variant>.txt, category one of {', '.join(T2I_CATEGORIES)})"
        )
    return m.group(1)


def t2i_prompt_files(path: Path) -> list[Path]:
    """A file -> [it]; a folder -> its `<category>_val.txt` files in T2I_CATEGORIES order (train and variant
    files are left out: the folder is the benchmark). FileNotFoundError when there are none, ValueError
    for a `*_val.txt` file whose category is unknown."""
    path = Path(path)
    if path.is_file():
        return [path]
    files = sorted(path.glob(f"*{T2I_SUFFIX}"), key=lambda p: T2I_CATEGORIES.index(t2i_category_of(p)))
    if not files:
        raise FileNotFoundError(f"no T2I-CompBench prompt files (*{T2I_SUFFIX}) at '{path}'")
    return files


def _benchmark_record(benchmark: str, category: str, key: str, value: str, **extra: Any) -> RecordReader:
    """A reader of one-prompt records (a T2I-CompBench line, a DPG-Bench file): the prompt is the cleaned
    text, and meta names the benchmark, `key` and the prompt (and `extra`), which is what their scorers read."""

    def read(text: str) -> Parsed:
        prompt = clean(text)
        if not prompt:
            raise Malformed("blank benchmark record")
        return prompt, category, {"benchmark": benchmark, key: value, "prompt": prompt, **extra}

    return read


DPG_QUESTIONS = "dpg_bench.csv"
DPG_QUESTION_FIELDS = ("proposition_id", "dependency", "category_broad", "question_natural_language")


def dpg_questions_beside(folder: Path) -> dict[str, list[dict[str, str]]]:
    """The questions of DPG-Bench's `dpg_bench.csv` in the prompts folder or beside it, by item_id, each with
    the fields its scorer reads (DPG_QUESTION_FIELDS); {} when there is no such file."""
    found = next((p for p in (folder / DPG_QUESTIONS, folder.parent / DPG_QUESTIONS) if p.is_file()), None)
    if found is None:
        return {}
    return {
        item: [{k: row.get(k, "") for k in DPG_QUESTION_FIELDS} for row in rows]
        for item, rows in read_dpg_questions(found).items()
    }


def _dpg_id_key(path: Path) -> list[Any]:
    """Natural order of ids: digit runs compare as numbers, so 2.txt comes before 10.txt."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.stem)]


def dpg_prompt_files(folder: Path) -> list[Path]:
    """Every `<item_id>.txt` file of a DPG-Bench folder, ids in natural order (1, 2, 10; item2 before
    item10). FileNotFoundError when the folder is missing, is a file, or holds no `.txt` file."""
    folder = Path(folder)
    files = sorted((f for f in folder.glob("*.txt") if f.is_file()), key=lambda f: (_dpg_id_key(f), f.name))
    if not files:
        raise FileNotFoundError(f"no DPG-Bench prompt files (<id>.txt) in '{folder}'")
    return files


def read_dpg_questions(path: Path) -> dict[str, list[dict[str, str]]]:
    """DPG-Bench's `dpg_bench.csv` (item_id, proposition_id, dependency, category_broad,
    question_natural_language, ...): item_id -> its questions in file order, each row with all its
    columns. ValueError for a CSV without item_id or question_natural_language."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"item_id", "question_natural_language"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"'{path}': DPG-Bench questions CSV without column(s) {', '.join(sorted(missing))}")
        out: dict[str, list[dict[str, str]]] = {}
        for row in reader:
            out.setdefault(row["item_id"], []).append(dict(row))
    return out


def records(fmt: str, path: Path) -> Iterator[tuple[str, bytes, RecordReader]]:
    """Each raw record of a source in a concrete format, with where it is (`file:line`, or the file for
    dpg-bench) and the reader of its decoded text: a line of a file, or the whole of each `<id>.txt` of
    a dpg-bench folder. FileNotFoundError for a missing source (or a benchmark folder without prompt
    files), ValueError for a T2I-CompBench file name that names no category."""
    if fmt == "t2i-compbench":
        for f in t2i_prompt_files(path):
            category = t2i_category_of(f)
            read = _benchmark_record(fmt, category, "category", category)
            yield from ((f"{f}:{n}", line, read) for n, line in enumerate(file_lines(f), start=1))
    elif fmt == "dpg-bench":
        questions = dpg_questions_beside(path)  # what the dpg-bench scorer asks, in each prompt's meta
        for f in dpg_prompt_files(path):  # one prompt per file: the whole file is one record
            extra = {"questions": questions.get(f.stem, [])} if questions else {}
            yield str(f), f.read_bytes(), _benchmark_record(fmt, "dpg-bench", "item_id", f.stem, **extra)
    else:
        readers: dict[str, RecordReader] = {"text": read_text_line, "jsonl": read_jsonl_line}
        read = readers.get(fmt) or (read_geneval_line if fmt == "geneval" else PartiPromptsLines())
        yield from ((f"{path}:{n}", line, read) for n, line in enumerate(file_lines(path), start=1))


def read_strict(fmt: str, path: Path) -> Iterator[tuple[str, Parsed]]:
    """(where, record) for every non-blank record of a fixed file (a benchmark's), where any bad record
    is an error: ValueError naming `file:line` for a record that is not UTF-8 or not its format's, and
    for a blank dpg-bench prompt file (naming it). Blank lines of the line formats are skipped."""
    for where, raw, read in records(fmt, path):
        try:
            text = decode(raw)
        except UnicodeDecodeError as err:
            raise ValueError(f"{where}: not UTF-8 ({err.reason} at byte {err.start})") from None
        if not clean(text):
            if fmt == "dpg-bench":  # the record is the whole file: a blank one is a missing prompt
                raise ValueError(f"{where}: blank {fmt} prompt file")
            continue
        try:
            parsed = read(text)
        except Malformed as err:
            raise ValueError(f"{where}: {err}") from None
        if parsed is not None:
            yield where, parsed
