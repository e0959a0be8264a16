"""Rewards whose code lives outside this project: registered always, usable once their package is
installed, and otherwise failing at construction with one message that says what to install.

- `vqascore` (Lin et al. 2024): the `t2v_metrics` package (PyPI `t2v-metrics`). `arch` = its model
  name (e.g. `clip-flant5-xxl`). Score = P("Yes" | image, "Does this figure show '{prompt}'?").
- `mps` (Multi-dimensional Preference Score, Kwai-Kolors): no PyPI package. Its checkpoint
  (`MPS_overall_checkpoint.pth`) is a pickled whole model whose classes live in the `trainer` package
  of the Kwai-Kolors/MPS repository, which must be importable. `pretrained` = that file, `arch` = the
  processor (`laion/CLIP-ViT-H-14-laion2B-s32B-b79K`). It is unpickled with weights_only=False, i.e.
  it runs code from the file: only use a checkpoint you trust, and say so with `allow_pickle: true`
  (refused otherwise). `vqascore` needs `allow_pickle: true` too: t2v_metrics loads its weights itself,
  so that they are safetensors cannot be checked.

Neither scoring path can be exercised here (no package, no weights); they follow the reference
inference code and are marked as such.
"""

from __future__ import annotations

import importlib
import tempfile
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from PIL import Image

from models.generators.base import PickleWeightsError, pickle_error
from models.rewards.loading import REWARD_SETTING, check_batch, pooled
from models.rewards.preprocess import from_hf_image_processor
from models.rewards.registry import REWARDS
from synrank.config import RewardSpec
from synrank.models_io import resolve_model_path

# MPS's fixed "condition" text from its reference inference (the overall-preference checkpoint).
MPS_CONDITION = (
    "light, color, clarity, tone, style, ambiance, artistry, shape, face, hair, hands, limbs, "
    "structure, instance, texture, quantity, attributes, position, number, location, word, things."
)


class MissingRewardPackage(ImportError):
    """A reward kind whose package is not installed; the message names what to install."""


def require(kind: str, module: str, install: str) -> ModuleType:
    """The imported `module`; MissingRewardPackage naming reward `kind` and the `install` hint if it is not
    importable."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingRewardPackage(
            f"reward kind '{kind}' needs the '{module}' module, which is not importable "
            f"({err.msg}); install it with: {install}"
        ) from None


@REWARDS.register("vqascore")
class VQAScore:
    """VQAScore (Lin et al. 2024) through t2v_metrics: P("Yes" | image, question about the prompt).
    MissingRewardPackage without t2v_metrics; PickleWeightsError unless `spec.allow_pickle`."""

    def __init__(self, spec: RewardSpec, device: str = "cpu") -> None:
        t2v = require(
            "vqascore", "t2v_metrics", "pip install t2v-metrics (the VQAScore package; not in synrank's lock)"
        )
        self.spec, self.device = spec, device
        if not spec.allow_pickle:
            raise PickleWeightsError(
                f"reward '{spec.name}' (vqascore): t2v_metrics loads the weights of "
                f"'{spec.arch}' itself, so that they are not pickles cannot be checked; "
                f"set allow_pickle: true on {REWARD_SETTING} if you trust them"
            )
        self.model = t2v.VQAScore(model=spec.arch, device=device)

    @torch.no_grad()
    def score(self, images: list[Image.Image], prompts: list[str]) -> np.ndarray:
        """(N,) float64 probabilities in [0, 1]; ValueError if the counts differ."""
        check_batch(images, prompts)
        # t2v_metrics reads images from files; batch_forward scores each {images, texts} pair and
        # returns (N, 1, 1), not the N x N matrix that calling the model on two lists would build.
        with tempfile.TemporaryDirectory() as tmp:
            paths = []
            for i, image in enumerate(images):
                paths.append(str(Path(tmp) / f"{i}.png"))
                image.convert("RGB").save(paths[-1])
            dataset = [{"images": [p], "texts": [t]} for p, t in zip(paths, prompts)]
            out = self.model.batch_forward(dataset=dataset, batch_size=len(dataset))
        return torch.as_tensor(out).reshape(len(images)).float().cpu().numpy().astype(np.float64)


@REWARDS.register("mps")
class MPS:
    """MPS (Zhang et al. 2024, Kwai-Kolors/MPS), following its reference inference code. MissingRewardPackage
    without the MPS repository's `trainer` package; PickleWeightsError unless `spec.allow_pickle`."""

    def __init__(self, spec: RewardSpec, device: str = "cpu") -> None:
        require(
            "mps",
            "trainer.models.clip_model",
            "put the Kwai-Kolors/MPS repository (its `trainer` package) on PYTHONPATH: MPS has no PyPI package",
        )
        from transformers import AutoProcessor

        what = f"reward '{spec.name}'"
        self.spec, self.device = spec, device
        checkpoint = resolve_model_path(spec.pretrained, what)
        if not spec.allow_pickle:  # a pickled whole model: it runs code from the file when loaded
            raise pickle_error(what, checkpoint, REWARD_SETTING)
        self.model = torch.load(checkpoint, map_location="cpu", weights_only=False).float().to(device).eval()
        processor = AutoProcessor.from_pretrained(resolve_model_path(spec.arch, what))
        self.tokenizer = processor.tokenizer
        self.preprocess = from_hf_image_processor(processor.image_processor)

    def _tokens(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(
            texts,
            max_length=self.tokenizer.model_max_length,
            padding="max_length",
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.device)

    @torch.no_grad()
    def score(self, images: list[Image.Image], prompts: list[str]) -> np.ndarray:
        """(N,) float64 logit_scale.exp() * cos(fused image-text feature, prompt embedding), conditioned on
        MPS_CONDITION; ValueError if the counts differ."""
        check_batch(images, prompts)
        clip = self.model.model
        text_tokens, text_eos = clip.get_text_features(self._tokens(prompts))  # (N, L, D), (N, D)
        image_tokens = pooled(clip.get_image_features(self.preprocess(images).to(self.device)))  # (N, P, D)
        condition, _ = clip.get_text_features(self._tokens([MPS_CONDITION]).expand(len(prompts), -1))
        # Prompt tokens similar enough to some condition word stay visible to the cross model. The
        # reference normalizes by the max over its batch of one; per sample here, so batching does
        # not change a score.
        sim = torch.einsum("bid,bjd->bji", text_tokens, condition).amax(dim=1, keepdim=True)
        sim = sim / sim.amax(dim=-1, keepdim=True)
        mask = torch.where(sim > 0.3, 0.0, float("-inf")).to(text_tokens.dtype)
        mask = mask.expand(-1, image_tokens.shape[1], -1)
        fused = self.model.cross_model(image_tokens, text_tokens, mask)[:, 0, :]
        cos = (
            torch.nn.functional.normalize(fused.float(), dim=-1)
            * torch.nn.functional.normalize(text_eos.float(), dim=-1)
        ).sum(-1)
        return (self.model.logit_scale.exp().float() * cos).cpu().numpy().astype(np.float64)
