"""Stable Diffusion XL base (UNet + two CLIP text encoders) through StableDiffusionXLPipeline."""

from __future__ import annotations

from models.generators.base import DiffusersBackend
from models.generators.registry import GENERATORS
from synrank.generator_presets import of_backend

PRESETS = of_backend("sdxl")  # synrank.generator_presets: the model card's settings


@GENERATORS.register("sdxl")
class SDXLGenerator(DiffusersBackend):
    """Backend "sdxl": the Stable Diffusion XL base model (arXiv 2307.01952), without the refiner."""

    pipeline_class = "StableDiffusionXLPipeline"
    presets = PRESETS
