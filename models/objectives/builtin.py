"""The built-in objectives' pair weights W and SFT weights V (models/objectives/core.py's loss), each
registered under its `train.objective` name. A new objective is one more file in this folder that registers
an `Objective` in OBJECTIVES; the package imports every file of the folder."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.objectives.core import OBJECTIVES, Objective, Weights, valid_pairs


def rankdpo_pairs(phi: torch.Tensor, tau: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RankDPO (paper Eq. 5-7): Delta_ij = |G_i - G_j| * |1/D(tau_i) - 1/D(tau_j)| for i ranked above j,
    with gain G = 2^phi - 1 and discount D(tau) = log(1 + tau) on the target rank."""
    gain = torch.pow(2.0, phi) - 1.0
    inv_disc = 1.0 / torch.log1p(tau.float())
    delta = (gain[:, :, None] - gain[:, None, :]).abs() * (inv_disc[:, :, None] - inv_disc[:, None, :]).abs()
    return delta * ((tau[:, :, None] < tau[:, None, :]) & valid_pairs(mask))


def _best_worst(phi: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    big = torch.finfo(phi.dtype).max
    best = torch.where(mask, phi, torch.full_like(phi, -big)).argmax(dim=1)
    worst = torch.where(mask, phi, torch.full_like(phi, big)).argmin(dim=1)
    return best, worst


def dpo_pairs(phi: torch.Tensor, tau: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Diffusion-DPO on ranked data: one pair per group, the best image over the worst (weight 1);
    a group whose best and worst tie contributes nothing."""
    best, worst = _best_worst(phi, mask)
    w = torch.zeros(phi.shape + phi.shape[1:], dtype=phi.dtype, device=phi.device)
    rows = torch.arange(phi.shape[0], device=phi.device)
    w[rows, best, worst] = (phi[rows, best] > phi[rows, worst]).to(phi.dtype)
    return w


def advantage_pairs(adv: torch.Tensor, tau: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GPO (arXiv 2505.11070) on group-relative advantages: every pair with A_i > A_j weighted by
    A_i - A_j, so near-ties weigh little and a large reward gap weighs much. `adv` (B, K) is
    models.ranking's `advantage`: each reward model's raw scores standardized within the group,
    averaged over the models; it keeps the absolute reward gaps that phi's win counts throw away."""
    gap = adv[:, :, None] - adv[:, None, :]
    return gap.clamp(min=0) * ((adv[:, :, None] > adv[:, None, :]) & valid_pairs(mask))


def gpo_pairs(phi: torch.Tensor, tau: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The phi variant of GPO (`gpo-phi`): Algorithm 1's phi standardized within the group,
    A = (phi - mean) / std, then advantage_pairs. A group of equal phi has std 0: weight 0."""
    m = mask.to(phi.dtype)
    n = m.sum(dim=1, keepdim=True).clamp(min=1)
    mean = (phi * m).sum(dim=1, keepdim=True) / n
    std = (((phi - mean) ** 2 * m).sum(dim=1, keepdim=True) / n).sqrt()
    adv = torch.where(std > 0, (phi - mean) / std.clamp(min=1e-12), torch.zeros_like(phi))
    return advantage_pairs(adv, tau, mask)


def best_only(phi: torch.Tensor, tau: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SFT on the winner: weight 1 on the best image of each group (the first one among ties)."""
    best, _ = _best_worst(phi, mask)
    return F.one_hot(best, phi.shape[1]).to(phi.dtype)


def reward_weighted(phi: torch.Tensor, tau: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Reward-weighted SFT: each image's denoising loss weighted by its share of the group's phi, after
    shifting phi by the group's minimum over valid images, w_i = (phi_i - min phi) / sum_j (phi_j - min phi).

    Why the shift: a weight is only a share of the group when every term is non-negative. Algorithm 1's
    phi is in [0, 1], but `rank.method: zscore` gives phi that sums to about 0 per group, so the plain
    share phi_i / sum phi divides by a near-zero total (weights of +-1e7, negative ones that push the
    model away from images). Shifting keeps the order, puts every weight in [0, 1] summing to 1, and
    gives the group's worst image weight 0 (as sft does to all but the best); the weights do not change
    when phi is shifted or scaled, so algorithm1, bradley_terry and zscore are treated alike. A group whose
    valid images all tie has no preference to learn from and gets zero weights; padding slots always get 0."""
    big = torch.finfo(phi.dtype).max
    low = torch.where(mask, phi, torch.full_like(phi, big)).amin(dim=1, keepdim=True)
    r = torch.where(mask, phi - low, torch.zeros_like(phi))
    total = r.sum(dim=1, keepdim=True)
    return torch.where(total > 0, r / total.clamp(min=1e-12), torch.zeros_like(r))


def _half(w: Weights) -> Weights:
    return lambda phi, tau, mask: 0.5 * w(phi, tau, mask)


OBJECTIVES.register("rankdpo")(Objective(pairs=rankdpo_pairs))
OBJECTIVES.register("dpo")(Objective(pairs=dpo_pairs))
OBJECTIVES.register("gpo")(Objective(pairs=advantage_pairs, label="advantage"))
OBJECTIVES.register("gpo-phi")(Objective(pairs=gpo_pairs))
OBJECTIVES.register("sft")(Objective(sft=best_only))
OBJECTIVES.register("rwr")(Objective(sft=reward_weighted))
# SUDO / Self-DPO (arXiv 2504.14534): 0.5 DPO (dataset image over a deranged batch mate under the
# dataset image's caption) + 0.5 denoising loss on the dataset image. No labels are used.
OBJECTIVES.register("sudo")(Objective(pairs=_half(dpo_pairs), sft=_half(best_only), self_pairs=True))
