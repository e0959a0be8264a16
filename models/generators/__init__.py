"""Generator backends: prompts and seeds in, PIL images out. Each backend is one module that
registers a class in GENERATORS; `load_generator(spec)` picks it by `spec.backend`."""

from __future__ import annotations

from typing import Protocol

from PIL import Image

from synrank.config import GeneratorSpec
from synrank.registry import Registry, import_all


class Generator(Protocol):
    spec: GeneratorSpec

    def generate(self, prompts: list[str], seeds: list[int]) -> list[Image.Image]: ...


GENERATORS: Registry[type] = Registry("generator backend")


def load_generator(spec: GeneratorSpec, device: str = "cpu") -> Generator:
    import_all("models.generators")

    return GENERATORS.get(spec.backend)(spec, device)
