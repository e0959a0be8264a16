"""PickScore (Kirstain et al. 2023): a transformers CLIP ViT-H-14 fine-tuned on Pick-a-Pic.

Real files: model `yuvalkirstain/PickScore_v1` (CLIPModel, `from_pretrained` folder), processor
`laion/CLIP-ViT-H-14-laion2B-s32B-b79K` (CLIPProcessor: the CLIP tokenizer and a CLIPImageProcessor),
exactly the pair of the reference usage.

Spec: `arch` = the model folder or hub id; `pretrained` = the processor folder or hub id (empty: the
model folder itself when it holds a processor config, else the laion id above).

Score = logit_scale.exp() * cos(image embedding, text embedding), as the reference computes it
(values around 20-23 for real images). The text is tokenized by the processor's tokenizer (padding,
truncation at 77). Image pixels come from the shared CLIP pipeline built from the processor's own
config (size, crop, mean, std, resample), so all CLIP-family rewards see the same pixels for one
image; it matches CLIPImageProcessor's output up to resampling round-off (checked in the tests).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models.generators.base import check_weight_files, refuse_pickle
from models.rewards.loading import REWARD_SETTING, check_batch, hf_token_window, pooled, unique_prompts
from models.rewards.preprocess import from_hf_image_processor
from models.rewards.registry import REWARDS
from synrank.config import RewardSpec
from synrank.models_io import resolve_model_path

PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


@REWARDS.register("pickscore")
class PickScore:
    """PickScore (Kirstain et al. 2023): a transformers CLIPModel `spec.arch` and the processor
    `spec.pretrained` (see the module docstring); PickleWeightsError for pickled weights without allow_pickle."""

    def __init__(self, spec: RewardSpec, device: str = "cpu") -> None:
        from transformers import AutoProcessor, CLIPModel

        self.spec, self.device = spec, device
        what = f"reward '{spec.name}'"
        model_path = resolve_model_path(spec.arch, what)
        if spec.pretrained:
            source = resolve_model_path(spec.pretrained, what)
        elif any((Path(model_path) / f).is_file() for f in _PROCESSOR_FILES):
            source = model_path
        else:
            source = resolve_model_path(PROCESSOR, what)
        processor = AutoProcessor.from_pretrained(source)
        self.tokenizer = processor.tokenizer
        self.preprocess = from_hf_image_processor(processor.image_processor)
        # safetensors only unless allow_pickle: a clear message for a local folder, transformers' own
        # check (use_safetensors=True) for a hub id.
        refuse_pickle([model_path], spec.allow_pickle, what, REWARD_SETTING)
        check_weight_files([model_path], what)  # a damaged file named in one line, before loading
        safe = None if spec.allow_pickle else True
        self.model = CLIPModel.from_pretrained(model_path, use_safetensors=safe).to(device).eval()

    def text_window(self, prompts: list[str]) -> tuple[list[int], int]:
        """See models.rewards.text_window: the 77 tokens `score` truncates to."""
        return hf_token_window(self.tokenizer, prompts, 77)

    @torch.no_grad()
    def score(self, images: list[Image.Image], prompts: list[str]) -> np.ndarray:
        """(N,) float64 logit_scale.exp() * cos(image, prompt embedding) (about 20-23 for real images),
        prompts cut at 77 tokens; ValueError if the counts differ."""
        check_batch(images, prompts)
        pixels = self.preprocess(images).to(self.device)
        img = pooled(self.model.get_image_features(pixel_values=pixels)).float()
        distinct, index = unique_prompts(prompts)
        tokens = self.tokenizer(distinct, padding=True, truncation=True, max_length=77, return_tensors="pt").to(
            self.device
        )
        txt = pooled(self.model.get_text_features(**tokens)).float()[index.to(self.device)]
        cos = (torch.nn.functional.normalize(img, dim=-1) * torch.nn.functional.normalize(txt, dim=-1)).sum(-1)
        return (self.model.logit_scale.exp().float() * cos).cpu().numpy().astype(np.float64)
