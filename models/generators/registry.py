"""The generator registry and the interface its backends share. A leaf module: backend modules import
GENERATORS from here to register themselves, and `models.generators` imports them all (`import_all`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from PIL import Image

from synrank.config import GeneratorSpec
from synrank.registry import Registry

if TYPE_CHECKING:
    from models.generators.base import Rendered


class Generator(Protocol):
    """A generator backend: built as `cls(spec, device)`, it turns prompts and seeds into images."""

    spec: GeneratorSpec

    def generate(self, prompts: list[str], seeds: list[int]) -> list[Image.Image]:
        """One PIL image per (prompt, seed) pair, in order."""
        ...

    def render(self, prompts: list[str], seeds: list[int]) -> Rendered:
        """The images and their final latents."""
        ...

    def latent_decoder_id(self) -> str:
        """Content id of what decodes those latents (the VAE)."""
        ...


GENERATORS: Registry[type] = Registry("generator backend")
