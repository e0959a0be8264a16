"""Preference objectives for diffusion models, all built on one implicit score.

For image i of a group (the K images of one prompt, sharing one timestep t and one noise eps):

    s_i = ||target - pred_theta(x_t^i, t, c)||^2 - ||target - pred_ref(x_t^i, t, c)||^2

(mean over latent dims). Lower s_i means the tuned model, relative to the reference, prefers image i.
Every objective is the same loss

    L = - sum_{i,j} W_ij * log sigmoid(-beta * (s_i - s_j))  +  sum_i V_i * ||target - pred_theta^i||^2

(summed per group, averaged over groups) and differs only in W, which ordered pairs (i preferred over
j) it forms and how it weights them, and V, the weight of plain denoising on an image (SFT terms).

beta convention: logit = -beta * (s_i - s_j). Diffusion-DPO's code writes -0.5 * beta with beta = 5000;
ours equals that with beta = 2500 (and equals diffusers' SD1.5 DPO script, which uses 2500, no 0.5).

Two training settings modify W and V for any objective (`Shaping`, train.anchor_weight / train.min_margin):
- anchor (lambda): V += lambda * (1 / n_winners) on each group's winners (tau = 1), the denoising loss of the
  preferred images. A preference loss alone can be lowered by making the losers' error larger instead of the
  winners' smaller; the anchor keeps the winners' likelihood up (as RPO / DPO+NLL do for language models).
- min_margin (m): pairs whose labels differ by less than m get W = 0 (GPO's argument: near-ties are noise).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from synrank.registry import Registry

# Labels of a batch of groups, each (B, K): phi (Algorithm 1's win fraction, the group's reward),
# tau (target rank, 1 = best) and mask (False = padding slot).
Weights = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Objective:
    """One preference objective of the module's loss: how it turns a batch's (B, K) labels into pair weights W
    (B, K, K) and SFT weights V (B, K). Instances are registered by name in OBJECTIVES (`train.objective`)."""

    pairs: Weights | None = None  # -> W (B, K, K), W[b, i, j] > 0 iff i is preferred over j
    sft: Weights | None = None  # -> V (B, K), weight of the plain denoising loss of each image
    self_pairs: bool = False  # SUDO: groups are (dataset image, another batch image) under one caption
    label: str = "phi"  # which per-image value `pairs`/`sft` weigh: "phi" (Algorithm 1) or "advantage" (GPO)


OBJECTIVES: Registry[Objective] = Registry("objective")


def implicit_scores(model_err: torch.Tensor, ref_err: torch.Tensor) -> torch.Tensor:
    """s_i of the module docstring: (B, K) per-image mean squared errors of the tuned and the reference model's
    prediction (same noise, timestep, caption) -> (B, K); lower = the tuned model prefers the image more than
    the reference does (Diffusion-DPO, arXiv 2311.12908; RankDPO eq. 5, arXiv 2410.18013)."""
    return model_err - ref_err


def preference_loss(s: torch.Tensor, weights: torch.Tensor, beta: float) -> torch.Tensor:
    """s: (B, K) implicit scores; weights: (B, K, K). Summed over a group's pairs, mean over groups."""
    logits = -beta * (s[:, :, None] - s[:, None, :])
    return -(weights * F.logsigmoid(logits)).sum(dim=(1, 2)).mean()


@dataclass(frozen=True)
class Shaping:
    """Settings that reshape any objective's weights (module docstring): the anchor lambda on the winners'
    denoising loss and the label margin below which a pair carries no weight."""

    anchor: float = 0.0
    min_margin: float = 0.0


def winners(label: torch.Tensor, tau: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, K): 1 / n_winners on each group's images ranked first (tau = 1, real), 0 elsewhere; a group's
    weights sum to 1 (the mean denoising loss of its winners)."""
    top = (tau == 1) & mask
    return top.to(label.dtype) / top.sum(dim=1, keepdim=True).clamp(min=1).to(label.dtype)


def loss_weights(
    obj: Objective, label: torch.Tensor, tau: torch.Tensor, mask: torch.Tensor, shaping: Shaping = Shaping()
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(W (B, K, K) or None, V (B, K) or None): the objective's pair and SFT weights with `shaping` applied."""
    w = obj.pairs(label, tau, mask) if obj.pairs is not None else None
    if w is not None and shaping.min_margin > 0:
        w = w * ((label[:, :, None] - label[:, None, :]).abs() >= shaping.min_margin)
    v = obj.sft(label, tau, mask) if obj.sft is not None else None
    if shaping.anchor > 0:
        anchor = shaping.anchor * winners(label, tau, mask)
        v = anchor if v is None else v + anchor
    return w, v


