"""Human Preference Score v2 / v2.1 (Wu et al. 2023): an open_clip ViT-H-14 fine-tuned on HPD v2.

Checkpoint: `HPS_v2_compressed.pt` / `HPS_v2.1_compressed.pt` (hub repo xswu/HPSv2), a `torch.save`d
open_clip CLIP state_dict wrapped as {'state_dict': ...}; a bare state_dict is accepted too. It holds
the whole CLIP (both towers, logit_scale), so the base `laion2B-s32B-b79K` weights are not needed.

Spec: `arch` = open_clip architecture (`ViT-H-14` for the real files; any name, `local-dir:`/`hf-hub:`
source or model-config JSON works, which is how tests use a tiny one); `pretrained` = the HPS file.

Score = cos(image embedding, text embedding), *without* the logit scale: `hpsv2.score()` returns
`diag(image_features @ text_features.T)` of open_clip's normalized features, values around 0.2-0.3.
Papers and the HPS v2 benchmark tables print it x100 (e.g. "27.8"), which does not change a ranking.
v2.0 and v2.1 are different models whose scores are not comparable, hence two kinds: give them
different reward names.

Preprocessing is HPS's own: longest side to 224 (bicubic), pad to a square with black, OpenAI
mean/std, no center crop, so the whole picture is scored (`ClipPreprocess(fit="pad")`).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from models.rewards.loading import (
    check_batch,
    create_open_clip,
    load_state_dict_file,
    open_clip_token_window,
    unique_prompts,
)
from models.rewards.preprocess import from_open_clip
from models.rewards.registry import REWARDS
from synrank.config import RewardSpec
from synrank.models_io import resolve_model_path


@REWARDS.register("hpsv2")
class HPSv2:
    """HPS v2.0 (Wu et al. 2023): open_clip `spec.arch` with every weight from the HPS checkpoint
    `spec.pretrained`. ValueError if `pretrained` is unset or its weights do not fit the architecture."""

    version = "v2.0"

    def __init__(self, spec: RewardSpec, device: str = "cpu") -> None:
        if not spec.pretrained:
            raise ValueError(
                f"reward '{spec.name}' ({spec.kind}): set `pretrained` to the HPS {self.version} "
                f"checkpoint file (HPS_{self.version.replace('v2.0', 'v2')}_compressed.pt)"
            )
        self.spec, self.device = spec, device
        # Random init (pretrained=None): every weight comes from the HPS checkpoint below.
        self.model, self.tokenizer = create_open_clip(spec, spec.arch, None, device, weights_later=True)
        path = resolve_model_path(spec.pretrained, f"reward '{spec.name}'")
        state = load_state_dict_file(path, f"reward '{spec.name}'", spec.allow_pickle)
        try:
            self.model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ValueError(
                f"reward '{spec.name}': the HPS checkpoint '{path}' does not fit open_clip arch "
                f"'{spec.arch}' (HPS v2/v2.1 use ViT-H-14): {str(err).splitlines()[0]}"
            ) from None
        self.preprocess = from_open_clip(self.model, fit="pad")

    def text_window(self, prompts: list[str]) -> tuple[list[int], int]:
        """See models.rewards.text_window: open_clip's context (77 tokens)."""
        return open_clip_token_window(self.tokenizer, prompts)

    @torch.no_grad()
    def score(self, images: list[Image.Image], prompts: list[str]) -> np.ndarray:
        """(N,) float64 cos(image, prompt embedding), unscaled (about 0.2-0.3 for real images), as
        `hpsv2.score()` returns it; ValueError if the counts differ."""
        check_batch(images, prompts)
        pixels = self.preprocess(images).to(self.device)
        img = torch.nn.functional.normalize(self.model.encode_image(pixels).float(), dim=-1)
        distinct, index = unique_prompts(prompts)
        txt = self.model.encode_text(self.tokenizer(distinct).to(self.device)).float()
        txt = torch.nn.functional.normalize(txt, dim=-1)[index.to(self.device)]
        return (img * txt).sum(-1).cpu().numpy().astype(np.float64)


@REWARDS.register("hpsv2.1")
class HPSv21(HPSv2):
    """Same architecture, preprocessing and score; a different checkpoint (HPS_v2.1_compressed.pt)."""

    version = "v2.1"
