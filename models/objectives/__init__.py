"""Preference objectives: one loss (core.py: the implicit score s_i and the weighted pair loss) and, per
objective, its pair weights W and SFT weights V, each registered in OBJECTIVES under its `train.objective`
name (builtin.py: rankdpo, dpo, gpo, gpo-phi, sft, rwr, sudo). Adding one is one file in this folder that
registers an `Objective`; importing the package imports every file of it (`import_all`)."""

from __future__ import annotations

from models.objectives.builtin import (
    advantage_pairs,
    best_only,
    dpo_pairs,
    gpo_pairs,
    rankdpo_pairs,
    reward_weighted,
)
from models.objectives.core import (
    OBJECTIVES,
    Objective,
    Shaping,
    Weights,
    derangement,
    images_used,
    implicit_scores,
    loss_weights,
    objective_loss,
    pair_stats,
    preference_loss,
    winner_loser_scores,
    winners,
)
from synrank.registry import import_all

import_all("models.objectives")

__all__ = [
    "OBJECTIVES",
    "Objective",
    "Shaping",
    "Weights",
    "advantage_pairs",
    "best_only",
    "derangement",
    "dpo_pairs",
    "gpo_pairs",
    "images_used",
    "implicit_scores",
    "loss_weights",
    "objective_loss",
    "pair_stats",
    "preference_loss",
    "rankdpo_pairs",
    "reward_weighted",
    "winner_loser_scores",
    "winners",
]
