"""One batch of ranked groups as the objectives see it, and the denoising errors they compare.

A batch is B ranked groups (prompts) of K images each: their latents, text conditioning, labels, ranks and
mask, plus one timestep and one noise draw per group, shared by its K images. `preference_batch` is the one
builder: the training step (models.trainer) and the held-out accuracy (models.heldout) both draw through
it, so both consume the generator in the same order (the batch's own draws, then t, then the noise).
The errors are Diffusion-DPO's (Wallace et al. 2023, arXiv 2311.12908): each image's denoising squared
error under the tuned model and under the reference.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.objectives import Objective, derangement
from models.parametrization import Parametrization, predict
from models.train_data import RankedGroups


def denoise_errors(
    model,
    param: Parametrization,
    latents: torch.Tensor,
    cond: dict[str, torch.Tensor],
    t: torch.Tensor,
    noise: torch.Tensor,
    used: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-image squared error. latents (B, K, C, h, w); t (B,); noise (B, C, h, w) shared by the K
    images of a group; cond per group; used (B, K) bool, the images to forward (default, or none: all). Returns (B, K):
    the errors of the used images, 0 elsewhere. The used images go through the model in one batch, in
    row-major order, so with every image used the batch is the one the model would see without `used`."""
    B, K = latents.shape[:2]
    if used is None or not used.any():  # none used (every pair ties): a zero loss that still has a graph
        used = torch.ones(B, K, dtype=torch.bool)
    g, k = used.cpu().nonzero(as_tuple=True)  # (N,) group and slot of each forwarded image
    g, k = g.to(latents.device), k.to(latents.device)
    x0, eps, tt = latents[g, k], noise[g], t[g]
    x_t, target = param.noisy_and_target(x0, eps, tt)
    pred = predict(model, x_t, param.model_timestep(tt), {name: v[g] for name, v in cond.items()})
    err = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    weight = param.loss_weight(tt)  # Min-SNR when configured
    err = err if weight is None else err * weight.to(err.device)
    return err.new_zeros(B, K).index_put((g, k), err)


