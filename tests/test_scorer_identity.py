"""A benchmark scorer's weights are part of what evaluate stands for (synrank.scorer_weights): new weights
under the same location make the stage stale, their locations are MLflow params, and a pickle is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.benchmarks.common import local_weights
from models.generators.base import PickleWeightsError
from synrank.config import Config, EvaluateConfig
from synrank.stamp import evaluate_identity, fingerprint


def _identity(cfg: Config, model_dir: Path) -> dict:
    paths = cfg.paths.model_copy(update={"model": str(model_dir)})
    return evaluate_identity(cfg.evaluate, cfg.score, cfg.generate, paths)


@pytest.fixture
def tuned(tmp_path: Path) -> Path:
    """A model folder as train leaves it (only tuned.json matters to the identity)."""
    import json

    base = {"name": "b", "path": str(tmp_path / "base"), "steps": 2, "height": 8, "width": 8}
    (tmp_path / "base").mkdir()
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "tuned.json").write_text(json.dumps({"base": base, "kind": "lora"}))
    return tmp_path / "model"


def test_new_scorer_weights_under_the_same_path_make_evaluate_stale(
    tuned: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    detector = tmp_path / "mask2former"
    detector.mkdir()
    (detector / "model.safetensors").write_bytes(b"old weights")
    monkeypatch.setenv("SYNRANK_GENEVAL_MASK2FORMER", str(detector))
    cfg = Config(evaluate=EvaluateConfig(benchmarks=["geneval"]))
    first = _identity(cfg, tuned)
    assert first["params"]["scorers"]["geneval.detector"] == str(detector)  # logged as scorers.geneval.detector
    (detector / "model.safetensors").write_bytes(b"new weights, same name")
    second = _identity(cfg, tuned)
    assert fingerprint("evaluate", **first) != fingerprint("evaluate", **second)
    assert fingerprint("evaluate", **second) == fingerprint("evaluate", **_identity(cfg, tuned))
    # A benchmark without scorer weights (the shapes world's) has none in its identity.
    assert _identity(Config(), tuned)["params"]["scorers"] == {}


def test_a_pickled_scorer_is_refused_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "blip"
    folder.mkdir()
    torch.save({"w": torch.zeros(1)}, folder / "pytorch_model.bin")
    with pytest.raises(PickleWeightsError) as err:
        local_weights(str(folder), "attribute VQA: BLIP weights")
    assert str(err.value) == (
        f"attribute VQA: BLIP weights: '{folder / 'pytorch_model.bin'}' is a pickle file, which can run code "
        "when it is loaded; use safetensors weights, or set allow_pickle: true on the scorers "
        "($SYNRANK_SCORER_ALLOW_PICKLE=1) if you trust the file"
    )
    monkeypatch.setenv("SYNRANK_SCORER_ALLOW_PICKLE", "1")
    assert local_weights(str(folder), "attribute VQA: BLIP weights") == str(folder)
