"""DPG-Bench (ELLA, Hu et al. 2024): 1065 dense prompts, one `<item_id>.txt` per prompt, plus optionally
`dpg_bench.csv` with the VQA questions per prompt (item_id, proposition_id, dependency, category_broad,
question_natural_language, ...). The reference scores with an mPLUG VQA model over those questions; this
module provides the prompts (and the questions as metadata) for reward-model scoring, so it registers
a prompt adapter only.

Dense prompts run far past CLIP's 77 tokens: models.prompt_fit truncates or chunks them on purpose and
counts it (the generate stage does so for every generator's text window).

The prompt folder and the questions CSV are read by synrank.prompt_formats (the sample stage's
`dpg-bench` format); this adapter adds the questions to each prompt's meta."""

from __future__ import annotations

from pathlib import Path

from synrank.prompt_formats import read_dpg_questions, read_strict

from .common import BenchmarkPrompt
from .registries import ADAPTERS

QUESTIONS_FILE = "dpg_bench.csv"


@ADAPTERS.register("dpg-bench")
def read_dpg_bench(folder: Path, questions: Path | None = None) -> list[BenchmarkPrompt]:
    """Every `<id>.txt` of the folder in natural id order (1, 2, 10), a cleaned prompt each, category
    "dpg-bench", meta {"benchmark", "item_id", "prompt"} plus, when there are questions, "questions" (the
    item's rows of `questions`, or of dpg_bench.csv in the folder or beside it). FileNotFoundError (no
    prompt files), ValueError (a blank or non-UTF-8 prompt file, or a questions CSV without item_id or
    question_natural_language)."""
    folder = Path(folder)
    records = list(read_strict("dpg-bench", folder))  # read first: a folder without prompts fails first
    if questions is None:
        questions = next((p for p in (folder / QUESTIONS_FILE, folder.parent / QUESTIONS_FILE) if p.is_file()), None)
    by_item = read_dpg_questions(questions) if questions else {}
    out = []
    for _, (prompt, category, meta) in records:
        if questions:
            meta["questions"] = by_item.get(meta["item_id"], [])
        out.append(BenchmarkPrompt(prompt, category, meta))
    return out
