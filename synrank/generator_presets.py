"""The published text-to-image models a generator entry names with `preset:` (generate.generators[].preset):
each model card's checkpoint, sampler steps, guidance, resolution and weights dtype. A field the entry sets
wins over the preset's (e.g. `dtype: float32` on a CPU, `steps: 25` for a cheaper run).

One table for the config, the forms and the backends (models/generators/<backend>.py read their own rows):
pure data, so that validating a config loads no model code."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Preset:
    """The published checkpoint of a model family and the settings its authors recommend."""

    backend: str  # key in the generator registry (models/generators/registry.py)
    path: str  # hub id (for two-part models, the id of the part `spec.path` names)
    steps: int
    guidance: float
    height: int
    width: int
    dtype: str = "float16"  # the published weights are half precision; set dtype: float32 on a CPU

    def fields(self) -> dict[str, Any]:
        """The GeneratorSpec fields this preset gives."""
        return asdict(self)


PRESETS = {
    # The diffusers defaults for SD1.5 (PNDM, 50 steps, CFG 7.5) at its training resolution.
    "sd15": Preset("sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5", 50, 7.5, 512, 512),
    # Model-card settings; the refiner stage is left out (base only, as in most preference work).
    "sdxl": Preset("sdxl", "stabilityai/stable-diffusion-xl-base-1.0", 50, 5.0, 1024, 1024),
    # Model-card settings (flow matching, 28 Euler steps, CFG 7).
    "sd3-medium": Preset("sd3", "stabilityai/stable-diffusion-3-medium-diffusers", 28, 7.0, 1024, 1024),
    # Model-card settings (DPM-Solver, 20 steps, CFG 4.5).
    "pixart-sigma": Preset("pixart-sigma", "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS", 20, 4.5, 1024, 1024),
    # Model-card settings: prior 20 steps at CFG 4, decoder 10 steps at CFG 0, bf16 weights.
    "stable-cascade": Preset("stable-cascade", "stabilityai/stable-cascade", 20, 4.0, 1024, 1024, "bfloat16"),
}


def of_backend(backend: str) -> dict[str, Preset]:
    """The presets a backend renders."""
    return {name: p for name, p in PRESETS.items() if p.backend == backend}
