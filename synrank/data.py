"""`data/`, the raw inputs of the default run, rebuilt from code.

A fresh clone has no DVC cache and no reachable remote, so `synrank data` regenerates data/
deterministically (fixed seeds): the prompt corpora of the shapes world, in GenEval's metadata
schema. The models the default run uses are the committed zoo (zoo/, the `zoo` DVC stage). The bytes, and so the hash recorded in data.dvc, come out the same every time;
`dvc status data.dvc` confirms it."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from synrank.config import ROOT

# Distinct prompts per GenEval task, up to this many (the shapes grammar has only 6 single-object
# prompts). Train prompts feed generation and ranking; eval prompts (held-out color-shape combinations
# in the color tasks) are the benchmark, 4 images each.
PER_TASK = {"train": 100, "eval": 48}


def distinct_specs(split: str, per_task: int, seed: int = 0) -> list[dict]:
    """The first `per_task` distinct prompts of each task in the seeded spec stream."""
    from models.shapes.specs import make_specs

    out, seen, counts = [], set(), {}
    for spec in make_specs(40 * per_task, seed=seed, split=split):  # plenty for every task's quota
        if spec["prompt"] not in seen and counts.get(spec["tag"], 0) < per_task:
            seen.add(spec["prompt"])
            counts[spec["tag"]] = counts.get(spec["tag"], 0) + 1
            out.append(spec)
    return out


def write_prompt_files(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for split, per_task in PER_TASK.items():
        specs = distinct_specs(split, per_task)
        (dest / f"shapes_{split}.jsonl").write_text("".join(json.dumps(s, sort_keys=True) + "\n" for s in specs))


def build_data(dest: Path = ROOT / "data") -> Path:
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write_prompt_files(tmp / "prompts")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
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
        raise RuntimeError(f"no dvc executable beside {sys.executable} or on PATH: install the project's "
                           "environment (make env)")
    return found


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
    subprocess.run([dvc_executable(), "commit", "--force", "--quiet", "data.dvc"], cwd=root, check=True)
    return f"data/ matches data.dvc ({recorded})"
