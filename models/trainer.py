"""Preference fine-tuning of a diffusers UNet pipeline with accelerate: one readable loop.

Data: for each prompt, its K ranked images (phi, tau from Algorithm 1). The VAE encodes every image
once and the text encoder every prompt once, before the loop. Each step takes `prompts_per_step`
groups; the K images of a group share one timestep and one noise draw and go through the UNet in one
batched forward. The reference is the same UNet with its LoRA adapters disabled (no second copy), or
a frozen copy for a full fine-tune.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from models.objectives import OBJECTIVES, implicit_scores, pair_stats, preference_loss
from synrank.config import GeneratorSpec, TrainConfig
from synrank.models_io import resolve_model_path


@dataclass
class RankedGroups:
    """Padded per-prompt groups: latent index per slot (-1 = padding), phi, tau, mask, text embedding."""

    index: torch.Tensor  # (P, K) long
    phi: torch.Tensor  # (P, K) float
    tau: torch.Tensor  # (P, K) long
    mask: torch.Tensor  # (P, K) bool
    prompt_embeds: torch.Tensor  # (P, L, D)
    latents: torch.Tensor  # (N, C, h, w)

    def batch(self, rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        idx = self.index[rows].clamp(min=0)
        return self.latents[idx], self.prompt_embeds[rows], self.phi[rows], self.tau[rows], self.mask[rows]


def _to_pixels(images: list[Image.Image], size: int) -> torch.Tensor:
    arrs = [np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC), dtype=np.float32) for im in images]
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2) / 127.5 - 1.0


@torch.no_grad()
def encode_prompts(pipe, prompts: list[str], device: str) -> torch.Tensor:
    tok = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt")
    return pipe.text_encoder(tok.input_ids.to(device))[0]


@torch.no_grad()
def build_groups(pipe, ranked: pd.DataFrame, images: Callable[[list[str]], list[Image.Image]], size: int,
                 device: str, batch_size: int = 32) -> RankedGroups:
    """Encode images (VAE, once) and prompts (text encoder, once) into padded ranked groups."""
    ranked = ranked[ranked["k"] >= 2].sort_values(["prompt_id", "tau", "image_id"]).reset_index(drop=True)
    ids = list(ranked["image_id"])
    lat = []
    for start in tqdm(range(0, len(ids), batch_size), desc="encode latents", unit="batch"):
        px = _to_pixels(images(ids[start:start + batch_size]), size).to(device, pipe.vae.dtype)
        lat.append(pipe.vae.encode(px).latent_dist.mean * pipe.vae.config.scaling_factor)
    latents = torch.cat(lat).float()
    groups = list(ranked.groupby("prompt_id", sort=True))
    k_max = max(len(g) for _, g in groups)
    P = len(groups)
    index = torch.full((P, k_max), -1, dtype=torch.long)
    phi, tau = torch.zeros(P, k_max), torch.full((P, k_max), k_max + 1, dtype=torch.long)
    for p, (_, g) in enumerate(groups):
        n = len(g)
        index[p, :n] = torch.tensor(g.index.to_numpy())
        phi[p, :n] = torch.tensor(g["phi"].to_numpy(), dtype=torch.float32)
        tau[p, :n] = torch.tensor(g["tau"].to_numpy())
    prompts = [g["prompt"].iloc[0] for _, g in groups]
    embeds = torch.cat([encode_prompts(pipe, prompts[i:i + batch_size], device) for i in range(0, P, batch_size)])
    return RankedGroups(index, phi, tau, index >= 0, embeds.float(), latents)


def denoise_errors(unet, scheduler, latents: torch.Tensor, embeds: torch.Tensor, t: torch.Tensor,
                   noise: torch.Tensor) -> torch.Tensor:
    """Per-image squared error of the UNet's prediction. latents (B, K, C, h, w); t (B,); noise
    (B, C, h, w) shared by the K images of a group. Returns (B, K)."""
    B, K = latents.shape[:2]
    x0 = latents.flatten(0, 1)
    eps = noise[:, None].expand_as(latents).flatten(0, 1)
    tt = t.repeat_interleave(K)
    x_t = scheduler.add_noise(x0, eps, tt)
    kind = scheduler.config.prediction_type
    target = eps if kind == "epsilon" else scheduler.get_velocity(x0, eps, tt)
    pred = unet(x_t, tt, encoder_hidden_states=embeds.repeat_interleave(K, dim=0)).sample
    return F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3)).view(B, K)


def train(spec: GeneratorSpec, cfg: TrainConfig, ranked: pd.DataFrame,
          images: Callable[[list[str]], list[Image.Image]], out_dir: Path,
          log: Callable[[dict[str, float], int], None] = lambda m, s: None) -> dict[str, float]:
    """Tune `spec`'s pipeline on ranked groups; saves LoRA weights or a full pipeline in out_dir."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from diffusers import DDPMScheduler, DiffusionPipeline

    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum)
    set_seed(cfg.seed)
    base = resolve_model_path(spec.path, what=f"generator '{spec.name}'")
    pipe = DiffusionPipeline.from_pretrained(base).to(accelerator.device)
    pipe.set_progress_bar_config(disable=True)
    size = cfg.resolution or spec.height
    groups = build_groups(pipe, ranked, images, size, accelerator.device)
    unet = pipe.unet
    for module in (pipe.vae, pipe.text_encoder, unet):
        module.requires_grad_(False)
    if cfg.lora_rank > 0:
        from peft import LoraConfig

        unet.add_adapter(LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_rank, init_lora_weights="gaussian",
                                    target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
        ref_unet = None
    else:
        ref_unet = copy.deepcopy(unet).eval()
        unet.requires_grad_(True)
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate)
    unet, opt = accelerator.prepare(unet, opt)
    noise_sched = DDPMScheduler.from_config(pipe.scheduler.config)
    objective = OBJECTIVES.get(cfg.objective)
    rng = torch.Generator().manual_seed(cfg.seed)
    P = groups.index.shape[0]
    last: dict[str, float] = {}
    unet.train()
    for step in tqdm(range(1, cfg.steps + 1), desc=f"train {cfg.objective}", unit="step"):
        with accelerator.accumulate(unet):
            rows = torch.randint(0, P, (min(cfg.prompts_per_step, P),), generator=rng)
            lat, emb, phi, tau, mask = (x.to(accelerator.device) for x in groups.batch(rows))
            t = torch.randint(0, noise_sched.config.num_train_timesteps, (len(rows),), generator=rng)
            noise = torch.randn(lat.shape[:1] + lat.shape[2:], generator=rng).to(lat)
            t = t.to(accelerator.device)
            model_err = denoise_errors(unet, noise_sched, lat, emb, t, noise)
            with torch.no_grad():
                if ref_unet is None:
                    accelerator.unwrap_model(unet).disable_adapters()
                    ref_err = denoise_errors(unet, noise_sched, lat, emb, t, noise)
                    accelerator.unwrap_model(unet).enable_adapters()
                else:
                    ref_err = denoise_errors(ref_unet, noise_sched, lat, emb, t, noise)
            s = implicit_scores(model_err, ref_err)
            weights = objective(phi, tau, mask)
            loss = preference_loss(s, weights, cfg.beta)
            accelerator.backward(loss)
            grad_norm = accelerator.clip_grad_norm_(params, 1.0) if accelerator.sync_gradients else None
            opt.step()
            opt.zero_grad()
        if step % cfg.log_every == 0 or step == cfg.steps:
            last = {"loss": loss.item(), "lr": opt.param_groups[0]["lr"],
                    "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
                    **pair_stats(s.detach(), weights, cfg.beta)}
            log(last, step)
    save_tuned(accelerator.unwrap_model(unet), pipe, spec, cfg, out_dir)
    return last


