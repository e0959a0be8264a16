"""Win-rates of a tuned model over its base, with bootstrap confidence intervals, overall and per
prompt category (PartiPrompts' categories, GenEval's tasks)."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from models.stats import mean_ci


def paired_wins(wide: pd.DataFrame, base: str, tuned: str) -> pd.DataFrame:
    """wide: one column of scores per model, one row per (..., prompt_id, index). Rows where both models
    have an image of the same prompt and seed index are compared: a win counts 1, a tie 0.5, a loss 0.
    Returns win and delta (tuned - base score) on those rows."""
    for model in (base, tuned):
        if model not in wide.columns:
            raise ValueError(f"model {model!r} has no scores (models: {', '.join(map(str, wide.columns))})")
    wide = wide.dropna(subset=[base, tuned])
    win = (wide[tuned] > wide[base]).astype(float) + 0.5 * (wide[tuned] == wide[base])
    return pd.DataFrame({"win": win, "delta": wide[tuned] - wide[base]})


def win_outcomes(scores: pd.DataFrame, manifest: pd.DataFrame, base: str, tuned: str) -> pd.DataFrame:
    """scores (image_id, reward, score); manifest (image_id, prompt_id, index, model).
    One row per (reward, prompt_id, index): win, delta."""
    table = scores.merge(manifest[["image_id", "prompt_id", "index", "model"]], on="image_id")
    wide = table.pivot_table(index=["reward", "prompt_id", "index"], columns="model", values="score")
    return paired_wins(wide, base, tuned).reset_index()


def summarize_wins(outcomes: pd.DataFrame) -> dict[str, float]:
    """Outcomes are averaged per prompt first, so the CI resamples prompts, the unit that was sampled."""
    per_prompt = outcomes.groupby("prompt_id")["win"].mean().to_numpy()
    lo, hi = mean_ci(per_prompt)
    return {
        "winrate": float(per_prompt.mean()) if len(per_prompt) else float("nan"),
        "ci_low": lo,
        "ci_high": hi,
        "n": int(len(per_prompt)),
        "n_pairs": int(len(outcomes)),
        "mean_delta": float(outcomes["delta"].mean()),
    }


def by_category(outcomes: pd.DataFrame, categories: Mapping[str, str]) -> dict[str, dict[str, float]]:
    """summarize_wins per category (sorted); every compared prompt must have one."""
    unknown = sorted(set(outcomes["prompt_id"]) - set(categories))
    if unknown:
        raise ValueError(f"{len(unknown)} prompt(s) without a category, e.g. {unknown[0]!r}")
    cats = outcomes["prompt_id"].map(categories)
    return {c: summarize_wins(outcomes[cats == c]) for c in sorted(set(cats))}


def winrates(
    scores: pd.DataFrame, manifest: pd.DataFrame, base: str, tuned: str, categories: Mapping[str, str] | None = None
) -> dict[str, dict]:
    """Win-rate of tuned over base per reward; with categories (prompt_id -> category) also per category."""
    out: dict[str, dict] = {}
    for reward, g in win_outcomes(scores, manifest, base, tuned).groupby("reward", sort=True):
        out[reward] = summarize_wins(g)
        if categories:
            out[reward]["categories"] = by_category(g, categories)
    return out
