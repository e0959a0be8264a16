"""Generator backends: prompts and seeds in, PIL images (and, with `render`, their latents) out. Each
backend is one module that registers a class in GENERATORS; `load_generator(spec)` picks it by
`spec.backend`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from PIL import Image

from synrank.config import GeneratorSpec
from synrank.registry import Registry, import_all

if TYPE_CHECKING:
    from models.generators.base import Rendered


class Generator(Protocol):
    spec: GeneratorSpec

    def generate(self, prompts: list[str], seeds: list[int]) -> list[Image.Image]: ...

    def render(self, prompts: list[str], seeds: list[int]) -> Rendered: ...  # images and their final latents

    def latent_decoder_id(self) -> str: ...  # content id of what decodes those latents (the VAE)


GENERATORS: Registry[type] = Registry("generator backend")


def load_generator(spec: GeneratorSpec, device: str = "cpu") -> Generator:
    import_all("models.generators")

    return GENERATORS.get(spec.backend)(spec, device)
