"""A missing model fails before any image is made. (A generation run killed with SIGKILL between a shard's
tar and its manifest piece, then resumed, is tests/test_resume_pipeline.py's first kill.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from synrank.config import ROOT, Paths, SampleConfig, TrackingConfig
from tests.fixtures.tiny_models import build_tiny_sd


def _params(root: Path, out: Path, model: Path) -> Path:
    cfg = yaml.safe_load((ROOT / "params.yaml").read_text())
    cfg["paths"] = {"prompts": str(root / "prompts"), "images": str(out / "images")}
    cfg["generate"] = {
        "generators": [{"name": "g", "path": str(model), "steps": 2, "height": 32, "width": 32}],
        "images_per_prompt": 2,
        "batch_size": 2,
        "shard_size": 2,
        "seed": 3,
    }
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
    sample_flow(
        SampleConfig(sources=[{"path": str(root / "p.txt")}], eval_fraction=0.0),
        Paths(prompts=str(root / "prompts")),
        TrackingConfig(tracking_uri=f"sqlite:///{root}/mlflow.db"),
    )
    return root


def _cmd(params: Path) -> list[str]:
    return [sys.executable, "-m", "cli", "generate", "--params", str(params)]


def _env() -> dict[str, str]:
    from prefect.settings import get_current_settings

    # Reuse the test session's Prefect server instead of starting one per subprocess.
    return {**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url), "PYTHONPATH": str(ROOT)}


@pytest.mark.slow
def test_missing_model_fails_before_generating(world: Path) -> None:
    params = _params(world, world / "missing", world / "no-such-model")
    res = subprocess.run(_cmd(params), cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert res.returncode == 2  # before Prefect starts: one line naming the setting and the path
    assert res.stderr == (
        f"synrank: generate.generators.0.path (generator 'g'): model path '{world / 'no-such-model'}' does not "
        f"exist (looked at {world / 'no-such-model'})\n"
    )
    assert not list((world / "missing" / "images").rglob("*.tar"))
