"""What a denoiser is trained to predict, from which noisy input, and at which timesteps.

- epsilon / v_prediction (DDPM, SD1.5 / SDXL / the shapes zoo): x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps,
  target eps or v = sqrt(a_t) eps - sqrt(1 - a_t) x0, with a_t the scheduler's alphas_cumprod; t is drawn
  uniformly from the num_train_timesteps discrete steps.
- flow (rectified flow, SD3 / SD3.5): x_t = (1 - s) x0 + s eps, target v = eps - x0, sigma s in (0, 1); the
  transformer receives s * num_train_timesteps as its timestep, as the SD3 pipelines and the scheduler's
  own `timesteps` (= sigmas * num_train_timesteps) do.

Timestep density for flow matching (`density`), as SD3's recipe (arXiv 2403.03206, Sec. 3.1 and 5.3.2)
and diffusers' SD3 training scripts: u in (0, 1) is drawn from
  - logit_normal: u = sigmoid(n), n ~ N(logit_mean, logit_std)  (the scripts' default, m = 0, s = 1)
  - mode: u = 1 - v - mode_scale * (cos^2(pi v / 2) - 1 + v), v ~ U(0, 1)
  - shifted: u ~ U(0, 1)
and then mapped through the scheduler's timestep shift, s = shift u / (1 + (shift - 1) u) (3.0 for SD3),
the map the FlowMatchEulerDiscreteScheduler applies to its own sigmas; the scripts get the same by
indexing the scheduler's shifted sigma table with u (we keep s continuous instead of rounding u to 1/1000).
With shift 3 the median sigma is 0.75 (uniform sigma: 0.5). `uniform` is plain s ~ U(0, 1), unshifted.
A scheduler with use_dynamic_shifting (resolution-dependent shift, e.g. Flux) has an unshifted table,
so its shift is 1 unless `flow_shift` says otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

FLOW_DENSITIES = ("uniform", "shifted", "logit_normal", "mode")
AUTO_FLOW_DENSITY = "logit_normal"  # diffusers' train_dreambooth(_lora)_sd3.py default weighting_scheme


def shift_sigma(u: torch.Tensor, shift: float) -> torch.Tensor:
    """The flow-matching timestep shift, s = shift u / (1 + (shift - 1) u); shift 1 is the identity."""
    return shift * u / (1 + (shift - 1) * u)


@dataclass
class Parametrization:
    """One model's training parametrization (module docstring): its prediction target, its noise schedule
    (alphas_cumprod, (num_train_timesteps,) float32, DDPM-type only) and how training timesteps are drawn."""

    kind: str  # "epsilon" | "v_prediction" | "flow"
    num_train_timesteps: int = 1000
    alphas_cumprod: torch.Tensor | None = None
    density: str = "uniform"  # flow only: one of FLOW_DENSITIES
    shift: float = 1.0  # flow only, used by every density but "uniform"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    mode_scale: float = 1.29
    snr_gamma: float | None = None  # Min-SNR-gamma loss weighting (epsilon / v-prediction only)
    # The trained part of the noise range, as fractions of it (0 = clean, 1 = pure noise): a 10-step sampler
    # lays out shapes, counts and positions in its first, noisiest steps, so training can be kept there.
    t_range: tuple[float, float] = (0.0, 1.0)

    @classmethod
    def from_scheduler(
        cls,
        scheduler: Any,
        density: str = "auto",
        flow_shift: float | None = None,
        t_range: tuple[float, float] = (0.0, 1.0),
        **density_args: float,
    ) -> Parametrization:
        """density "auto": logit_normal for flow matching (SD3's recipe), uniform discrete timesteps otherwise;
        flow_shift None: the scheduler's `shift`. density_args: logit_mean, logit_std, mode_scale, snr_gamma;
        t_range: the trained part of the noise range. A flow density or shift for a DDPM-type model cannot take
        effect and is refused (ValueError), as is a t_range outside 0 <= min < max <= 1."""
        cfg = scheduler.config
        t_range = (float(t_range[0]), float(t_range[1]))
        if not 0.0 <= t_range[0] < t_range[1] <= 1.0:
            raise ValueError(f"timestep_range {list(t_range)} must satisfy 0 <= min < max <= 1")
        if type(scheduler).__name__.startswith("FlowMatch"):
            density = AUTO_FLOW_DENSITY if density == "auto" else density
            if density not in FLOW_DENSITIES:
                raise ValueError(f"unknown timestep_density '{density}'; allowed: auto, {', '.join(FLOW_DENSITIES)}")
            if density == "uniform" and flow_shift is not None:
                raise ValueError("flow_shift has no effect with timestep_density 'uniform' (an unshifted sigma)")
            own = 1.0 if cfg.get("use_dynamic_shifting", False) else float(cfg.get("shift", 1.0))
            shift = own if flow_shift is None else float(flow_shift)
            if density_args.get("snr_gamma") is not None:
                raise ValueError(
                    "snr_gamma (Min-SNR weighting) applies to epsilon / v-prediction models only; "
                    f"{type(scheduler).__name__} is flow matching: choose its timestep_density instead"
                )
            return cls("flow", cfg.num_train_timesteps, None, density, shift, **density_args, t_range=t_range)
        if density not in ("auto", "uniform") or flow_shift is not None:
            what = f"timestep_density '{density}'" if density not in ("auto", "uniform") else "flow_shift"
            raise ValueError(
                f"{what} applies to flow-matching models only; {type(scheduler).__name__} trains on "
                "uniformly drawn discrete timesteps (use timestep_density 'auto' or 'uniform')"
            )
        from diffusers import DDPMScheduler

        ddpm = DDPMScheduler.from_config(cfg)  # the training-time noise schedule of this model
        return cls(
            cfg.get("prediction_type", "epsilon"),
            cfg.num_train_timesteps,
            ddpm.alphas_cumprod.float(),
            snr_gamma=density_args.get("snr_gamma"),
            t_range=t_range,
        )

    def sample_t(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n timesteps: discrete steps (long) for epsilon / v-prediction, sigmas in [0, 1] for flow; within
        t_range (steps round(lo T) .. round(hi T) - 1; a flow sigma mapped linearly into [lo, hi])."""
        lo, hi = self.t_range
        if self.kind != "flow":
            first = round(lo * self.num_train_timesteps)
            end = max(round(hi * self.num_train_timesteps), first + 1)
            return torch.randint(first, end, (n,), generator=generator)
        sigma = self._sample_sigma(n, generator)
        return sigma if (lo, hi) == (0.0, 1.0) else lo + (hi - lo) * sigma

    def _sample_sigma(self, n: int, generator: torch.Generator) -> torch.Tensor:
        if self.density == "logit_normal":
            u = torch.sigmoid(self.logit_mean + self.logit_std * torch.randn(n, generator=generator))
        else:
            u = torch.rand(n, generator=generator)
        if self.density == "mode":
            u = 1 - u - self.mode_scale * (torch.cos(math.pi * u / 2) ** 2 - 1 + u)
        return u if self.density == "uniform" else shift_sigma(u, self.shift)

    def describe(self) -> dict[str, Any]:
        """The effective timestep sampling, for the run's record."""
        if self.kind != "flow":
            out: dict[str, Any] = {"timestep_density": "uniform-discrete"}
        else:
            out = {"timestep_density": self.density}
        if self.t_range != (0.0, 1.0):
            out["timestep_range"] = f"{self.t_range[0]:g}-{self.t_range[1]:g}"
        if self.kind != "flow":
            return out
        if self.density != "uniform":
            out["timestep_shift"] = self.shift
        return out

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor | None:
        """Per-timestep weight of the squared error, (N,) float32, or None (unweighted).

        Min-SNR-gamma (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy"; the
        `--snr_gamma` of diffusers' training scripts): SNR(t) = alpha_bar / (1 - alpha_bar); the weight is
        min(SNR, gamma) / SNR for epsilon-prediction and min(SNR, gamma) / (SNR + 1) for v-prediction, so
        that every objective is a clipped x0-error. In the preference loss it rescales both the tuned and the
        reference error of a group by the same factor (one t per group): a per-timestep beta."""
        if self.snr_gamma is None:
            return None
        a = self.alphas_cumprod.to(t.device)[t].float()
        snr = a / (1 - a)
        clipped = torch.clamp(snr, max=self.snr_gamma)
        return clipped / (snr + 1) if self.kind == "v_prediction" else clipped / snr

    def model_timestep(self, t: torch.Tensor) -> torch.Tensor:
        """The timestep the denoiser is given for sample_t's (N,) t: sigma * num_train_timesteps for flow (as
        the SD3 pipelines pass it), the discrete step itself otherwise."""
        return t * self.num_train_timesteps if self.kind == "flow" else t

    def noisy_and_target(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(x_t, target) for clean latents x0 and noise eps, both (N, C, h, w), at sample_t's (N,) t, as in the
        module docstring: DDPM's x_t with target eps or v (Salimans & Ho, arXiv 2202.00512), or rectified
        flow's x_t = (1 - s) x0 + s eps with target eps - x0 (SD3, arXiv 2403.03206). ValueError for an
        unknown `kind`."""
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
