"""PartiPrompts (Yu et al. 2022): 1632 prompts in 12 categories and 11 challenge aspects, no reference
scorer. It is evaluated with reward models, as per-category win-rates of a tuned model over its base,
so it registers a prompt adapter only (there is no per-image pass/fail to `judge`).

`category_winrates` compares tuned and base images of the same prompt and seed index (win 1, tie 0.5,
loss 0), averages per prompt first, then per category, with a bootstrap CI over the category's
prompts: models.winrates's win-rates, which the evaluate stage also reports per category."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from models.winrates import by_category, paired_wins

from .common import ADAPTERS, BenchmarkPrompt

COLUMNS: tuple[str, ...] = ("Prompt", "Category", "Challenge", "Note")


@ADAPTERS.register("partiprompts")
def read_partiprompts(path: Path) -> list[BenchmarkPrompt]:
    """Every row of PartiPrompts.tsv. Cells are tab-separated and quotes are literal text (prompts quote
    the words to render), so this is a plain split, not CSV parsing; trailing empty cells may be missing."""
    lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    if not lines:
        raise ValueError(f"'{path}': empty PartiPrompts file")
    header = [c.strip() for c in lines[0].split("\t")]
    if "Prompt" not in header or "Category" not in header:
        raise ValueError(f"'{path}': header {header} lacks 'Prompt' and 'Category' (expected {', '.join(COLUMNS)})")
    out = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) > len(header):
            raise ValueError(f"'{path}':{n}: {len(cells)} cells for {len(header)} columns")
        record = dict(zip(header, cells + [""] * (len(header) - len(cells))))
        prompt = record.pop("Prompt").strip()
        category = record.pop("Category").strip() or None
        meta: dict[str, Any] = {"benchmark": "partiprompts", **{k.lower(): v.strip() for k, v in record.items()}}
        out.append(BenchmarkPrompt(prompt, category, meta))
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
