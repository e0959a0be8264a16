"""Training data for preference objectives: ranked images as padded per-prompt groups.

The VAE encodes every image once and the text encoder every prompt once, before training; the
result is cached on disk next to the checkpoints, so a resumed run does not encode again. Images keep
their generator's aspect: training runs at its height x width (`training_size`), and an image of another
size is scaled to cover that and center-cropped (`fit_image`), never squashed."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm


@dataclass
class RankedGroups:
    """Group p holds latents[index[p, k]] for k with mask[p, k]; phi/tau are Algorithm 1's labels and
    advantage the group-standardized raw rewards (models.ranking.zscore) that GPO weighs."""

    index: torch.Tensor  # (P, K) long, -1 = padding
    phi: torch.Tensor  # (P, K) float
    tau: torch.Tensor  # (P, K) long
    mask: torch.Tensor  # (P, K) bool
    cond: dict[str, torch.Tensor]  # per prompt: encoder_hidden_states (P, L, D) [, pooled_projections (P, D)]
    latents: torch.Tensor  # (N, C, h, w)
    advantage: torch.Tensor | None = None  # (P, K) float; None for rankings without the column

    def __len__(self) -> int:
        return self.index.shape[0]

    def select(self, rows: torch.Tensor) -> RankedGroups:
        adv = self.advantage[rows] if self.advantage is not None else None
        return RankedGroups(self.index[rows], self.phi[rows], self.tau[rows], self.mask[rows],
                            {k: v[rows] for k, v in self.cond.items()}, self.latents, adv)

    def latents_of(self, index: torch.Tensor) -> torch.Tensor:
        return self.latents[index.clamp(min=0)]


Size = tuple[int, int]  # (height, width) in pixels


def _hw(size: int | Size) -> Size:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def training_size(height: int, width: int, resolution: int = 0) -> Size:
    """(height, width) in pixels that training encodes images at; the generator's aspect is always kept.

    resolution 0: the generator's own height x width (a 48x32 generator trains at 32 x 48). Otherwise the
    shorter side becomes `resolution` and the longer one follows the aspect; both are then rounded down
    to a multiple of 8 (the VAE's downsampling), at least 8, so the aspect is kept up to that rounding
    (48x32 at resolution 64 -> 64 x 96)."""
    if not resolution:
        return height, width
    scale = resolution / min(height, width)
    h, w = (max(8, int(round(d * scale)) // 8 * 8) for d in (height, width))
    return h, w


def fit_image(image: Image.Image, size: int | Size) -> Image.Image:
    """`image` in RGB at `size` = (height, width) without distortion: scaled (bicubic) until it covers
    the target with its aspect kept, then center-cropped. An image of the target's aspect is only scaled;
    one of another aspect loses its margins instead of being squashed."""
    height, width = _hw(size)
    im = image.convert("RGB")
    if im.size == (width, height):
        return im
    scale = max(width / im.width, height / im.height)
    w, h = max(width, round(im.width * scale)), max(height, round(im.height * scale))
    im = im.resize((w, h), Image.BICUBIC)
    left, top = (w - width) // 2, (h - height) // 2
    return im.crop((left, top, left + width, top + height))


def _to_pixels(images: list[Image.Image], size: int | Size) -> torch.Tensor:
    """(N, 3, height, width) in [-1, 1] for size = (height, width) (an int: square); see fit_image."""
    arrs = [np.asarray(fit_image(im, size), dtype=np.float32) for im in images]
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2) / 127.5 - 1.0


@torch.no_grad()
def encode_prompts(pipe, prompts: list[str], device: str, size: int | Size) -> dict[str, torch.Tensor]:
    """The conditioning the denoiser takes, as the pipeline itself computes it (no CFG branch); size is
    the training (height, width) in pixels (an int: square), which SDXL's micro-conditioning names."""
    # inspect.signature sees through diffusers' LoRA-scale decorator (forward.__code__ would not).
    if hasattr(pipe, "transformer") and "pooled_projections" in inspect.signature(pipe.transformer.forward).parameters:
        embeds, _, pooled, _ = pipe.encode_prompt(prompt=prompts, prompt_2=None, prompt_3=None, device=device,
                                                  do_classifier_free_guidance=False)
        return {"encoder_hidden_states": embeds.float().cpu(), "pooled_projections": pooled.float().cpu()}
    if getattr(pipe, "text_encoder_2", None) is not None and getattr(pipe, "unet", None) is not None:  # SDXL
        embeds, _, pooled, _ = pipe.encode_prompt(prompt=prompts, device=device, do_classifier_free_guidance=False)
        # (original size, crop top-left, target size), sizes as (h, w) like diffusers' _get_add_time_ids:
        # uncropped images at the training size.
        h, w = _hw(size)
        time_ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=torch.float32).repeat(len(prompts), 1)
        return {"encoder_hidden_states": embeds.float().cpu(), "text_embeds": pooled.float().cpu(),
                "time_ids": time_ids}
    tok = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt")
    return {"encoder_hidden_states": pipe.text_encoder(tok.input_ids.to(device))[0].float().cpu()}


