"""`data/`, the raw inputs of the default run, rebuilt from code.

A fresh clone has no DVC cache and no reachable remote, so `synrank data` regenerates data/
deterministically (fixed seeds, CPU): the prompt corpora of the shapes world and the tiny models the
default run uses. The bytes, and so the hash recorded in data.dvc, come out the same every time;
`dvc status data.dvc` confirms it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from synrank.config import ROOT

# Tiny random generators (different seeds and widths, so they differ) and CLIP rewards.
TINY_GENERATORS = {"tiny-a": (1, (32, 64)), "tiny-b": (2, (32, 64)), "tiny-c": (3, (16, 32))}
TINY_REWARDS = {"clip-a": 11, "clip-b": 12}
N_TRAIN, N_EVAL = 48, 16


def write_prompt_files(dest: Path) -> None:
    from models.shapes.specs import make_specs

    dest.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", N_TRAIN), ("eval", N_EVAL)):
        specs = make_specs(n, seed=0, split=split)
        (dest / f"shapes_{split}.jsonl").write_text("".join(json.dumps(s, sort_keys=True) + "\n" for s in specs))


def build_data(dest: Path = ROOT / "data") -> Path:
    from models.tiny import build_tiny_clip, build_tiny_sd

    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write_prompt_files(tmp / "prompts")
    for name, (seed, channels) in TINY_GENERATORS.items():
        build_tiny_sd(tmp / "models" / name, seed=seed, channels=channels)
    for name, seed in TINY_REWARDS.items():
        build_tiny_clip(tmp / "models" / name, seed=seed)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def check_data(root: Path = ROOT) -> tuple[str, str]:
    """(recorded, actual) DVC hash of data/; equal when the rebuild reproduced data.dvc exactly."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        out = repo.stage.collect("data.dvc")[0].outs[0]
        return out.hash_info.value, out.get_hash().value


def ensure_data(root: Path = ROOT) -> str:
    """Rebuild data/ if absent, verify it against data.dvc, and put it into the DVC cache so that
    `dvc status` is clean; a mismatch is an error that names both hashes and changes nothing."""
    import subprocess

    if not (root / "data").exists():
        build_data(root / "data")
    recorded, actual = check_data(root)
    if recorded != actual:
        raise RuntimeError(f"data/ hashes to {actual} but data.dvc records {recorded}: rebuild with "
                           "`rm -rf data && synrank data`, or `dvc add data` if the change is intended")
    subprocess.run(["dvc", "commit", "--force", "--quiet", "data.dvc"], cwd=root, check=True)
    return f"data/ matches data.dvc ({recorded})"