def save_tuned(unet, pipe, spec: GeneratorSpec, cfg: TrainConfig, out_dir: Path) -> None:
    """LoRA -> pytorch_lora_weights.safetensors (loadable with pipe.load_lora_weights);
    full -> a whole diffusers pipeline folder. tuned.json says which, and from which base."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.lora_rank > 0:
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
        type(pipe).save_lora_weights(out_dir, unet_lora_layers=layers, safe_serialization=True)
    else:
        pipe.unet = unet
        pipe.save_pretrained(out_dir / "pipeline", safe_serialization=True)
    kind = "lora" if cfg.lora_rank > 0 else "full"
    (out_dir / "tuned.json").write_text(json.dumps({"base": spec.model_dump(), "kind": kind}, indent=2) + "\n")


def tuned_spec(model_dir: Path) -> tuple[GeneratorSpec, GeneratorSpec]:
    """(base, tuned) generator specs from a folder written by save_tuned; paths stay relative to it
    in the file so the folder can move (DVC cache, S3)."""
    info = json.loads((model_dir / "tuned.json").read_text())
    base = GeneratorSpec.model_validate(info["base"])
    update = {"lora": str(model_dir)} if info["kind"] == "lora" else {"path": str(model_dir / "pipeline")}
    return base, base.model_copy(update={"name": f"{base.name}-tuned", **update})