@torch.no_grad()
def build_groups(pipe, ranked: pd.DataFrame, images: Callable[[list[str]], list[Image.Image]],
                 size: int | Size, device: str, cache: Path | None = None, batch_size: int = 32) -> RankedGroups:
    """ranked: image_id, prompt_id, prompt, phi, tau. Prompts with fewer than 2 images are dropped.
    size: the training (height, width) (see training_size; an int: square); every image is fitted to it
    with its aspect kept (fit_image), so latents are (N, C, height/f, width/f) for the VAE's factor f."""
    counts = ranked.groupby("prompt_id")["image_id"].transform("size")
    ranked = ranked[counts >= 2].sort_values(["prompt_id", "tau", "image_id"]).reset_index(drop=True)
    # Keyed by content: each image's content id (`sha256`, from the manifest; else its id), prompt and
    # labels, and the size. The cache folder itself is keyed by the train stage's fingerprint (the base
    # weights, the config), so latents of other weights or settings are never met.
    content = ranked["sha256"] if "sha256" in ranked else ranked["image_id"]
    adv = ranked["advantage"] if "advantage" in ranked else [None] * len(ranked)
    rows = (f"{c}\t{p}\t{f}\t{t}\t{a}" for c, p, f, t, a in zip(content, ranked["prompt"], ranked["phi"],
                                                               ranked["tau"], adv))
    key = hashlib.sha256(("\n".join(rows) + str(size)).encode("utf-8", "surrogatepass")).hexdigest()[:16]
    path = cache / f"groups-{key}.pt" if cache else None
    if path is not None and path.exists():
        return RankedGroups(**torch.load(path))
    ids = list(ranked["image_id"])
    lat = []
    for start in tqdm(range(0, len(ids), batch_size), desc="encode latents", unit="batch"):
        px = _to_pixels(images(ids[start:start + batch_size]), size).to(device, pipe.vae.dtype)
        lat.append(pipe.vae.encode(px).latent_dist.mean.float().cpu())
    vae_cfg = pipe.vae.config
    latents = (torch.cat(lat) - (vae_cfg.get("shift_factor") or 0.0)) * vae_cfg.scaling_factor
    groups = list(ranked.groupby("prompt_id", sort=True))
    k_max = max(len(g) for _, g in groups)
    n = len(groups)
    index, phi = torch.full((n, k_max), -1, dtype=torch.long), torch.zeros(n, k_max)
    advantage = torch.zeros(n, k_max) if "advantage" in ranked else None
    tau = torch.full((n, k_max), k_max + 1, dtype=torch.long)
    for p, (_, g) in enumerate(groups):
        index[p, :len(g)] = torch.tensor(g.index.to_numpy())
        phi[p, :len(g)] = torch.tensor(g["phi"].to_numpy(), dtype=torch.float32)
        tau[p, :len(g)] = torch.tensor(g["tau"].to_numpy())
        if advantage is not None:
            advantage[p, :len(g)] = torch.tensor(g["advantage"].to_numpy(), dtype=torch.float32)
    prompts = [g["prompt"].iloc[0] for _, g in groups]
    parts = [encode_prompts(pipe, prompts[i:i + batch_size], device, size) for i in range(0, n, batch_size)]
    cond = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    out = RankedGroups(index, phi, tau, index >= 0, cond, latents, advantage)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({f.name: getattr(out, f.name) for f in fields(out)}, tmp)
        tmp.replace(path)
    return out
