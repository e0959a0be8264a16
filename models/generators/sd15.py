"""Stable Diffusion 1.5 (UNet + one CLIP text encoder) through StableDiffusionPipeline."""

from __future__ import annotations

from models.generators.base import DiffusersBackend
from models.generators.registry import GENERATORS
from synrank.generator_presets import of_backend

PRESETS = of_backend("sd15")  # synrank.generator_presets: the model card's settings


@GENERATORS.register("sd15")
class SD15Generator(DiffusersBackend):
    """Backend "sd15": Stable Diffusion 1.x (latent diffusion, arXiv 2112.10752) and SD1-style pipelines such as
    the shapes zoo's."""

    pipeline_class = "StableDiffusionPipeline"
    presets = PRESETS
