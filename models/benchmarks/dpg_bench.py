"""DPG-Bench (ELLA, Hu et al. 2024): 1065 dense prompts, one `<item_id>.txt` per prompt, plus optionally
`dpg_bench.csv` with the VQA questions per prompt (item_id, proposition_id, dependency, category_broad,
question_natural_language, ...). The reference scores with an mPLUG VQA model over those questions; this
module provides the prompts (and the questions as metadata) for reward-model scoring, so it registers
a prompt adapter only.

Dense prompts run far past CLIP's 77 tokens: models.prompt_fit truncates or chunks them on purpose and
counts it (the generate stage does so for every generator's text window).

The sample stage's `dpg-bench` format reads a prompt folder through `prompt_files` and `record` too."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

from .common import ADAPTERS, BenchmarkPrompt

QUESTIONS_FILE = "dpg_bench.csv"


def read_questions(path: Path) -> dict[str, list[dict[str, str]]]:
    """item_id -> its questions, in file order; each keeps the CSV's other columns."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"item_id", "question_natural_language"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"'{path}': DPG-Bench questions CSV without column(s) {', '.join(sorted(missing))}")
        out: dict[str, list[dict[str, str]]] = {}
        for row in reader:
            out.setdefault(row["item_id"], []).append(dict(row))
    return out


def _id_key(path: Path) -> list[Any]:
    """Natural order of ids: digit runs compare as numbers, so 2.txt comes before 10.txt."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.stem)]


def prompt_files(folder: Path) -> list[Path]:
    """Every `<id>.txt` file of the folder, ids in natural order (1, 2, 10; item2 before item10).
    Raises FileNotFoundError when the folder is missing, is a file, or holds no `.txt` file."""
    folder = Path(folder)
    files = sorted((f for f in folder.glob("*.txt") if f.is_file()), key=lambda f: (_id_key(f), f.name))
    if not files:
        raise FileNotFoundError(f"no DPG-Bench prompt files (<id>.txt) in '{folder}'")
    return files


def record(text: str, item_id: str) -> BenchmarkPrompt | None:
    """One prompt file's text -> its prompt (ends stripped), category "dpg-bench" and meta; None when blank."""
    prompt = text.strip()
    if not prompt:
        return None
    return BenchmarkPrompt(prompt, "dpg-bench", {"benchmark": "dpg-bench", "item_id": item_id, "prompt": prompt})


@ADAPTERS.register("dpg-bench")
def read_dpg_bench(folder: Path, questions: Path | None = None) -> list[BenchmarkPrompt]:
    """Every `<id>.txt` of the folder (see `prompt_files`); questions from `questions`, or from
    dpg_bench.csv in the folder or beside it when present. Raises FileNotFoundError (no prompt files),
    ValueError (an empty prompt file, or a questions CSV without item_id/question_natural_language)."""
    folder = Path(folder)
    files = prompt_files(folder)
    if questions is None:
        questions = next((p for p in (folder / QUESTIONS_FILE, folder.parent / QUESTIONS_FILE) if p.is_file()), None)
    by_item = read_questions(questions) if questions else {}
    out = []
    for f in files:
        item = record(f.read_text(encoding="utf-8"), f.stem)
        if item is None:
            raise ValueError(f"'{f}': empty DPG-Bench prompt file")
        if questions:
            item.meta["questions"] = by_item.get(f.stem, [])
        out.append(item)
    return out
