"""Stable Diffusion XL base (UNet + two CLIP text encoders) through StableDiffusionXLPipeline."""

from __future__ import annotations

from models.generators.base import DiffusersBackend, Preset
from models.generators.registry import GENERATORS

PRESETS = {
    # Model-card settings; the refiner stage is left out (base only, as in most preference work).
    "sdxl": Preset(path="stabilityai/stable-diffusion-xl-base-1.0", steps=50, guidance=5.0, height=1024, width=1024),
}


@GENERATORS.register("sdxl")
class SDXLGenerator(DiffusersBackend):
    """Backend "sdxl": the Stable Diffusion XL base model (arXiv 2307.01952), without the refiner."""

    pipeline_class = "StableDiffusionXLPipeline"
    presets = PRESETS
