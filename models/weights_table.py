"""Every model a config needs, in one table: `synrank validate` prints it so that a user can download the
weights before the first run (the paper configs name hub ids that a new machine does not have).

A row: what it is, the weights (hub id or local path), the setting that points at them, and whether they
are on this machine (with their size on disk) or not."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from synrank.config import Config
from synrank.models_io import resolve_model_path

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".json")


@dataclass(frozen=True)
class Needed:
    """One model a config loads."""

    what: str  # e.g. "generator sdxl", "reward hps (pretrained)", "GenEval detector (OWLv2)"
    weights: str  # hub id or path
    setting: str  # the config key (or environment variable) that points at them

    def on_disk(self) -> str:
        """'1.20 GiB at <path>' (or MiB) for weights on this machine (a local path or a cached hub snapshot), else
        'not on this machine'."""
        try:
            found = Path(resolve_model_path(self.weights.removeprefix("local-dir:"), self.what))
        except FileNotFoundError:
            return "not on this machine"
        if not found.exists():
            return "not on this machine"
        files = [found] if found.is_file() else [p for p in found.rglob("*") if p.is_file()]
        size = sum(os.path.getsize(p) for p in files)
        return f"{size / 2**30:.2f} GiB at {found}" if size >= 2**30 else f"{size / 2**20:.1f} MiB at {found}"


def is_weights(value: str) -> bool:
    """A reward field that names weights (a path, a hub id, a folder source), not an architecture name."""
    return bool(value) and (
        "/" in value or value.startswith(("local-dir:", "hf-hub:")) or value.endswith(WEIGHT_SUFFIXES)
    )


def needed(cfg: Config) -> list[Needed]:
    """The generators', rewards' and benchmark scorers' weights of `cfg`, then its prompt files."""
    from models.benchmarks import load_benchmark

    rows = [
        Needed(f"generator {g.name}", g.path, f"generate.generators.{i}.path")
        for i, g in enumerate(cfg.generate.generators)
    ]
    for i, r in enumerate(cfg.score.rewards):
        for field in ("arch", "pretrained"):
            value = getattr(r, field)
            if is_weights(value):
                rows.append(
                    Needed(f"reward {r.name} ({r.kind})", value.removeprefix("hf-hub:"), f"score.rewards.{i}.{field}")
                )
    for name in cfg.evaluate.benchmarks:
        rows += [Needed(w.role, w.path, f"${w.env}") for w in load_benchmark(name).weights()]
    for i, src in enumerate(cfg.sample.sources):  # the prompt files: also fetched by hand for the paper
        rows.append(Needed(f"prompts ({src.format}, {src.split})", src.path, f"sample.sources.{i}.path"))
    return rows


def weights_table(cfg: Config) -> str:
    """The rows of `needed` as an aligned text table with a header."""
    rows = [("needed", "weights or file", "set by", "on this machine")]
    rows += [(n.what, n.weights, n.setting, n.on_disk()) for n in needed(cfg)]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3] for r in rows)
