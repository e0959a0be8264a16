"""Generator backends: prompts and seeds in, PIL images (and, with `render`, their latents) out. Each
backend is one module that registers a class in GENERATORS (models/generators/registry.py);
`load_generator(spec)` picks it by `spec.backend`."""

from __future__ import annotations

from models.generators.registry import GENERATORS, Generator
from synrank.config import GeneratorSpec
from synrank.registry import import_all

__all__ = ["GENERATORS", "Generator", "load_generator"]


def load_generator(spec: GeneratorSpec, device: str = "cpu") -> Generator:
    """The backend `spec.backend` on `device`, after importing every backend module so each registers
    itself; KeyError naming the known backends for an unknown one."""
    import_all("models.generators")

    return GENERATORS.get(spec.backend)(spec, device)
