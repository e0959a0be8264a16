"""Any diffusers text-to-image pipeline, loaded with DiffusionPipeline.from_pretrained(id or folder)."""

from __future__ import annotations

import torch
from PIL import Image

from models.generators import GENERATORS
from synrank.config import GeneratorSpec
from synrank.models_io import resolve_model_path

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@GENERATORS.register("diffusers")
class DiffusersGenerator:
    def __init__(self, spec: GeneratorSpec, device: str = "cpu") -> None:
        from diffusers import DiffusionPipeline

        self.spec, self.device = spec, device
        source = resolve_model_path(spec.path, what=f"generator '{spec.name}'")
        self.pipe = DiffusionPipeline.from_pretrained(source, dtype=DTYPES[spec.dtype]).to(device)
        if spec.lora:
            self.pipe.load_lora_weights(resolve_model_path(spec.lora, what=f"LoRA of generator '{spec.name}'"))
        self.pipe.set_progress_bar_config(disable=True)

    @torch.no_grad()
    def generate(self, prompts: list[str], seeds: list[int]) -> list[Image.Image]:
        # One generator per image: an image depends on its own seed only, not on its batch mates.
        gens = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
        out = self.pipe(prompt=prompts, generator=gens, num_inference_steps=self.spec.steps,
                        guidance_scale=self.spec.guidance, height=self.spec.height, width=self.spec.width,
                        output_type="pil")
        return list(out.images)
