"""What a denoiser is trained to predict, and from which noisy input.

- epsilon / v_prediction (DDPM, SD1.5 / SDXL / the shapes zoo): x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps,
  target eps or v = sqrt(a_t) eps - sqrt(1 - a_t) x0, with a_t the scheduler's alphas_cumprod.
- flow (rectified flow, SD3 / SD3.5): x_t = (1 - t) x0 + t eps, target v = eps - x0, t in (0, 1); the
  transformer receives t * num_train_timesteps as its timestep, as the SD3 pipelines do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Parametrization:
    kind: str  # "epsilon" | "v_prediction" | "flow"
    num_train_timesteps: int = 1000
    alphas_cumprod: torch.Tensor | None = None

    @classmethod
    def from_scheduler(cls, scheduler: Any) -> Parametrization:
        cfg = scheduler.config
        if type(scheduler).__name__.startswith("FlowMatch"):
            return cls("flow", cfg.num_train_timesteps)
        from diffusers import DDPMScheduler

        ddpm = DDPMScheduler.from_config(cfg)  # the training-time noise schedule of this model
        return cls(cfg.get("prediction_type", "epsilon"), cfg.num_train_timesteps, ddpm.alphas_cumprod.float())

    def sample_t(self, n: int, generator: torch.Generator) -> torch.Tensor:
        if self.kind == "flow":
            return torch.rand(n, generator=generator)
        return torch.randint(0, self.num_train_timesteps, (n,), generator=generator)

    def model_timestep(self, t: torch.Tensor) -> torch.Tensor:
        return t * self.num_train_timesteps if self.kind == "flow" else t

    def noisy_and_target(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        shape = (-1,) + (1,) * (x0.dim() - 1)
        if self.kind == "flow":
            s = t.to(x0).view(shape)
            return (1 - s) * x0 + s * eps, eps - x0
        a = self.alphas_cumprod.to(x0.device)[t].to(x0).view(shape)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
        if self.kind == "epsilon":
            return x_t, eps
        if self.kind == "v_prediction":
            return x_t, a.sqrt() * eps - (1 - a).sqrt() * x0
        raise ValueError(f"unknown prediction type '{self.kind}'")


def predict(model: Any, x_t: torch.Tensor, timestep: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
    """One forward of a UNet2DConditionModel or an SD3-style transformer (the same conditioning dict:
    encoder_hidden_states, plus pooled_projections for SD3, or text_embeds and time_ids for SDXL)."""
    if "pooled_projections" in cond:
        return model(hidden_states=x_t, timestep=timestep, **cond).sample
    if "time_ids" in cond:
        added = {"text_embeds": cond["text_embeds"], "time_ids": cond["time_ids"]}
        return model(x_t, timestep, encoder_hidden_states=cond["encoder_hidden_states"], added_cond_kwargs=added).sample
    return model(x_t, timestep, **cond).sample
