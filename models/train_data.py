"""Training data for preference objectives: ranked images as padded per-prompt groups.

An image's latents are the ones the generate stage stored beside it (the very tensor its generator's VAE
decoded into the PNG that the rewards judged) when that VAE is the trained model's (same content id) and
they have the training size's shape; otherwise the VAE encodes the PNG, and a round trip through the VAE
is not the image that was judged. The text encoder encodes every prompt once. The result is written to
disk next to the checkpoints (models.group_store: latents and conditioning read one batch at a time), once
for all processes and resumes. Images keep their generator's
aspect: training runs at its height x width (`training_size`), and an image of another size is scaled to
cover that and center-cropped (`fit_image`), never squashed."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

from models.generators.base import component_id
from models.group_store import NpyRows, Rows, load_fields, npy_rows, save_small, subset, take
from synrank import atomic
from synrank.config import GeneratorSpec, TrainConfig
from synrank.models_io import resolve_model_path

ENCODERS = ("vae", "text_encoder", "text_encoder_2", "text_encoder_3")  # a pipeline's frozen encoding parts


@dataclass
class RankedGroups:
    """Group p holds latents[index[p, k]] for k with mask[p, k]; phi/tau are Algorithm 1's labels and
    advantage the group-standardized raw rewards (models.ranking.zscore) that GPO weighs."""

    index: torch.Tensor  # (P, K) long, -1 = padding
    phi: torch.Tensor  # (P, K) float
    tau: torch.Tensor  # (P, K) long
    mask: torch.Tensor  # (P, K) bool
    cond: dict[str, Rows]  # per prompt: encoder_hidden_states (P, L, D) [, pooled_projections (P, D)]
    latents: Rows  # (N, C, h, w), in the denoiser's (scaled) latent space; on disk after build_groups
    advantage: torch.Tensor | None = None  # (P, K) float; None for rankings without the column
    stored: torch.Tensor | None = None  # (N,) bool: latents[n] is the generate stage's, not the PNG encoded
    category: torch.Tensor | None = None  # (P,) long code of each prompt's category (GenEval task); None = unknown

    def __len__(self) -> int:
        return self.index.shape[0]

    def select(self, rows: torch.Tensor) -> RankedGroups:
        """The groups at `rows` ((R,) long or (P,) bool): every (P, ...) field indexed (cond on disk as a view,
        nothing read), `latents` and `stored` shared (index still points into them)."""
        adv = self.advantage[rows] if self.advantage is not None else None
        return replace(
            self,
            category=self.category[rows] if self.category is not None else None,
            index=self.index[rows],
            phi=self.phi[rows],
            tau=self.tau[rows],
            mask=self.mask[rows],
            cond={k: subset(v, rows) for k, v in self.cond.items()},
            advantage=adv,
        )

    def task_balanced_weights(self) -> torch.Tensor:
        """(P,) draw probabilities under which every category is drawn equally often: 1 / (n_categories x
        the size of the group's category). ValueError when the groups carry no category."""
        if self.category is None:
            raise ValueError("balance_tasks needs each prompt's category: the rankings carry no 'category' column")
        counts = torch.bincount(self.category)
        w = 1.0 / counts[self.category].double()
        return w / w.sum()

    def latents_of(self, index: torch.Tensor) -> torch.Tensor:
        """Latents of an index tensor of any shape (...) -> (..., C, h, w); padding (-1) gives image 0's, which
        the mask leaves out of the loss."""
        return take(self.latents, index.clamp(min=0))

    def cond_of(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """The text conditioning of the groups at `rows` (R,), each (R, ...), read from disk when it is there."""
        return {k: take(v, rows) for k, v in self.cond.items()}

    def latent_counts(self) -> dict[str, int]:
        """How many images' latents were the stored ones (`latents_stored`) and how many came from
        encoding the PNG (`latents_encoded`, in this run or the cached earlier one of the same config)."""
        stored = int(self.stored.sum()) if self.stored is not None else 0
        return {"latents_stored": stored, "latents_encoded": len(self.latents) - stored}


@dataclass(frozen=True)
class StoredLatents:
    """The generate stage's latents (synrank.shards, tasks.generate) and the VAE training decodes with."""

    vae: str  # content id of the trained model's VAE (models.generators.base.component_id)
    load: Callable[[list[str]], list[np.ndarray]]  # image ids -> their stored latents, float32 (C, h, w)


def latent_shape(vae, size: int | Size) -> str:
    """'CxHxW' of the latents `vae` gives an image of size = (height, width) pixels (how the manifest
    writes shapes; the pipelines' own vae_scale_factor, 2 ** (levels - 1)); '' (matches no stored
    latents) for an autoencoder without that config."""
    from synrank.shards import shape_text

    levels, channels = (getattr(vae.config, k, None) for k in ("block_out_channels", "latent_channels"))
    if not levels or not channels:
        return ""
    factor = 2 ** (len(levels) - 1)
    h, w = _hw(size)
    return shape_text((channels, h // factor, w // factor))


def usable_stored(ranked: pd.DataFrame, vae: str, shape: str) -> pd.Series:
    """Per row: whether its stored latents can stand for its image, i.e. they were decoded by the same VAE
    (content id `vae`) and have the training shape `shape`. All False for manifests without latents."""
    if not {"latent_vae", "latent_shape", "latent_member", "latent_sha256"} <= set(ranked.columns):
        return pd.Series(False, index=ranked.index)
    return (ranked["latent_vae"] == vae) & (ranked["latent_shape"] == shape) & (ranked["latent_member"] != "")


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
        embeds, _, pooled, _ = pipe.encode_prompt(
            prompt=prompts, prompt_2=None, prompt_3=None, device=device, do_classifier_free_guidance=False
        )
        return {"encoder_hidden_states": embeds.float().cpu(), "pooled_projections": pooled.float().cpu()}
    if getattr(pipe, "text_encoder_2", None) is not None and getattr(pipe, "unet", None) is not None:  # SDXL
        embeds, _, pooled, _ = pipe.encode_prompt(prompt=prompts, device=device, do_classifier_free_guidance=False)
        # (original size, crop top-left, target size), sizes as (h, w) like diffusers' _get_add_time_ids:
        # uncropped images at the training size.
        h, w = _hw(size)
        time_ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=torch.float32).repeat(len(prompts), 1)
        return {
            "encoder_hidden_states": embeds.float().cpu(),
            "text_embeds": pooled.float().cpu(),
            "time_ids": time_ids,
        }
    tok = pipe.tokenizer(
        prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True, return_tensors="pt"
    )
    return {"encoder_hidden_states": pipe.text_encoder(tok.input_ids.to(device))[0].float().cpu()}


def _cache_key(ranked: pd.DataFrame, use_stored: pd.Series, size: int | Size) -> str:
    """Content key of a group build: per image the content its latents come from (the stored latents'
    sha256 where they are used, else the image's sha256 from the manifest, else its id), prompt and
    labels, and the size. The cache folder itself is keyed by the train stage's fingerprint (the base
    weights, the config), so latents of other weights or settings are never met."""
    content = ranked["sha256"] if "sha256" in ranked else ranked["image_id"]
    if use_stored.any():
        content = content.where(~use_stored, "latent:" + ranked["latent_sha256"].astype(str))
    adv = ranked["advantage"] if "advantage" in ranked else [None] * len(ranked)
    rows = (
        f"{c}\t{p}\t{f}\t{t}\t{a}"
        for c, p, f, t, a in zip(content, ranked["prompt"], ranked["phi"], ranked["tau"], adv)
    )
    text = "\n".join(rows) + str(size)
    if "category" in ranked:  # the groups then carry category codes (balance_tasks)
        text += "\ncategory:" + "\t".join(ranked["category"].astype(str))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


@torch.no_grad()
def encode_images(
    pipe,
    ids: list[str],
    images: Callable[[list[str]], list[Image.Image]],
    size: int | Size,
    device: str,
    batch_size: int = 32,
) -> torch.Tensor:
    """(len(ids), C, h, w) float32 latents of the images, fitted to size = (height, width), through the
    VAE (its mean, no sampling), shifted and scaled into the denoiser's space as the pipelines do."""
    lat = []
    for start in tqdm(range(0, len(ids), batch_size), desc="encode latents", unit="batch"):
        px = _to_pixels(images(ids[start : start + batch_size]), size).to(device, pipe.vae.dtype)
        lat.append(pipe.vae.encode(px).latent_dist.mean.float().cpu())
    vae_cfg = pipe.vae.config
    return (torch.cat(lat) - (vae_cfg.get("shift_factor") or 0.0)) * vae_cfg.scaling_factor


def latent_chunks(
    pipe,
    ids: list[str],
    use_stored: list[bool],
    images: Callable[[list[str]], list[Image.Image]],
    stored: StoredLatents | None,
    size: int | Size,
    device: str,
    batch_size: int = 32,
) -> Iterator[torch.Tensor]:
    """The latents of `ids` in order, batch_size at a time, each (n, C, h, w) float32: the stored latents
    where use_stored, the encoded PNG elsewhere."""
    for start in tqdm(range(0, len(ids), batch_size), desc="latents", unit="batch", disable=len(ids) <= batch_size):
        chunk, use = ids[start : start + batch_size], use_stored[start : start + batch_size]
        keep = [i for i, u in zip(chunk, use) if u]
        encode = [i for i, u in zip(chunk, use) if not u]
        parts = {}
        if keep:
            parts.update(zip(keep, torch.from_numpy(np.stack(stored.load(keep))).float()))
        if encode:
            parts.update(zip(encode, encode_images(pipe, encode, images, size, device, len(encode))))
        yield torch.stack([parts[i] for i in chunk])


@torch.no_grad()
def build_groups(
    pipe,
    ranked: pd.DataFrame,
    images: Callable[[list[str]], list[Image.Image]],
    size: int | Size,
    device: str,
    cache: Path,
    batch_size: int = 32,
    stored: StoredLatents | None = None,
) -> RankedGroups:
    """ranked: image_id, prompt_id, prompt, phi, tau [, advantage, sha256, category, the manifest's latent_*
    columns]. Prompts with fewer than 2 images are dropped. size: the training (height, width) (see
    training_size; an int: square). Latents are (N, C, height/f, width/f) for the VAE's factor f: the stored
    ones where `stored` and usable_stored allow, else each image fitted to size with its aspect kept
    (fit_image) and encoded. The groups are written to cache/groups-<content key>/ (models.group_store) and
    read from there: an existing folder is the same content, built before (by another process or run)."""
    counts = ranked.groupby("prompt_id")["image_id"].transform("size")
    ranked = ranked[counts >= 2].sort_values(["prompt_id", "tau", "image_id"]).reset_index(drop=True)
    use = (
        usable_stored(ranked, stored.vae, latent_shape(pipe.vae, size))
        if stored is not None
        else pd.Series(False, index=ranked.index)
    )
    folder = cache / f"groups-{_cache_key(ranked, use, size)}"
    if not (folder / "groups.pt").exists():
        with atomic.building_dir(folder) as tmp:
            _write_groups(pipe, ranked, use, images, stored, size, device, batch_size, tmp)
    return RankedGroups(**load_fields(folder))


def _write_groups(pipe, ranked, use, images, stored, size, device, batch_size: int, folder: Path) -> None:
    """build_groups' files in `folder`: latents.npy, cond.<name>.npy per conditioning tensor, then groups.pt."""
    with npy_rows(folder / "latents.npy", len(ranked)) as out:
        for chunk in latent_chunks(pipe, list(ranked["image_id"]), list(use), images, stored, size, device, batch_size):
            out.write(chunk)
    groups = list(ranked.groupby("prompt_id", sort=True))
    prompts = [g["prompt"].iloc[0] for _, g in groups]
    with ExitStack() as files:  # one cond.<name>.npy per tensor the text encoders give
        writers: dict[str, NpyRows] = {}
        for i in range(0, len(prompts), batch_size):
            for name, value in encode_prompts(pipe, prompts[i : i + batch_size], device, size).items():
                if name not in writers:
                    writers[name] = files.enter_context(npy_rows(folder / f"cond.{name}.npy", len(prompts)))
                writers[name].write(value)
    index, phi, tau, advantage = _group_tensors(groups, "advantage" in ranked)
    category = None
    if "category" in ranked:  # codes in order of first appearance (groups are sorted by prompt id)
        names = [g["category"].iloc[0] for _, g in groups]
        category = torch.tensor([list(dict.fromkeys(names)).index(c) for c in names], dtype=torch.long)
    stored_mask = torch.tensor(use.to_numpy(bool))
    save_small(RankedGroups(index, phi, tau, index >= 0, {}, torch.empty(0), advantage, stored_mask, category), folder)


def _group_tensors(groups: list[tuple[str, pd.DataFrame]], with_advantage: bool) -> tuple:
    """(index, phi, tau, advantage or None), each (P, K_max), padded: index -1, phi 0, tau K_max + 1."""
    k_max, n = max(len(g) for _, g in groups), len(groups)
    index, phi = torch.full((n, k_max), -1, dtype=torch.long), torch.zeros(n, k_max)
    advantage = torch.zeros(n, k_max) if with_advantage else None
    tau = torch.full((n, k_max), k_max + 1, dtype=torch.long)
    for p, (_, g) in enumerate(groups):
        index[p, : len(g)] = torch.tensor(g.index.to_numpy())
        phi[p, : len(g)] = torch.tensor(g["phi"].to_numpy(), dtype=torch.float32)
        tau[p, : len(g)] = torch.tensor(g["tau"].to_numpy())
        if advantage is not None:
            advantage[p, : len(g)] = torch.tensor(g["advantage"].to_numpy(), dtype=torch.float32)
    return index, phi, tau, advantage


def training_groups(
    pipe,
    spec: GeneratorSpec,
    cfg: TrainConfig,
    ranked: pd.DataFrame,
    images: Callable,
    latents: Callable | None,
    device,
    cache: Path,
) -> RankedGroups:
    """build_groups at training_size(spec.height, spec.width, cfg.resolution), taking the stored latents
    (`latents`, by image id) of the images whose VAE is this base's own (the content of its vae folder)."""
    size = training_size(spec.height, spec.width, cfg.resolution)
    vae = component_id(resolve_model_path(spec.path, what=f"generator '{spec.name}'"), "vae")
    stored = StoredLatents(vae, latents) if latents is not None else None
    return build_groups(pipe, ranked, images, size, device, cache=cache, stored=stored)
