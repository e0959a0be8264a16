"""DPG-Bench (ELLA, Hu et al. 2024): 1065 dense prompts, one `<item_id>.txt` per prompt, plus optionally
`dpg_bench.csv` with the VQA questions per prompt (item_id, proposition_id, dependency, category_broad,
question_natural_language, ...). The reference scores with an mPLUG VQA model over those questions; this
module provides the prompts (and the questions as metadata) for reward-model scoring, so it registers
a prompt adapter only.

Dense prompts run far past CLIP's 77 tokens: models.prompt_fit truncates or chunks them on purpose and
counts it (the generate stage does so for every generator's text window)."""

from __future__ import annotations

import csv
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


@ADAPTERS.register("dpg-bench")
def read_dpg_bench(folder: Path, questions: Path | None = None) -> list[BenchmarkPrompt]:
    """Every `<id>.txt` of the folder, sorted by id; questions from `questions`, or from dpg_bench.csv in
    the folder or beside it when present."""
    folder = Path(folder)
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise FileNotFoundError(f"no DPG-Bench prompt files (<id>.txt) in '{folder}'")
    if questions is None:
        questions = next((p for p in (folder / QUESTIONS_FILE, folder.parent / QUESTIONS_FILE) if p.is_file()), None)
    by_item = read_questions(questions) if questions else {}
    out = []
    for f in files:
        prompt = f.read_text(encoding="utf-8").strip()
        if not prompt:
            raise ValueError(f"'{f}': empty DPG-Bench prompt file")
        meta: dict[str, Any] = {"benchmark": "dpg-bench", "item_id": f.stem, "prompt": prompt}
        if questions:
            meta["questions"] = by_item.get(f.stem, [])
        out.append(BenchmarkPrompt(prompt, None, meta))
    return out
