"""Stable Diffusion 3 Medium (MMDiT + CLIP-L, CLIP-G and T5 encoders) through StableDiffusion3Pipeline."""

from __future__ import annotations

from typing import Any

from models.generators.base import DiffusersBackend
from models.generators.registry import GENERATORS
from synrank.generator_presets import of_backend

PRESETS = of_backend("sd3")  # synrank.generator_presets: the model card's settings


@GENERATORS.register("sd3")
class SD3Generator(DiffusersBackend):
    """Backend "sd3": Stable Diffusion 3 / 3.5 (rectified flow MMDiT, arXiv 2403.03206)."""

    pipeline_class = "StableDiffusion3Pipeline"
    presets = PRESETS

    def text_window(self) -> tuple[Any, int] | None:
        """T5's tokenizer and 256-token window when the pipeline has T5, else the first CLIP's 77."""
        # T5 reads 256 tokens (the pipeline's default max_sequence_length), past the CLIPs' 77.
        t5 = getattr(self.pipe, "tokenizer_3", None)
        return (t5, 256) if t5 is not None else super().text_window()
