"""Win-rates of a tuned model over its base, with bootstrap confidence intervals."""

from __future__ import annotations

import pandas as pd

from models.stats import mean_ci


def win_outcomes(scores: pd.DataFrame, manifest: pd.DataFrame, base: str, tuned: str) -> pd.DataFrame:
    """scores (image_id, reward, score); manifest (image_id, prompt_id, index, model). Tuned and base
    images of the same prompt and seed index are compared: a win counts 1, a tie 0.5, a loss 0.
    One row per (reward, prompt_id, index): win, delta (tuned - base score)."""
    table = scores.merge(manifest[["image_id", "prompt_id", "index", "model"]], on="image_id")
    wide = table.pivot_table(index=["reward", "prompt_id", "index"], columns="model", values="score")
    wide = wide.dropna(subset=[base, tuned])
    win = (wide[tuned] > wide[base]).astype(float) + 0.5 * (wide[tuned] == wide[base])
    return pd.DataFrame({"win": win, "delta": wide[tuned] - wide[base]}).reset_index()


def winrates(scores: pd.DataFrame, manifest: pd.DataFrame, base: str, tuned: str) -> dict[str, dict[str, float]]:
    """Win-rate of tuned over base per reward. Outcomes are averaged per prompt first, so the CI
    resamples prompts, the unit that was sampled."""
    out: dict[str, dict[str, float]] = {}
    for reward, g in win_outcomes(scores, manifest, base, tuned).groupby("reward", sort=True):
        per_prompt = g.groupby("prompt_id")["win"].mean().to_numpy()
        lo, hi = mean_ci(per_prompt)
        out[reward] = {"winrate": float(per_prompt.mean()) if len(per_prompt) else float("nan"),
                       "ci_low": lo, "ci_high": hi, "n_pairs": int(len(g)), "mean_delta": float(g["delta"].mean())}
    return out