def images_used(
    obj: Objective, label: torch.Tensor, tau: torch.Tensor, mask: torch.Tensor, shaping: Shaping = Shaping()
) -> torch.Tensor:
    """(B, K) bool: the images the objective's loss depends on, those in a pair of nonzero weight W or with a
    nonzero SFT weight V. DPO on K ranked images uses two per group (best and worst), SFT one, RankDPO all
    that are real: the trainer forwards only these (an image of zero weight adds exactly 0 to the loss)."""
    used = torch.zeros(label.shape, dtype=torch.bool)
    w, v = loss_weights(obj, label, tau, mask, shaping)
    if w is not None:
        used |= ((w != 0).any(dim=2) | (w != 0).any(dim=1)).cpu()
    if v is not None:
        used |= (v != 0).cpu()
    return used


def objective_loss(
    obj: Objective,
    model_err: torch.Tensor,
    ref_err: torch.Tensor | None,
    phi: torch.Tensor,
    tau: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    shaping: Shaping = Shaping(),
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, W) for one batch of groups; W is zeros for objectives without pairs."""
    w, v = loss_weights(obj, phi, tau, mask, shaping)
    loss = model_err.new_zeros(())
    if w is not None:
        w = w.to(model_err.device)
        loss = loss + preference_loss(implicit_scores(model_err, ref_err), w, beta)
    else:
        w = torch.zeros(phi.shape + phi.shape[1:], dtype=phi.dtype, device=model_err.device)
    if v is not None:
        loss = loss + (v.to(model_err) * model_err).sum(dim=1).mean()
    return loss, w


def winner_loser_scores(s: torch.Tensor, tau: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Mean implicit score s = err_theta - err_ref (module docstring) of the groups' winners (tau = 1) and of
    their losers (the last rank of each group): a run whose preference accuracy rises while `winner_s` rises too
    "wins" by making the losers worse, not the winners better (issue: anchored objectives)."""
    real = mask & (tau <= mask.shape[1])
    last = torch.where(real, tau, torch.zeros_like(tau)).amax(dim=1, keepdim=True)
    win, lose = real & (tau == 1), real & (tau == last) & (last > 1)
    mean = lambda m: float(s[m].mean()) if m.any() else float("nan")  # noqa: E731
    return {"winner_s": mean(win), "loser_s": mean(lose)}


def pair_stats(s: torch.Tensor, weights: torch.Tensor, beta: float) -> dict[str, float]:
    """Implicit accuracy: how often the model's scores order a labelled pair like the label;
    reward margin: the mean logit -beta*(s_i - s_j) over labelled pairs."""
    pairs = weights > 0
    n = int(pairs.sum())
    if n == 0:
        return {"implicit_acc": float("nan"), "reward_margin": float("nan"), "pairs": 0.0}
    diff = (s[:, :, None] - s[:, None, :])[pairs]
    return {
        "implicit_acc": float((diff < 0).float().mean()),
        "reward_margin": float((-beta * diff).mean()),
        "pairs": float(n),
    }


def valid_pairs(mask: torch.Tensor) -> torch.Tensor:
    """(B, K, K): both images of the pair are real (not padding)."""
    return mask[:, :, None] & mask[:, None, :]


def derangement(n: int, generator: torch.Generator) -> torch.Tensor:
    """A random permutation with no fixed point (Sattolo's cycle), so no image is paired with itself:
    SUDO's public code uses randperm, which leaves about 1/B of a batch paired with itself (zero
    gradient). n = 1 has no derangement: the identity is returned and its pair carries no signal."""
    perm = torch.arange(n)
    for i in range(n - 1, 0, -1):
        j = int(torch.randint(0, i, (1,), generator=generator))
        perm[i], perm[j] = perm[j].clone(), perm[i].clone()
    return perm
