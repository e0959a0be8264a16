"""The one CLIP-style image input pipeline shared by every reward that feeds a CLIP-like ViT.

CLIPScore, PickScore, the aesthetic predictor and ImageReward all use the OpenAI CLIP recipe: resize
the shortest side (bicubic), center-crop a square, scale to [0, 1], normalize with a mean/std. HPS v2
differs in one step only: it resizes the *longest* side and pads to a square with black (its
open_clip fork's `ResizeMaxSize`), so nothing of the image is cropped away. That is `fit="pad"`.

Geometry follows the torchvision/HPS code the checkpoints were trained with, so the pixels match:
- crop: the short side becomes `resize`, the long side `int(resize * long / short)` (truncated). The
  crop offset of an odd margin differs between the two reference stacks: torchvision's CenterCrop
  (open_clip, OpenAI CLIP, ImageReward) uses `int(round(margin / 2))`, half to even, while
  transformers' CLIPImageProcessor (PickScore, MPS) uses `int(margin / 2)`: `crop_offset`.
- pad: both sides are scaled by `size / long` and rounded; the pad is split `pad // 2` before and the
  remainder after. HPS skips resize and pad when the long side already equals `size`; we still pad, so
  a non-square input always becomes square (HPS would crash on it instead).
Only the per-image resize runs in PIL; the [0, 1] scaling and normalization run once on the stacked
uint8 batch, which is what makes batched scoring cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class ClipPreprocess:
    """The CLIP-style image pipeline of one reward: PIL images -> (N, 3, size, size) normalized float32.
    `fit="crop"` is OpenAI CLIP's resize + center crop, `fit="pad"` HPS v2's resize + pad (module docstring)."""

    size: int  # side of the square the model sees
    mean: tuple[float, ...] = OPENAI_MEAN
    std: tuple[float, ...] = OPENAI_STD
    fit: Literal["crop", "pad"] = "crop"
    resize: int | None = None  # crop mode: short side before the crop (CLIP: == size)
    resample: int = Image.Resampling.BICUBIC
    fill: int = 0  # pad colour, in 0..255 pixel space before normalization
    crop_offset: Literal["round", "floor"] = "round"  # torchvision vs transformers, see above

    def fit_image(self, image: Image.Image) -> Image.Image:
        """One image as the square `size`x`size` RGB picture the model sees, before normalization."""
        # RGB first (the reference pipelines convert after resizing; identical for RGB input, and it
        # keeps RGBA/L/P inputs from being resampled in a mode the model never saw).
        image = image.convert("RGB")
        w, h = image.size
        if self.fit == "pad":
            scale = self.size / max(w, h)
            nw, nh = round(w * scale), round(h * scale)
            if (nw, nh) != (w, h):
                image = image.resize((nw, nh), self.resample)
            canvas = Image.new("RGB", (self.size, self.size), (self.fill,) * 3)
            canvas.paste(image, ((self.size - nw) // 2, (self.size - nh) // 2))
            return canvas
        short = self.resize or self.size
        nw, nh = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
        if (nw, nh) != (w, h):
            image = image.resize((nw, nh), self.resample)
        offset = (lambda m: int(round(m / 2.0))) if self.crop_offset == "round" else (lambda m: m // 2)
        top, left = offset(nh - self.size), offset(nw - self.size)
        return image.crop((left, top, left + self.size, top + self.size))

    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(N, 3, size, size) float32, normalized."""
        batch = np.stack([np.asarray(self.fit_image(im), dtype=np.uint8) for im in images])
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, 3, 1, 1)
        return x.sub_(mean).div_(std)


def from_open_clip(model: Any, fit: Literal["crop", "pad"] | None = None) -> ClipPreprocess:
    """The pipeline open_clip itself would use for `model` (its `visual.preprocess_cfg`), optionally
    forcing crop or pad."""
    cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    size = cfg.get("size", model.visual.image_size)
    if isinstance(size, (tuple, list)):
        if size[0] != size[1]:
            raise ValueError(f"non-square CLIP input {tuple(size)} is not supported")
        size = size[0]
    mode = cfg.get("resize_mode", "shortest")
    if fit is None:
        if mode not in ("shortest", "longest"):
            raise ValueError(f"open_clip resize_mode '{mode}' is not supported (shortest or longest)")
        fit = "pad" if mode == "longest" else "crop"
    return ClipPreprocess(
        size=int(size),
        mean=tuple(cfg.get("mean", OPENAI_MEAN)),
        std=tuple(cfg.get("std", OPENAI_STD)),
        fit=fit,
        fill=int(cfg.get("fill_color", 0)),
        resample=_RESAMPLE.get(str(cfg.get("interpolation", "bicubic")), Image.Resampling.BICUBIC),
    )


def from_hf_image_processor(proc: Any) -> ClipPreprocess:
    """The pipeline described by a transformers CLIPImageProcessor config (PickScore's and MPS's, the
    laion ViT-H-14 one: shortest edge 224, bicubic, center crop 224, OpenAI mean/std)."""

    def side(value: Any, *keys: str) -> int | None:
        for key in keys:
            got = value.get(key) if isinstance(value, dict) else getattr(value, key, None)
            if got:
                return int(got)
        return int(value) if isinstance(value, (int, float)) else None

    resize = side(proc.size, "shortest_edge", "height")
    crop = side(proc.crop_size, "height", "shortest_edge") if getattr(proc, "do_center_crop", True) else resize
    if resize is None or crop is None:
        raise ValueError(f"image processor size {proc.size!r} / crop {proc.crop_size!r} is not CLIP-style")
    return ClipPreprocess(
        size=crop,
        resize=resize,
        mean=tuple(proc.image_mean),
        std=tuple(proc.image_std),
        resample=int(getattr(proc, "resample", Image.Resampling.BICUBIC)),
        crop_offset="floor",
    )
