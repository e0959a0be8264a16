"""`data/`, the raw inputs of the default run, rebuilt from code.

A fresh clone has no DVC cache and no reachable remote, so `synrank data` regenerates data/
deterministically (fixed seeds): the prompt corpora of the shapes world, in GenEval's metadata
schema. The models the default run uses are the committed zoo (zoo/, the `zoo` DVC stage). The bytes, and so
the hash recorded in data.dvc, come out the same every time;
`dvc status data.dvc` confirms it."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

from synrank.atomic import building_dir
from synrank.config import ROOT

# The train file holds every train-space prompt of each task up to this many (color_attr has 5,720;
# the others fewer): 1,590 prompts. The eval file is the held-out benchmark (60 per task, single_object's
# 10 shared with train), the probe file the novel-binding probe (models/shapes/specs.py).
TRAIN_CAP = 1000


def split_specs(split: str, seed: int = 0) -> list[dict]:
    """The prompts of one split of the shapes world, in a seeded order (train: capped per task)."""
    from models.shapes.specs import TASKS, heldout_specs, probe_specs, train_space

    if split == "eval":
        return [s for specs in heldout_specs().values() for s in specs]
    if split == "probe":
        return list(probe_specs())
    rng = np.random.default_rng(seed)
    out = []
    for tag in TASKS:
        space = train_space(tag)
        out += [space[int(i)] for i in sorted(rng.permutation(len(space))[:TRAIN_CAP])]
    return out


def write_prompt_files(dest: Path) -> None:
    """Write shapes_{train,eval,probe}.jsonl into `dest` (created if missing): split_specs' specs, one JSON
    object per line with sorted keys, so the bytes are the same on every run."""
    dest.mkdir(parents=True, exist_ok=True)
    for split in ("train", "eval", "probe"):
        specs = split_specs(split)
        (dest / f"shapes_{split}.jsonl").write_text("".join(json.dumps(s, sort_keys=True) + "\n" for s in specs))


def build_data(dest: Path = ROOT / "data") -> Path:
    """Rebuild `dest` (data/) from code: the prompt files are written into a sibling `.<dest>.tmp`, which then
    replaces `dest` whole (synrank.atomic.building_dir; its previous content is removed). Returns `dest`."""
    with building_dir(dest) as tmp:
        write_prompt_files(tmp / "prompts")
    return dest


def check_data(root: Path = ROOT) -> tuple[str, str]:
    """(recorded, actual) DVC hash of data/; equal when the rebuild reproduced data.dvc exactly."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        out = repo.stage.collect("data.dvc")[0].outs[0]
        return out.hash_info.value, out.get_hash().value


def dvc_executable() -> str:
    """The `dvc` installed beside this Python (the project's .venv/bin), else the one on PATH: `synrank data`
    run as `.venv/bin/synrank` without an activated venv has no .venv/bin on PATH, so a bare `dvc` failed.
    sys.executable is not resolved: a venv's python is a symlink to the base interpreter."""
    beside = Path(sys.executable).parent / ("dvc.exe" if sys.platform == "win32" else "dvc")
    if beside.is_file():
        return str(beside)
    found = shutil.which("dvc")
    if found is None:
        raise RuntimeError(
            f"no dvc executable beside {sys.executable} or on PATH: install the project's environment (make env)"
        )
    return found


def ensure_data(root: Path = ROOT) -> str:
    """Rebuild data/ if absent, verify it against data.dvc, and put it into the DVC cache so that
    `dvc status` is clean; a mismatch is an error that names both hashes and changes nothing."""
    import subprocess

    if not (root / "data").exists():
        build_data(root / "data")
    recorded, actual = check_data(root)
    if recorded != actual:
        raise RuntimeError(
            f"data/ hashes to {actual} but data.dvc records {recorded}: rebuild with "
            "`rm -rf data && synrank data`, or `dvc add data` if the change is intended"
        )
    subprocess.run([dvc_executable(), "commit", "--force", "--quiet", "data.dvc"], cwd=root, check=True)
    return f"data/ matches data.dvc ({recorded})"
