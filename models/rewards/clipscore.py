"""CLIPScore with open_clip: 100 * cos(image embedding, text embedding).

`arch` is an open_clip architecture name (`ViT-B-32`, or `ViT-B-32-quickgelu` for OpenAI weights) with
`pretrained` a tag or a checkpoint file, or a `local-dir:` / `hf-hub:` folder holding
open_clip_config.json and the weights. Unlike Hessel et al. we do not clamp at 0: ranking needs the
order among negative similarities too, and the scale is irrelevant to Algorithm 1."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from models.rewards.loading import check_batch, create_open_clip, open_clip_token_window, unique_prompts
from models.rewards.preprocess import from_open_clip
from models.rewards.registry import REWARDS
from synrank.config import RewardSpec


@REWARDS.register("clipscore")
class ClipScore:
    """CLIPScore (Hessel et al. 2021) with an open_clip model, unclamped: see the module docstring."""

    def __init__(self, spec: RewardSpec, device: str = "cpu") -> None:
        self.spec, self.device = spec, device
        self.model, self.tokenizer = create_open_clip(spec, spec.arch, spec.pretrained or None, device)
        self.preprocess = from_open_clip(self.model)  # pixel-identical to open_clip's own transform

    def text_window(self, prompts: list[str]) -> tuple[list[int], int]:
        """See models.rewards.text_window: open_clip's context (77 tokens for CLIP)."""
        return open_clip_token_window(self.tokenizer, prompts)

    @torch.no_grad()
    def score(self, images: list[Image.Image], prompts: list[str]) -> np.ndarray:
        """(N,) float64 100 * cos(image, prompt embedding), in [-100, 100]; ValueError if the counts differ."""
        check_batch(images, prompts)
        img = F.normalize(self.model.encode_image(self.preprocess(images).to(self.device)).float(), dim=-1)
        distinct, index = unique_prompts(prompts)  # k images of one prompt: its text is encoded once
        txt = F.normalize(self.model.encode_text(self.tokenizer(distinct).to(self.device)).float(), dim=-1)
        return (100.0 * (img * txt[index.to(self.device)]).sum(-1)).cpu().numpy().astype(np.float64)
