"""A generation run killed with SIGKILL in the middle of a shard and resumed gives the same manifest and
the same image bytes as an uninterrupted run; a missing model fails before any image is made."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from models.tiny import build_tiny_sd
from synrank.config import ROOT, Paths, SampleConfig, TrackingConfig


def _params(root: Path, out: Path, model: Path) -> Path:
    cfg = yaml.safe_load((ROOT / "params.yaml").read_text())
    cfg["paths"] = {"prompts": str(root / "prompts"), "images": str(out / "images")}
    cfg["generate"] = {"generators": [{"name": "g", "path": str(model), "steps": 2, "height": 32, "width": 32}],
                       "images_per_prompt": 2, "batch_size": 2, "shard_size": 2, "seed": 3}
    cfg["train"]["base"] = "g"
    cfg["tracking"] = {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}"}
    path = out / "params.yaml"
    out.mkdir(parents=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


def _files(images: Path) -> dict[str, bytes]:
    from synrank.fingerprint import tree_files

    # Content only: the stamp (it records a duration) and hidden files (the run lock) are not.
    return {str(p.relative_to(images)): p.read_bytes() for p in tree_files(images, exclude=["_stage.json"])}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from flows.sample import sample_flow

    root = tmp_path_factory.mktemp("gen")
    build_tiny_sd(root / "model", seed=4, channels=(16, 32))
    (root / "p.txt").write_text("".join(f"a photo of {i} red circles\n" for i in range(12)))
    sample_flow(SampleConfig(sources=[{"path": str(root / "p.txt")}], eval_fraction=0.0),
                Paths(prompts=str(root / "prompts")), TrackingConfig(tracking_uri=f"sqlite:///{root}/mlflow.db"))
    return root


def _cmd(params: Path) -> list[str]:
    return [sys.executable, "-m", "synrank", "generate", "--params", str(params)]


def _env() -> dict[str, str]:
    from prefect.settings import get_current_settings

    # Reuse the test session's Prefect server instead of starting one per subprocess.
    return {**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url), "PYTHONPATH": str(ROOT)}


def test_sigkill_then_resume_equals_uninterrupted(world: Path) -> None:
    straight = _params(world, world / "straight", world / "model")
    subprocess.run(_cmd(straight), cwd=ROOT, env=_env(), check=True, capture_output=True)
    killed = _params(world, world / "killed", world / "model")
    # Killed right after the 5th shard's tar is written, before its manifest piece marks it done.
    kill = [sys.executable, "-m", "tests.killpoint", "tasks.generate:write_shard", "5", *_cmd(killed)[2:]]
    res = subprocess.run(kill, cwd=ROOT, env=_env(), capture_output=True)
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    pieces = world / "killed" / "images" / "shards" / "g"
    assert len(list(pieces.glob("*.parquet"))) == 4  # 12 prompts x 2 images / 2 per shard = 12 shards
    assert not (world / "killed" / "images" / "manifest.parquet").exists()
    subprocess.run(_cmd(killed), cwd=ROOT, env=_env(), check=True, capture_output=True)
    a, b = _files(world / "straight" / "images"), _files(world / "killed" / "images")
    assert a.keys() == b.keys() and "manifest.parquet" in a
    assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]]


def test_missing_model_fails_before_generating(world: Path) -> None:
    params = _params(world, world / "missing", world / "no-such-model")
    res = subprocess.run(_cmd(params), cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert res.returncode != 0
    assert f"generator 'g': model path '{world / 'no-such-model'}' does not exist" in res.stderr
    assert not list((world / "missing" / "images").rglob("*.tar"))