def draw_rows(
    n_groups: int, n: int, obj: Objective, rng: torch.Generator, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """The rows (groups) of one batch, (min(n, n_groups),) long. Ranked objectives draw with replacement,
    uniformly or, given `weights` (n_groups,) (train.balance_tasks), in proportion to them; self-pair objectives
    (SUDO) without, so that the deranged batch mate always comes from another prompt (with replacement about
    1/P of SUDO's negatives would share the prompt of their positive)."""
    n = min(n, n_groups)
    if obj.self_pairs:
        return torch.randperm(n_groups, generator=rng)[:n]
    if weights is not None:
        return torch.multinomial(weights, n, replacement=True, generator=rng)
    return torch.randint(0, n_groups, (n,), generator=rng)


def objective_label(g: RankedGroups, obj: Objective) -> torch.Tensor:
    """The (B, K) value an objective's weights are computed from: Algorithm 1's phi, or the
    group-standardized raw rewards (`advantage`, models.ranking) for GPO."""
    if obj.label == "phi":
        return g.phi
    if g.advantage is None:
        raise ValueError(
            f"objective needs the rankings' '{obj.label}' column, which these rankings lack: run the rank stage again"
        )
    return g.advantage


@dataclass
class BatchPlan:
    """One drawn batch before anything is read: which images (index (B, K) into the groups' latents, -1 =
    padding), which groups' text conditioning (rows (B,)), and the labels, ranks and mask (B, K)."""

    index: torch.Tensor
    rows: torch.Tensor
    label: torch.Tensor
    tau: torch.Tensor
    mask: torch.Tensor

    def part(self, part: slice) -> BatchPlan:
        """The groups in `part` of this plan."""
        return BatchPlan(self.index[part], self.rows[part], self.label[part], self.tau[part], self.mask[part])


def plan_batch(groups: RankedGroups, obj: Objective, rows: torch.Tensor, rng: torch.Generator) -> BatchPlan:
    """The batch of `rows` (B,): each group's images with the objective's label (phi, or GPO's advantage:
    objective_label). SUDO pairs each group's image (a random member) with a deranged batch mate's image
    under the first one's caption, labelled (1, 0), K = 2. A pair whose two images share a prompt (the same
    row, or the same text conditioning) has its second slot masked out: no preference pair, only the SFT
    term on the first."""
    g = groups.select(rows)
    if not obj.self_pairs:
        return BatchPlan(g.index, rows, objective_label(g, obj), g.tau, g.mask)
    counts = g.mask.sum(dim=1)
    pick = (torch.rand(len(rows), generator=rng) * counts).long()
    own = g.index[torch.arange(len(rows)), pick]
    perm = derangement(len(rows), rng)
    pair = torch.stack([own, own[perm]], dim=1)
    text = groups.cond_of(rows)["encoder_hidden_states"]
    same_prompt = (rows == rows[perm]) | (text == text[perm]).flatten(1).all(dim=1)
    mask = torch.stack([torch.ones(len(rows), dtype=torch.bool), ~same_prompt], dim=1)
    ones = torch.ones(len(rows), 2)
    return BatchPlan(pair, rows, ones * torch.tensor([1.0, 0.0]), (ones * torch.tensor([1, 2])).long(), mask)


def make_batch(groups: RankedGroups, obj: Objective, rows: torch.Tensor, rng: torch.Generator) -> tuple:
    """plan_batch with its data read: (latents (B, K, ...), cond, label, tau, mask)."""
    p = plan_batch(groups, obj, rows, rng)
    return groups.latents_of(p.index), groups.cond_of(p.rows), p.label, p.tau, p.mask


@dataclass
class PreferenceBatch:
    """A planned batch's data with its noise draw. On `device`: latents (B, K, C, h, w), cond (per group),
    t (B,) (discrete steps or flow sigmas, Parametrization.sample_t) and noise (B, C, h, w). On the CPU:
    label (B, K) (phi or GPO's advantage), tau (B, K) ranks (1 = best) and mask (B, K) of real images."""

    latents: torch.Tensor
    cond: dict[str, torch.Tensor]
    label: torch.Tensor
    tau: torch.Tensor
    mask: torch.Tensor
    t: torch.Tensor
    noise: torch.Tensor


def shard_slice(n: int, index: int, count: int) -> slice:
    """Process `index` of `count`'s contiguous share of n groups (n must divide by count): data parallelism
    splits one drawn batch, so every process count trains on the same groups, t and noise."""
    share = n // count
    return slice(index * share, (index + 1) * share)


def preference_batch(
    groups: RankedGroups,
    obj: Objective,
    rows: torch.Tensor,
    rng: torch.Generator,
    param: Parametrization,
    device,
    shard: tuple[int, int] = (0, 1),
) -> PreferenceBatch:
    """The batch of `rows` (B,) of `groups`: plan_batch, then one timestep and one noise draw per group from
    `rng` in that order; then `shard` = (process index, process count)'s share of it (shard_slice), whose
    latents and conditioning alone are read, moved to `device`. Raises plan_batch's ValueError (a label the
    rankings lack)."""
    plan = plan_batch(groups, obj, rows, rng)
    t = param.sample_t(len(rows), rng)
    noise = torch.randn((len(rows), *groups.latents.shape[1:]), generator=rng)  # (B, C, h, w)
    part = shard_slice(len(rows), *shard)
    mine = plan.part(part)
    latents = groups.latents_of(mine.index).to(device)
    cond = {k: v.to(device) for k, v in groups.cond_of(mine.rows).items()}
    return PreferenceBatch(latents, cond, mine.label, mine.tau, mine.mask, t[part].to(device), noise[part].to(device))


def paired_errors(
    model, ref, param: Parametrization, batch: PreferenceBatch, raw=None, used: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tuned and reference denoise_errors, each (B, K), on the same inputs, for the `used` (B, K) images
    (default all; 0 elsewhere). `ref` None means the reference is `raw` (the unwrapped model, default `model`)
    with its LoRA adapters disabled; the reference pass keeps no graph. `raw` is needed when `model` is
    accelerate's wrapper."""
    raw = raw if raw is not None else model
    inputs = (param, batch.latents, batch.cond, batch.t, batch.noise, used)
    model_err = denoise_errors(model, *inputs)
    with torch.no_grad():
        if ref is None:
            with adapters_disabled(raw):
                ref_err = denoise_errors(raw, *inputs)
        else:
            ref_err = denoise_errors(ref, *inputs)
    return model_err, ref_err


@contextmanager
def adapters_disabled(model) -> Iterator[None]:
    """`model` without its LoRA adapters inside the block, on again after it (also after an error): what
    diffusers' disable_adapters() then enable_adapters() do (each peft tuner layer's enable_adapters(False),
    then True), with one walk over the model's modules instead of one for each switch. Raises ValueError for
    a model without adapters."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no LoRA adapters to disable (lora_rank 0 needs a reference)")
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer in layers:
            layer.enable_adapters(True)
