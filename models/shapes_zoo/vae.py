"""The zoo's shared autoencoder: a tiny AutoencoderKL, 32x32x3 -> 4x8x8, trained once on renders.

Three encoder blocks give a 4x downsampling (SD's 8x would leave 4x4 latents for objects of 10-14 px).
The loss is reconstruction MSE plus a small KL term, as for SD's VAE without its GAN and LPIPS parts;
the scenes are flat colored shapes on gray, which MSE alone reconstructs sharply enough for the
verifier. After training, `scaling_factor` is set to 1/std of the latents so diffusion sees
unit-variance data, the convention the StableDiffusionPipeline relies on when it decodes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .data import batch_indices, to_tensor
from .train_utils import lr_at, optimizer_step, seed_all, set_lr


@dataclass(frozen=True)
class VAEConfig:
    """The zoo VAE's encoder/decoder widths and its training recipe (module docstring); logged in zoo.json."""

    channels: tuple[int, ...] = (16, 32, 48)  # 97.5% of eval renders pass the verifier after a round trip
    steps: int = 1200
    batch_size: int = 32
    lr: float = 2e-3
    kl_weight: float = 1e-6
    seed: int = 0

    def as_dict(self) -> dict:
        """The config as a plain dict, for zoo.json."""
        return asdict(self)


def make_vae(channels: tuple[int, ...]):
    """A freshly initialised AutoencoderKL with one down/up block per entry of `channels`: (B, 3, 32, 32)
    images in [-1, 1] <-> (B, 4, 32 / 2^(len - 1), same) latents (4 x 8 x 8 for three blocks)."""
    from diffusers import AutoencoderKL

    n = len(channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=channels,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=32,
    )


def train_vae(images: np.ndarray, cfg: VAEConfig, progress: Callable[[int, float], None] | None = None):
    """An AutoencoderKL trained on the (N, 32, 32, 3) uint8 images, in eval mode, scaling_factor set."""
    seed_all(cfg.seed)
    vae = make_vae(cfg.channels).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0)
    rng = np.random.default_rng([cfg.seed, 3])
    batches = batch_indices(len(images), cfg.batch_size, rng)
    for step in range(cfg.steps):
        set_lr(opt, lr_at(step, cfg.steps, cfg.lr, warmup=max(1, cfg.steps // 20)))
        x = to_tensor(images[next(batches)])
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        mse = torch.nn.functional.mse_loss(rec, x)
        loss = mse + cfg.kl_weight * post.kl().mean()
        optimizer_step(opt, loss, vae.parameters())
        if progress:
            progress(step, float(mse.detach()))
    vae.eval().requires_grad_(False)
    mean, _ = encode(vae, images[: min(len(images), 2048)], scaled=False)
    vae.register_to_config(scaling_factor=float(1.0 / mean.std()))
    return vae


@torch.no_grad()
def encode(vae, images: np.ndarray, scaled: bool = True, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of every image, (N, 4, 8, 8) each, times scaling_factor when `scaled`."""
    means, stds = [], []
    for start in range(0, len(images), batch):
        post = vae.encode(to_tensor(images[start : start + batch])).latent_dist
        means.append(post.mean)
        stds.append(post.std)
    s = float(vae.config.scaling_factor) if scaled else 1.0
    return torch.cat(means) * s, torch.cat(stds) * s


@torch.no_grad()
def reconstruct(vae, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """Encode (posterior mean) and decode: uint8 images, to check what the verifier sees after the VAE."""
    out = []
    for start in range(0, len(images), batch):
        x = to_tensor(images[start : start + batch])
        rec = vae.decode(vae.encode(x).latent_dist.mean).sample
        out.append(((rec.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).movedim(-3, -1).numpy())
    return np.concatenate(out)
