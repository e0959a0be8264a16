"""PixArt-Σ (DiT + T5 encoder) through PixArtSigmaPipeline. The pipeline has no LoRA loader, so a spec
with `lora` is refused before loading."""

from __future__ import annotations

from typing import Any

from models.generators.base import DiffusersBackend
from models.generators.registry import GENERATORS
from synrank.generator_presets import of_backend

PRESETS = of_backend("pixart-sigma")  # synrank.generator_presets: the model card's settings


@GENERATORS.register("pixart-sigma")
class PixArtSigmaGenerator(DiffusersBackend):
    """Backend "pixart-sigma": PixArt-Σ (arXiv 2403.04692) at the spec's height x width in pixels, no LoRA."""

    pipeline_class = "PixArtSigmaPipeline"
    presets = PRESETS

    def text_window(self) -> tuple[Any, int] | None:
        """The T5 tokenizer and its 300-token window (special tokens included)."""
        return self.pipe.tokenizer, 300  # T5, the pipeline's default max_sequence_length

    def call_kwargs(self) -> dict[str, Any]:
        """No resolution binning; caption cleaning only where bs4 and ftfy are installed."""
        from diffusers.utils import is_bs4_available, is_ftfy_available

        return {
            # Binning would silently sample at the nearest trained aspect ratio and resize back; the spec's
            # height and width are what the rest of the pipeline (rewards, manifests) expects.
            "use_resolution_binning": False,
            # Caption cleaning needs bs4 + ftfy; without them the pipeline warns on every call and skips it.
            "clean_caption": is_bs4_available() and is_ftfy_available(),
        }
