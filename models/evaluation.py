"""Win-rates of a tuned model over its base, with bootstrap confidence intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.stats import mean_ci


def winrates(scores: pd.DataFrame, manifest: pd.DataFrame, base: str, tuned: str) -> dict[str, dict[str, float]]:
    """scores (image_id, reward, score); manifest (image_id, prompt_id, index, model).
    Tuned and base images of the same prompt and seed index are compared: a win counts 1, a tie 0.5.
    Outcomes are averaged per prompt first, so the CI resamples prompts, the unit that was sampled."""
    table = scores.merge(manifest[["image_id", "prompt_id", "index", "model"]], on="image_id")
    out: dict[str, dict[str, float]] = {}
    for reward, g in table.groupby("reward", sort=True):
        wide = g.pivot_table(index=["prompt_id", "index"], columns="model", values="score")
        wide = wide.dropna(subset=[base, tuned])
        win = (wide[tuned] > wide[base]).astype(float) + 0.5 * (wide[tuned] == wide[base])
        per_prompt = win.groupby(level="prompt_id").mean().to_numpy()
        lo, hi = mean_ci(per_prompt)
        out[reward] = {"winrate": float(per_prompt.mean()) if len(per_prompt) else float("nan"),
                       "ci_low": lo, "ci_high": hi, "n_pairs": int(len(win)),
                       "mean_delta": float((wide[tuned] - wide[base]).mean())}
    return out
