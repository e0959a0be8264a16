"""DPG-Bench (ELLA, Hu et al. 2024): 1065 dense prompts, one `<item_id>.txt` per prompt, and `dpg_bench.csv`
with each prompt's VQA questions (item_id, proposition_id, dependency, category_broad,
question_natural_language, ...), which the sample stage puts in each prompt's meta when the file is in the
prompts folder or beside it (synrank.prompt_formats).

Scoring, as the reference's compute_dpg_bench.py: every question asked of the image, 1 for "yes"; then, in
proposition order, a question any of whose parent propositions (`dependency`, 0 = none) scored 0 scores 0;
the image's score is the mean. The reference asks mPLUG-large (modelscope); here a transformers BLIP-VQA
answers "yes" when P(yes) > P(no), a substitute: not comparable with published DPG-Bench scores. The
reference script also skips the CSV's first data row (`if i == 0: continue`); this reads every row.

Dense prompts run far past CLIP's 77 tokens: models.prompt_fit truncates or chunks them on purpose and
counts it (the generate stage does so for every generator's text window)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from models.shapes import geneval_accuracy
from synrank.prompt_formats import read_dpg_questions, read_strict
from synrank.scorer_weights import SCORERS

from .common import BenchmarkPrompt, Weights
from .registries import SCORED
from .t2i_compbench import YesNoVqa

VQA = SCORERS["dpg-bench"]["vqa"]


def read_dpg_bench(folder: Path, questions: Path | None = None) -> list[BenchmarkPrompt]:
    """Every `<id>.txt` of the folder in natural id order (1, 2, 10), a cleaned prompt each, category
    "dpg-bench", meta {"benchmark", "item_id", "prompt"} plus, when there are questions, "questions" (the
    item's rows of `questions`, or of dpg_bench.csv in the folder or beside it). FileNotFoundError (no
    prompt files), ValueError (a blank or non-UTF-8 prompt file, or a questions CSV without item_id or
    question_natural_language)."""
    records = list(read_strict("dpg-bench", Path(folder)))  # read first: a folder without prompts fails first
    by_item = read_dpg_questions(questions) if questions else None
    out = []
    for _, (prompt, category, meta) in records:
        if by_item is not None:
            meta["questions"] = by_item.get(meta["item_id"], [])
        out.append(BenchmarkPrompt(prompt, category, meta))
    return out


def dpg_score(questions: list[dict[str, str]], answers: list[bool]) -> float:
    """The reference's score of one image: the yes answers (1/0), each zeroed when a parent proposition
    (the `dependency` ids, 0 = none) scored 0, in proposition order; then the mean."""
    scores = {int(q["proposition_id"]): float(a) for q, a in zip(questions, answers)}
    for q in questions:
        parents = [int(d) for d in str(q.get("dependency") or "0").split(",") if d.strip()]
        if any(p != 0 and scores.get(p, 1.0) == 0 for p in parents):
            scores[int(q["proposition_id"])] = 0.0
    return sum(scores.values()) / len(scores)


@SCORED.register("dpg-bench")
class DPGBench:
    """DPG-Bench's question answering with a yes/no VQA model (BLIP-VQA by default, loaded on first use)."""

    name = "dpg-bench"
    tasks = ("dpg-bench",)

    def __init__(self, vqa: YesNoVqa | None = None, weights_path: str | None = None, device: str = "cpu") -> None:
        self._vqa, self.device = vqa, device
        self.weights_path = weights_path or VQA.path()

    def weights(self) -> list[Weights]:
        """The VQA model it loads (config validation checks it is on disk before any run)."""
        return [Weights(VQA.role, self.weights_path, VQA.env)]

    def applies(self, meta: dict[str, Any]) -> bool:
        """A DPG-Bench prompt with questions (dpg_bench.csv was beside its prompts)."""
        return meta.get("benchmark") == self.name and bool(meta.get("questions"))

    def vqa(self) -> YesNoVqa:
        """The model given, else BLIP-VQA from `weights_path`."""
        if self._vqa is None:
            from .vision import BlipVqa

            self._vqa = BlipVqa(self.weights_path, self.device)
        return self._vqa

    def judge(self, image: Image.Image, meta: dict[str, Any]) -> tuple[str, float]:
        """("dpg-bench", the image's score in [0, 1]) for its prompt's questions."""
        questions = meta["questions"]
        vqa = self.vqa()
        answers = [vqa.vqa_yes_probability(image, q["question_natural_language"]) > 0.5 for q in questions]
        return self.name, dpg_score(questions, answers)

    def summarize(self, results: list[tuple[str, float]], prompts: list[str] | None = None) -> dict[str, Any]:
        """The mean score with a 95% CI resampling prompts; keys as GenEval's ("accuracy" holds the mean)."""
        return geneval_accuracy(results, prompts=prompts, tasks=self.tasks)
