"""Zoo generators: a CLIPTextModel and a UNet2DConditionModel trained together from scratch on the
latents of rendered scenes, saved as a StableDiffusionPipeline that `DiffusionPipeline.from_pretrained`
loads like any SD 1.x checkpoint.

Training is SD's: epsilon prediction, DDPM noising with the scaled_linear betas, captions dropped to ""
10% of the time so classifier-free guidance works. Two additions make CPU-length runs (a few thousand
steps) worth more: Min-SNR-5 loss weights (Hang et al. 2023), which stop the low-noise timesteps from
dominating the gradient, and an EMA of the weights, which is what gets saved.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .data import batch_indices
from .tokenizer import shapes_tokenizer
from .train_utils import EMA, lr_at, optimizer_step, seed_all, set_lr

SD_BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)


@dataclass(frozen=True)
class GeneratorConfig:
    """One zoo generator's architecture and training recipe (a zoo build's spec; logged in its zoo.json
    entry and model card)."""

    name: str
    unet_channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 1
    heads: int = 4  # diffusers' `attention_head_dim` is in fact the number of heads
    text_hidden: int = 32
    text_layers: int = 2
    steps: int = 1000
    batch_size: int = 64
    lr: float = 2e-3
    pool_size: int = 16000
    seed: int = 0
    caption_dropout: float = 0.1
    ema_decay: float = 0.999
    min_snr_gamma: float = 5.0
    # (name, step) pairs: the EMA weights at each step become a model of their own, so one run gives a
    # family graded by training length. Empty: only the final weights, under `name`.
    snapshots: tuple[tuple[str, int], ...] = ()

    def snapshot_steps(self) -> dict[int, str]:
        """{training step: model name} of the EMA snapshots to keep ({steps: name} without snapshots);
        ValueError when two snapshots share a step or a step is outside 1..steps."""
        steps = {step: name for name, step in self.snapshots} or {self.steps: self.name}
        if len(steps) != max(1, len(self.snapshots)) or not all(0 < s <= self.steps for s in steps):
            raise ValueError(
                f"{self.name}: snapshot steps must be distinct and within 1..{self.steps}: {self.snapshots}"
            )
        return steps

    def as_dict(self) -> dict:
        """The config as a plain dict (tuples kept), for zoo.json."""
        return asdict(self)


def make_text_encoder(hidden: int, layers: int, tokenizer):
    """A freshly initialised CLIPTextModel of width `hidden` and `layers` layers over `tokenizer`'s vocabulary,
    77 positions (CLIP's context), so the pipeline encodes (B, 77) ids to (B, 77, hidden) states."""
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_attention_heads=max(2, hidden // 16),
        num_hidden_layers=layers,
        vocab_size=len(tokenizer),
        max_position_embeddings=77,
        projection_dim=hidden,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(cfg)


def make_unet(cfg: GeneratorConfig):
    """A freshly initialised UNet2DConditionModel on the zoo VAE's (B, 4, 8, 8) latents, cross-attending to
    the (B, 77, text_hidden) text states at every resolution."""
    from diffusers import UNet2DConditionModel

    n = len(cfg.unet_channels)
    # Cross-attention at every resolution (8x8 and below): binding a color to a shape and placing one
    # object left of another are decided at the finest latent grid.
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=cfg.layers_per_block,
        block_out_channels=cfg.unet_channels,
        norm_num_groups=8,
        cross_attention_dim=cfg.text_hidden,
        attention_head_dim=cfg.heads,
        down_block_types=("CrossAttnDownBlock2D",) * n,
        up_block_types=("CrossAttnUpBlock2D",) * n,
    )


def make_scheduler():
    """The saved pipelines' sampler: DDIM (Song et al., arXiv 2010.02502) on SD's scaled_linear betas."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(**SD_BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def tokenize(tokenizer, captions: list[str]) -> torch.Tensor:
    """Token ids (B, model_max_length) int64, padded and truncated to the tokenizer's window (77)."""
    return tokenizer(
        captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


def _snr_weights(cfg: GeneratorConfig) -> torch.Tensor:
    from diffusers import DDPMScheduler

    ac = DDPMScheduler(**SD_BETAS).alphas_cumprod
    snr = ac / (1 - ac)
    return torch.clamp(snr, max=cfg.min_snr_gamma) / snr  # epsilon-prediction form of Min-SNR


def train_generator(
    cfg: GeneratorConfig,
    lat_mean: torch.Tensor,
    lat_std: torch.Tensor,
    captions: list[str],
    tokenizer=None,
    progress: Callable[[int, float], None] | None = None,
) -> dict[str, tuple]:
    """{name: (unet, text_encoder)}: the EMA weights at each snapshot step, trained on scaled VAE
    posteriors (N, 4, 8, 8) and their captions."""
    from diffusers import DDPMScheduler

    seed_all(cfg.seed)
    tokenizer = tokenizer or shapes_tokenizer()
    unet, text = make_unet(cfg).train(), make_text_encoder(cfg.text_hidden, cfg.text_layers, tokenizer).train()
    ema_unet, ema_text = EMA(unet, cfg.ema_decay), EMA(text, cfg.ema_decay)
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    noise_sched = DDPMScheduler(**SD_BETAS)
    weights = _snr_weights(cfg)
    ids, empty = tokenize(tokenizer, captions), tokenize(tokenizer, [""])[0]
    rng = np.random.default_rng([cfg.seed, 4])
    gen = torch.Generator().manual_seed(cfg.seed)
    batches = batch_indices(len(captions), cfg.batch_size, rng)
    wanted, snapshots = cfg.snapshot_steps(), {}
    for step in range(cfg.steps):
        set_lr(opt, lr_at(step, cfg.steps, cfg.lr, warmup=max(1, cfg.steps // 20)))
        idx = torch.from_numpy(next(batches))
        b = len(idx)
        z0 = lat_mean[idx] + lat_std[idx] * torch.randn(lat_mean[idx].shape, generator=gen)
        tok = ids[idx].clone()
        tok[torch.rand(b, generator=gen) < cfg.caption_dropout] = empty
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (b,), generator=gen)
        eps = torch.randn(z0.shape, generator=gen)
        pred = unet(noise_sched.add_noise(z0, eps, t), t, text(tok).last_hidden_state).sample
        loss = ((pred - eps) ** 2).mean((1, 2, 3)).mul(weights[t]).mean()
        optimizer_step(opt, loss, params)
        ema_unet.update(unet)
        ema_text.update(text)
        if progress:
            progress(step, float(loss.detach()))
        if step + 1 in wanted:
            snapshots[wanted[step + 1]] = (copy.deepcopy(ema_unet.shadow), copy.deepcopy(ema_text.shadow))
    return snapshots


def save_pipeline(folder: Path, vae, unet, text_encoder, tokenizer=None) -> Path:
    """Write a StableDiffusionPipeline (fp16 weights, DDIM scheduler) to `folder` with save_pretrained.

    Copies are cast, so the caller's float32 modules stay usable. Loading with dtype=float32 upcasts."""
    from diffusers import StableDiffusionPipeline

    half = [copy.deepcopy(m).to(torch.float16) for m in (vae, unet, text_encoder)]
    pipe = StableDiffusionPipeline(
        vae=half[0],
        unet=half[1],
        text_encoder=half[2],
        tokenizer=tokenizer or shapes_tokenizer(),
        scheduler=make_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    # transformers loads with the dtype its config names when none is asked for, while diffusers loads
    # float32: naming float32 keeps a plain from_pretrained(folder) from mixing fp16 and fp32 modules.
    te_config = Path(folder) / "text_encoder" / "config.json"
    te_config.write_text(te_config.read_text().replace('"dtype": "float16"', '"dtype": "float32"'))
    return Path(folder)
