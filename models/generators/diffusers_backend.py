"""Any diffusers text-to-image pipeline, loaded with DiffusionPipeline.from_pretrained(id or folder)."""

from __future__ import annotations

from models.generators.base import DiffusersBackend
from models.generators.registry import GENERATORS


@GENERATORS.register("diffusers")
class DiffusersGenerator(DiffusersBackend):
    """The class comes from model_index.json; LoRA support is checked once it is loaded."""

    pipeline_class = "DiffusionPipeline"
