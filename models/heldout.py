"""Held-out ranked groups: kept out of training to measure the tuned model's implicit accuracy on them.

The implicit accuracy is Diffusion-DPO's (Wallace et al. 2023, arXiv 2311.12908) preference accuracy of the
implicit reward: the share of label-ordered pairs whose better image the tuned model's denoising errors,
relative to the reference's, also rank higher (models.objectives.pair_stats).
"""

from __future__ import annotations

import torch

from models.objectives import Objective, dpo_pairs, implicit_scores, pair_stats, rankdpo_pairs
from models.parametrization import Parametrization
from models.preference_batch import paired_errors, preference_batch
from models.train_data import RankedGroups

HELDOUT_SEED = 12345  # the fixed (t, noise) draws: every run and objective is judged on the same ones


def split_holdout(groups: RankedGroups, fraction: float, seed: int) -> tuple[RankedGroups, RankedGroups | None]:
    """(training groups, held-out groups): round(fraction x len(groups)) groups drawn with `seed` + 1 are held
    out; none (None) when that rounds to 0 or would leave nothing to train on."""
    n_hold = int(round(len(groups) * fraction))
    if n_hold == 0 or n_hold >= len(groups):
        return groups, None
    perm = torch.randperm(len(groups), generator=torch.Generator().manual_seed(seed + 1))
    return groups.select(perm[n_hold:]), groups.select(perm[:n_hold])


@torch.no_grad()
def heldout_accuracy(
    model,
    ref,
    param: Parametrization,
    groups: RankedGroups,
    obj: Objective,
    beta: float,
    device,
    draws: int = 4,
    batch: int = 16,
) -> float:
    """Implicit accuracy (0-1) on held-out groups, averaged over `draws` fixed (t, noise) draws in batches of
    `batch` groups; NaN when no pair is ordered. `ref` None = `model` with its adapters disabled."""
    rng = torch.Generator().manual_seed(HELDOUT_SEED)
    correct = total = 0.0
    for _ in range(draws):
        for start in range(0, len(groups), batch):
            rows = torch.arange(start, min(start + batch, len(groups)))
            b = preference_batch(groups, obj, rows, rng, param, device)
            s = implicit_scores(*paired_errors(model, ref, param, b))
            # Every objective is judged on the same label pairs: all pairs that phi orders strictly.
            judge = b.label if obj.self_pairs else groups.select(rows).phi
            w = (rankdpo_pairs if not obj.self_pairs else dpo_pairs)(judge, b.tau, b.mask) > 0
            stats = pair_stats(s.cpu(), w.float(), beta)
            correct += stats["implicit_acc"] * stats["pairs"] if stats["pairs"] else 0.0
            total += stats["pairs"]
    return correct / total if total else float("nan")
