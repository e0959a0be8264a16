"""CLIPScore with open_clip: 100 * cos(image embedding, text embedding).

`arch` is an open_clip architecture name (`ViT-B-32`, or `ViT-B-32-quickgelu` for OpenAI weights) with
`pretrained` a tag or a checkpoint file, or a `local-dir:` / `hf-hub:` folder holding
open_clip_config.json and the weights. Unlike Hessel et al. we do not clamp at 0: ranking needs the
order among negative similarities too, and the scale is irrelevant to Algorithm 1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models.rewards import REWARDS
from synrank.config import RewardSpec
from synrank.models_io import resolve_model_path


def open_clip_source(spec: RewardSpec) -> tuple[str, str | None]:
    """Resolve relative `local-dir:` folders and checkpoint files against the project root."""
    arch, pretrained = spec.arch, spec.pretrained or None
    if arch.startswith("local-dir:"):
        arch = "local-dir:" + resolve_model_path(arch.removeprefix("local-dir:"), f"reward '{spec.name}'")
    if pretrained and (Path(pretrained).suffix or "/" in pretrained):
        pretrained = resolve_model_path(pretrained, f"reward '{spec.name}'")
    return arch, pretrained


@REWARDS.register("clipscore")
class ClipScore:
    def __init__(self, spec: RewardSpec, device: str = "cpu") -> None:
        import open_clip

        self.spec, self.device = spec, device
        arch, pretrained = open_clip_source(spec)
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained,
                                                                               device=device)
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(arch)

    @torch.no_grad()
    def score(self, images: list[Image.Image], prompts: list[str]) -> np.ndarray:
        pixels = torch.stack([self.preprocess(im) for im in images]).to(self.device)
        img = torch.nn.functional.normalize(self.model.encode_image(pixels).float(), dim=-1)
        txt = torch.nn.functional.normalize(self.model.encode_text(self.tokenizer(prompts).to(self.device)).float(),
                                            dim=-1)
        return (100.0 * (img * txt).sum(-1)).cpu().numpy().astype(np.float64)
