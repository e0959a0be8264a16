"""PartiPrompts (Yu et al. 2022): 1632 prompts in 12 categories and 11 challenge aspects, no reference
scorer. It is evaluated with reward models, as per-category win-rates of a tuned model over its base,
so it registers no scorer (there is no per-image pass/fail to `judge`); `read_partiprompts` reads its file.

`category_winrates` compares tuned and base images of the same prompt and seed index (win 1, tie 0.5,
loss 0), averages per prompt first, then per category, with a bootstrap CI over the category's
prompts: models.winrates's win-rates, which the evaluate stage also reports per category."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from models.winrates import by_category, paired_wins
from synrank.prompt_formats import decode, file_lines, partiprompts_header, read_strict

from .common import BenchmarkPrompt

COLUMNS: tuple[str, ...] = ("Prompt", "Category", "Challenge", "Note")


def read_partiprompts(path: Path) -> list[BenchmarkPrompt]:
    """Every row of PartiPrompts.tsv, read by synrank.prompt_formats' partiprompts reader (tab-separated
    cells, quotes literal text, missing trailing cells empty), strictly: ValueError for an empty file, a
    header without Prompt and Category, or a row with more cells than columns (naming file:line).
    Prompt and cells stripped; meta {"benchmark": "partiprompts", "challenge", "note"} (the other columns
    lowercased), which the per-category win-rates read."""
    path = Path(path)
    first = next(file_lines(path), None)
    if first is None:
        raise ValueError(f"'{path}': empty PartiPrompts file")
    header = partiprompts_header(decode(first))
    if "Prompt" not in header or "Category" not in header:
        raise ValueError(f"'{path}': header {header} lacks 'Prompt' and 'Category' (expected {', '.join(COLUMNS)})")
    out = []
    for _, (prompt, category, cells) in read_strict("partiprompts", path):
        meta: dict[str, Any] = {"benchmark": "partiprompts", **{k.lower(): v.strip() for k, v in cells.items()}}
        out.append(BenchmarkPrompt(prompt.strip(), category, meta))
    return out


def category_winrates(
    scores_table: pd.DataFrame, categories: Mapping[str, str], base: str = "base", tuned: str = "tuned"
) -> dict[str, dict[str, float]]:
    """scores_table: one reward's scores, columns prompt_id, index (seed index), model, score, e.g.
    scores.parquet merged with the image manifest and filtered to one reward.
    categories: prompt_id -> category.

    Returns {category: {"winrate", "ci_low", "ci_high", "n" (prompts), "n_pairs", "mean_delta"}}, sorted."""
    need = {"prompt_id", "index", "model", "score"}
    if missing := need - set(scores_table.columns):
        raise ValueError(f"scores table lacks column(s) {', '.join(sorted(missing))}")
    if "reward" in scores_table.columns and scores_table["reward"].nunique() > 1:
        raise ValueError("scores table mixes rewards; filter it to one reward first")
    keys = ["prompt_id", "index", "model"]
    if scores_table.duplicated(keys).any():  # averaging repeats would hide a broken join upstream
        raise ValueError("scores table has more than one score for some (prompt_id, index, model)")
    wide = scores_table.pivot(index=["prompt_id", "index"], columns="model", values="score")
    return by_category(paired_wins(wide, base, tuned).reset_index(), categories)
