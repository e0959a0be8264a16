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


def _valid_pairs(mask: torch.Tensor) -> torch.Tensor:
    return mask[:, :, None] & mask[:, None, :]


def rankdpo_pairs(phi: torch.Tensor, tau: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RankDPO (paper Eq. 5-7): Delta_ij = |G_i - G_j| * |1/D(tau_i) - 1/D(tau_j)| for i ranked above j,
    with gain G = 2^phi - 1 and discount D(tau) = log(1 + tau) on the target rank."""
    gain = torch.pow(2.0, phi) - 1.0
    inv_disc = 1.0 / torch.log1p(tau.float())
    delta = (gain[:, :, None] - gain[:, None, :]).abs() * (inv_disc[:, :, None] - inv_disc[:, None, :]).abs()
    return delta * ((tau[:, :, None] < tau[:, None, :]) & _valid_pairs(mask))


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
    return gap.clamp(min=0) * ((adv[:, :, None] > adv[:, None, :]) & _valid_pairs(mask))


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


def derangement(n: int, generator: torch.Generator) -> torch.Tensor:
    """A random permutation with no fixed point (Sattolo's cycle), so no image is paired with itself:
    SUDO's public code uses randperm, which leaves about 1/B of a batch paired with itself (zero
    gradient). n = 1 has no derangement: the identity is returned and its pair carries no signal."""
    perm = torch.arange(n)
    for i in range(n - 1, 0, -1):
        j = int(torch.randint(0, i, (1,), generator=generator))
        perm[i], perm[j] = perm[j].clone(), perm[i].clone()
    return perm
