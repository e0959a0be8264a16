"""Stable Diffusion 1.5 (UNet + one CLIP text encoder) through StableDiffusionPipeline."""

from __future__ import annotations

from models.generators.base import DiffusersBackend, Preset
from models.generators.registry import GENERATORS

PRESETS = {
    # The diffusers defaults for SD1.5 (PNDM, 50 steps, CFG 7.5) at its training resolution.
    "sd15": Preset(path="stable-diffusion-v1-5/stable-diffusion-v1-5", steps=50, guidance=7.5, height=512, width=512),
}


@GENERATORS.register("sd15")
class SD15Generator(DiffusersBackend):
    """Backend "sd15": Stable Diffusion 1.x (latent diffusion, arXiv 2112.10752) and SD1-style pipelines such as
    the shapes zoo's."""

    pipeline_class = "StableDiffusionPipeline"
    presets = PRESETS
