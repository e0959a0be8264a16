"""Stable Cascade: a prior (text -> compressed image embedding) and a decoder (embedding -> image), two
pipelines, StableCascadePriorPipeline + StableCascadeDecoderPipeline, run back to back.

Where the two parts are (`spec.path` names the decoder):
  - a local folder holding `prior/` and `decoder/` (what tests/fixtures/tiny_pipelines.py writes), or
  - otherwise `spec.path` is the decoder and the prior is `<spec.path>-prior`, the hub's own naming
    (`stabilityai/stable-cascade` + `stabilityai/stable-cascade-prior`), for ids and folders alike.

`spec.steps` and `spec.guidance` drive the prior, which carries the prompt; the decoder runs
`DECODER_STEPS` steps (never more than the prior) without guidance, as the model card does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from models.generators.base import DiffusersBackend, LatentCatcher, Rendered, component_id
from models.generators.registry import GENERATORS
from synrank.config import GeneratorSpec
from synrank.generator_presets import of_backend
from synrank.models_io import resolve_model_path

PRESETS = of_backend("stable-cascade")  # synrank.generator_presets: the model card's settings
PRIOR_SUFFIX = "-prior"
DECODER_STEPS = 10
DECODER_GUIDANCE = 0.0


def prior_and_decoder(path: str, name: str) -> tuple[str, str]:
    """Resolved (prior, decoder) locations for `spec.path`, following the module's convention."""
    decoder = resolve_model_path(path, what=f"generator '{name}' (decoder)")
    folder = Path(decoder)  # absolute when local; a hub id not yet downloaded stays relative
    if folder.is_absolute() and (folder / "prior").is_dir() and (folder / "decoder").is_dir():
        return str(folder / "prior"), str(folder / "decoder")
    prior = resolve_model_path(path.rstrip("/") + PRIOR_SUFFIX, what=f"generator '{name}' (prior)")
    return prior, decoder


@GENERATORS.register("stable-cascade")
class StableCascadeGenerator(DiffusersBackend):
    """Backend "stable-cascade": Stable Cascade (Würstchen, arXiv 2306.00637), its prior and decoder pipelines
    run back to back (module docstring); `pipe` is the decoder, `prior` the prior."""

    pipeline_class = "StableCascadeDecoderPipeline"  # the part that makes images (and `.pipe`)
    presets = PRESETS

    def __init__(self, spec: GeneratorSpec, device: str = "cpu") -> None:
        # Find both parts before the base class loads anything, so a missing prior is named at once.
        self.prior_path, self.decoder_path = prior_and_decoder(spec.path, spec.name)
        super().__init__(spec, device)

    def load(self, source: str) -> Any:
        """Load the prior into `self.prior` and return the decoder pipeline, assembled from its parts around the
        prior's text encoder; `source` is unused (the paths come from prior_and_decoder)."""
        from diffusers import (
            DDPMWuerstchenScheduler,
            StableCascadeDecoderPipeline,
            StableCascadePriorPipeline,
            StableCascadeUNet,
        )
        from diffusers.pipelines.stable_cascade.pipeline_stable_cascade import PaellaVQModel

        safe = self.weights_kwargs
        self.prior = StableCascadePriorPipeline.from_pretrained(self.prior_path, dtype=self.dtype, **safe)
        # The decoder is assembled from its parts: diffusers 0.42 cannot resolve PaellaVQModel from a
        # model_index.json, neither the hub's ["wuerstchen", ...] nor the ["diffusers", ...] that its own
        # save_pretrained writes, and it checks that entry even for a component passed in.
        path = self.decoder_path
        config = StableCascadeDecoderPipeline.load_config(path)
        return StableCascadeDecoderPipeline(
            decoder=StableCascadeUNet.from_pretrained(path, subfolder="decoder", dtype=self.dtype, **safe),
            vqgan=PaellaVQModel.from_pretrained(path, subfolder="vqgan", dtype=self.dtype, **safe),
            scheduler=DDPMWuerstchenScheduler.from_pretrained(path, subfolder="scheduler"),
            # The decoder is fed the prior's text embeddings (as StableCascadeCombinedPipeline does), so its
            # own CLIP text encoder would never run: share the prior's instead of loading a second copy.
            text_encoder=self.prior.text_encoder,
            tokenizer=self.prior.tokenizer,
            latent_dim_scale=config.get("latent_dim_scale", 10.67),
        )

    def weight_paths(self, source: str) -> list[str]:
        """The prior's and the decoder's folders."""
        return [self.prior_path, self.decoder_path]

    def pipelines(self) -> list[Any]:
        """[prior, decoder]."""
        return [self.prior, self.pipe]

    def latent_decoder_id(self) -> str:
        """Content id of the decoder's Paella VQ-GAN (`vqgan/`), which decodes the caught latents."""
        return component_id(self.decoder_path, "vqgan")  # the decoder stage's latents are Paella VQ latents

    def run(self, prompts: list[str], generators: list[torch.Generator]) -> Rendered:
        """The prior (spec.steps, spec.guidance) then the decoder (DECODER_STEPS capped at spec.steps, no
        guidance) on one batch: spec.height x spec.width px images and the decoder's final latents."""
        # The same generators go through both stages: each advances by the same amount whatever the
        # batch, so an image still depends on its own seed only.
        prior = self.prior(**self.sampling_kwargs(prompts, generators), output_type="pt")
        catch = LatentCatcher()
        out = self.pipe(
            image_embeddings=prior.image_embeddings,
            prompt_embeds=prior.prompt_embeds,
            prompt_embeds_pooled=prior.prompt_embeds_pooled,
            generator=generators,
            num_inference_steps=min(DECODER_STEPS, self.spec.steps),
            guidance_scale=DECODER_GUIDANCE,
            output_type="pil",
            **catch.call_kwargs(self.pipe),
        )
        return Rendered(list(out.images), catch.take(len(prompts)))
