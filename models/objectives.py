"""Preference objectives for diffusion models, all built on one implicit score.

For image i of a group (the K images of one prompt, sharing one timestep t and one noise eps):

    s_i = ||target - pred_theta(x_t^i, t, c)||^2 - ||target - pred_ref(x_t^i, t, c)||^2

(mean over latent dims). Lower s_i means the tuned model, relative to the reference, prefers image i.
Every objective is the same weighted pairwise logistic loss

    L = - sum_{i,j} W_ij * log sigmoid(-beta * (s_i - s_j))     (summed per group, averaged over groups)

and differs only in W: which ordered pairs (i preferred over j) it forms and how it weights them.

beta convention: logit = -beta * (s_i - s_j). Diffusion-DPO's code writes -0.5 * beta with beta = 5000;
ours equals that with beta = 2500 (and equals diffusers' SD1.5 DPO script, which uses 2500, no 0.5).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from synrank.registry import Registry

# An objective maps a group's labels to pair weights: (phi, tau, mask) each (B, K) -> W (B, K, K).
PairWeights = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
OBJECTIVES: Registry[PairWeights] = Registry("objective")


def implicit_scores(model_err: torch.Tensor, ref_err: torch.Tensor) -> torch.Tensor:
    return model_err - ref_err


def preference_loss(s: torch.Tensor, weights: torch.Tensor, beta: float) -> torch.Tensor:
    """s: (B, K) implicit scores; weights: (B, K, K) with W[b, i, j] > 0 iff i is preferred over j."""
    logits = -beta * (s[:, :, None] - s[:, None, :])
    per_group = -(weights * F.logsigmoid(logits)).sum(dim=(1, 2))
    return per_group.mean()


def pair_stats(s: torch.Tensor, weights: torch.Tensor, beta: float) -> dict[str, float]:
    """Implicit accuracy: how often the model's scores order a labelled pair like the label;
    reward margin: the mean logit -beta*(s_i - s_j) over labelled pairs."""
    pairs = weights > 0
    n = int(pairs.sum())
    if n == 0:
        return {"implicit_acc": float("nan"), "reward_margin": float("nan"), "pairs": 0.0}
    diff = (s[:, :, None] - s[:, None, :])[pairs]
    return {"implicit_acc": float((diff < 0).float().mean()), "reward_margin": float((-beta * diff).mean()),
            "pairs": float(n)}


def _above(tau: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, K, K) bool: i strictly better ranked than j, both real images (not padding)."""
    valid = mask[:, :, None] & mask[:, None, :]
    return (tau[:, :, None] < tau[:, None, :]) & valid


@OBJECTIVES.register("rankdpo")
def rankdpo_weights(phi: torch.Tensor, tau: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RankDPO (paper Eq. 5-7): Delta_ij = |G_i - G_j| * |1/D(tau_i) - 1/D(tau_j)| for i ranked above j,
    with gain G = 2^phi - 1 and discount D(tau) = log(1 + tau) on the target rank."""
    gain = torch.pow(2.0, phi) - 1.0
    inv_disc = 1.0 / torch.log1p(tau.float())
    delta = (gain[:, :, None] - gain[:, None, :]).abs() * (inv_disc[:, :, None] - inv_disc[:, None, :]).abs()
    return delta * _above(tau, mask)


@OBJECTIVES.register("dpo")
def dpo_weights(phi: torch.Tensor, tau: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Diffusion-DPO on ranked data: one pair per group, the best image over the worst (weight 1);
    a group whose best and worst tie contributes nothing."""
    big = torch.finfo(phi.dtype).max
    best = torch.where(mask, phi, torch.full_like(phi, -big)).argmax(dim=1)
    worst = torch.where(mask, phi, torch.full_like(phi, big)).argmin(dim=1)
    w = torch.zeros(phi.shape + phi.shape[1:], dtype=phi.dtype, device=phi.device)
    rows = torch.arange(phi.shape[0], device=phi.device)
    strict = phi[rows, best] > phi[rows, worst]
    w[rows, best, worst] = strict.to(phi.dtype)
    return w
