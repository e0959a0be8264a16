"""Algorithm 1 of RankDPO (arXiv 2410.18013): from several reward models' scores to one ranking.

For each prompt with k images and n reward models, image i earns a win against every other image j
whose reward it beats strictly (a tie is no win); C_i counts them over all rewards and
phi_i = C_i / (n (k - 1)) is the fraction of pairwise comparisons it wins. Images are ranked by phi,
descending; tau = 1 is the best, and equal phi share the lower rank number (1, 1, 3), so a tie never
orders a pair. Images with a NaN or infinite reward under any model are left out of their prompt's
ranking and counted, rather than poisoning every comparison."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def phi_scores(rewards: np.ndarray) -> np.ndarray:
    """rewards: (k images, n reward models) -> phi per image."""
    k, n = rewards.shape
    if k < 2:
        return np.zeros(k)
    wins = (rewards[:, None, :] > rewards[None, :, :]).sum(axis=(1, 2))  # [i, j, r]: i beats j under r
    return wins / (n * (k - 1))


def ranks(phi: np.ndarray) -> np.ndarray:
    """tau: 1 + the number of images with a strictly higher phi ("competition" ranking)."""
    return 1 + (phi[None, :] > phi[:, None]).sum(axis=1)


def bradley_terry(rewards: np.ndarray) -> np.ndarray:
    """Mean Bradley-Terry win probability sigma(r_i - r_j) over the other images and the rewards.
    Unlike Algorithm 1 it is scale-sensitive: reward models should be on comparable scales."""
    k, n = rewards.shape
    if k < 2:
        return np.zeros(k)
    p = 1.0 / (1.0 + np.exp(-(rewards[:, None, :] - rewards[None, :, :])))
    return (p.sum(axis=(1, 2)) - 0.5 * n) / (n * (k - 1))  # drop the i == j terms (sigma(0) = 0.5)


def zscore(rewards: np.ndarray) -> np.ndarray:
    """Rewards standardized per model within the prompt's group, then averaged (a tie-free group of
    equal rewards standardizes to 0)."""
    std = rewards.std(axis=0)
    z = np.where(std > 0, (rewards - rewards.mean(axis=0)) / np.where(std > 0, std, 1.0), 0.0)
    return z.mean(axis=1)


AGGREGATORS = {"algorithm1": phi_scores, "bradley_terry": bradley_terry, "zscore": zscore}


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-a between two score vectors (ties count as neither concordant nor discordant)."""
    n = len(a)
    if n < 2:
        return float("nan")
    da, db = np.sign(a[:, None] - a[None, :]), np.sign(b[:, None] - b[None, :])
    return float((da * db)[np.triu_indices(n, 1)].mean())


def reward_agreement(scores: pd.DataFrame, prompt_of: pd.Series) -> dict[str, float]:
    """Mean per-prompt Kendall tau for every pair of reward models: do they rank a prompt's images alike?"""
    wide = scores.pivot(index="image_id", columns="reward", values="score")
    wide = wide[np.isfinite(wide.to_numpy(dtype=float)).all(axis=1)]
    groups = [g.to_numpy(dtype=float) for _, g in wide.groupby(prompt_of.reindex(wide.index).to_numpy())]
    out = {}
    names = list(wide.columns)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            taus = [kendall_tau(g[:, i], g[:, j]) for g in groups if len(g) >= 2]
            out[f"{names[i]}_vs_{names[j]}"] = float(np.mean(taus)) if taus else float("nan")
    return out


def accounted(scores: pd.DataFrame, prompt_of: pd.Series, complete_groups: bool) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The (image x reward) scores of the images that can be ranked, and the report that accounts for every
    other image made: `missing_score` per reward (no row in scores.parquet), `non_finite_left_out`,
    `unscored_left_out`, and `prompts_lost_images` (their number and the first 20 ids)."""
    wide = scores.pivot(index="image_id", columns="reward", values="score")
    made = prompt_of.index.union(wide.index)
    present = pd.DataFrame(False, index=made, columns=wide.columns)
    for reward, rows in scores.groupby("reward")["image_id"]:
        present.loc[rows.to_numpy(), reward] = True
    wide = wide.reindex(made)
    complete = present.all(axis=1).to_numpy()
    finite = np.isfinite(wide.to_numpy(dtype=float)).all(axis=1)
    lost = sorted(set(prompt_of.reindex(made[~finite]).dropna()))
    report: dict[str, Any] = {
        "images": int(len(made)),
        "non_finite_left_out": int((complete & ~finite).sum()),
        "unscored_left_out": int((~complete).sum()),
        "missing_score": {r: int((~present[r]).sum()) for r in present.columns if (~present[r]).any()},
        "prompts_lost_images": len(lost),
        "prompts_lost_images_first": lost[:20],
    }
    keep = finite
    if complete_groups:  # a prompt that lost an image is left out whole
        keep = finite & ~prompt_of.reindex(made).isin(lost).to_numpy()
        report["incomplete_groups_left_out"] = len(lost)
    return wide[keep], report


def rank_groups(
    scores: pd.DataFrame, prompt_of: pd.Series, method: str = "algorithm1", complete_groups: bool = False
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """scores: long table (image_id, reward, score); prompt_of: image_id -> prompt_id for every image made.
    Returns (image_id, prompt_id, phi, tau, k, advantage) and a report of what was left out: images with a
    non-finite score, images some reward has no score for (per reward), and the prompts that lost images;
    with `complete_groups` such prompts are left out whole. `method` swaps Algorithm 1's win fraction for
    another aggregate (AGGREGATORS); ranking and tau stay the same. `advantage` is GPO's group-relative
    advantage whatever the method: each reward model's raw scores standardized within the prompt's group,
    averaged over the models (`zscore`)."""
    aggregate = AGGREGATORS[method]
    wide, report = accounted(scores, prompt_of, complete_groups)
    wide = wide.assign(prompt_id=prompt_of.reindex(wide.index).to_numpy())
    rows = []
    for pid, group in wide.groupby("prompt_id", sort=True):
        r = group.drop(columns="prompt_id").to_numpy(dtype=float)
        phi = aggregate(r)
        for image_id, p, t, a in zip(group.index, phi, ranks(phi), zscore(r)):
            rows.append((image_id, pid, float(p), int(t), len(group), float(a)))
    out = pd.DataFrame(rows, columns=["image_id", "prompt_id", "phi", "tau", "k", "advantage"])
    report["prompts"] = int(out["prompt_id"].nunique()) if len(out) else 0
    report["prompts_single_image"] = int((out.groupby("prompt_id")["k"].first() < 2).sum()) if len(out) else 0
    return out, report
