"""Small pieces shared by the zoo's training loops: seeding, learning-rate schedule, EMA, sizes."""

from __future__ import annotations

import copy
import math
import random
from pathlib import Path

import numpy as np
import torch


def seed_all(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators with `seed` (numpy's modulo 2**32)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warmup then cosine decay to 10% of the peak: short CPU runs need a high early rate and a
    low final one, which is where most of the gain of a short run comes from."""
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate to `lr` times the group's `lr_scale` (default 1)."""
    for group in opt.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


class EMA:
    """Exponential moving average of a module's weights, with the usual warmup of the decay so that a
    run of a few hundred steps is not dominated by its random initialisation."""

    def __init__(self, module: torch.nn.Module, decay: float = 0.999) -> None:
        self.decay = decay
        self.shadow = copy.deepcopy(module).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        """One step: shadow <- d * shadow + (1 - d) * module, d = min(decay, (1 + n) / (10 + n)) after n
        updates; buffers are copied. RuntimeError/ValueError if the modules' parameters differ."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for e, p in zip(self.shadow.parameters(), module.parameters(), strict=True):
            e.lerp_(p.detach(), 1 - d)
        for e, b in zip(self.shadow.buffers(), module.buffers(), strict=True):
            e.copy_(b)


def param_count(*modules: torch.nn.Module) -> int:
    """Number of parameters (elements) of `modules` together."""
    return sum(p.numel() for m in modules for p in m.parameters())


def folder_bytes(folder: Path) -> int:
    """Size on disk of every file under `folder`, in bytes."""
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor, params, max_norm: float = 1.0) -> None:
    """One clipped update: the same step for the VAE, the generators and the rewards."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    opt.step()
