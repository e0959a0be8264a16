"""Stable Diffusion 3 Medium (MMDiT + CLIP-L, CLIP-G and T5 encoders) through StableDiffusion3Pipeline."""

from __future__ import annotations

from typing import Any

from models.generators.base import DiffusersBackend, Preset
from models.generators.registry import GENERATORS

PRESETS = {
    # Model-card settings (flow matching, 28 Euler steps, CFG 7).
    "sd3-medium": Preset(
        path="stabilityai/stable-diffusion-3-medium-diffusers", steps=28, guidance=7.0, height=1024, width=1024
    ),
}


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
