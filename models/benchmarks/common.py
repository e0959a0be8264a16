"""What the benchmark plugins share: the prompt record adapters return, and the one check that model
weights are on disk (scoring must never start a silent download). The registries and the protocols a
plugin implements are in `registries`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.generators.base import refuse_pickle
from synrank.models_io import resolve_model_path
from synrank.scorer_weights import ALLOW_PICKLE_ENV, pickle_allowed


@dataclass(frozen=True)
class BenchmarkPrompt:
    """One benchmark prompt; `meta` is what the benchmark's scorer reads back (the prompt table's `meta`)."""

    prompt: str
    category: str | None
    meta: dict[str, Any] = field(default_factory=dict)

    def as_row(self, source: str) -> dict[str, Any]:
        """The row shape of synrank.prompts (meta JSON-encoded), so adapters can feed the prompt stage."""
        return {
            "prompt": self.prompt,
            "category": self.category,
            "source": source,
            "meta": json.dumps(self.meta, ensure_ascii=False),
            "split": "eval",
        }


@dataclass(frozen=True)
class Weights:
    """A model a benchmark's scorer loads: what it is, where it is looked for, and the setting (an
    environment variable) that points it elsewhere."""

    role: str  # e.g. "GenEval detector (OWLv2)"
    path: str  # a local folder or a hub id whose snapshot must be cached
    env: str  # e.g. SYNRANK_GENEVAL_OWLV2

    def on_disk(self) -> bool:
        """A local folder, or a cached hub snapshot (resolve_model_path raises when there is neither and
        the hub is off, or when a local path does not exist)."""
        try:
            return Path(resolve_model_path(self.path, self.role)).exists()
        except FileNotFoundError:
            return False

    def describe(self) -> str:
        """The weights, where they are looked for and the setting that points elsewhere, for error messages."""
        return f"{self.role} '{self.path}' (set {self.env} to a folder saved with save_pretrained)"


def local_weights(path: str, what: str) -> str:
    """A weights folder that is on this machine (a local path or a cached hub snapshot), else a
    FileNotFoundError naming the weights: scoring must never start a silent multi-GB download."""
    resolved = resolve_model_path(path, what)
    if not Path(resolved).exists():
        raise FileNotFoundError(
            f"{what}: weights '{path}' are not on this machine (no local folder, no cached "
            f"hub snapshot); download them first, e.g. `huggingface-cli download {path}`, "
            f"or point to a folder saved with save_pretrained"
        )
    # Safetensors only, as for generators and rewards: a pickle can run code when it is loaded.
    refuse_pickle([resolved], pickle_allowed(), what, f"the scorers (${ALLOW_PICKLE_ENV}=1)")
    return resolved


def pretrained_kwargs() -> dict[str, Any]:
    """from_pretrained's keyword arguments for scorer weights: safetensors only unless pickles are allowed."""
    return {} if pickle_allowed() else {"use_safetensors": True}
