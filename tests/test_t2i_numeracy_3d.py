"""T2I-CompBench's numeracy and 3d_spatial substitutes: counts and depth order on hand-made detections and
depth maps, and the depth model loading through from_pretrained (a tiny random DPT)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.benchmarks import load_benchmark
from models.benchmarks.t2i_numeracy_3d import NumeracyScorer, Spatial3dScorer, counted_phrases, parse_depth_relation
from models.benchmarks.vision import DepthModel
from tests.fixtures.benchmarks import IMAGE, FakeDetector, det, save_tiny_dpt


class LeftIsNear:
    """A depth map whose left half is near (inverse depth 10) and right half far (1)."""

    def inverse_depth(self, image: Image.Image) -> np.ndarray:
        out = np.ones((image.height, image.width))
        out[:, : image.width // 2] = 10.0
        return out


def test_counted_phrases_and_depth_relations_parse() -> None:
    assert counted_phrases("three apples, and a dog.") == [(3, "apples"), (1, "dog")]
    assert counted_phrases("2 cats and some birds") == [(2, "cats")]
    assert parse_depth_relation("A cat in front of a sofa.") == ("cat", True, "sofa")
    assert parse_depth_relation("a ball hidden by the box") == ("ball", False, "box")
    assert parse_depth_relation("a cat near a sofa") is None


def test_numeracy_is_the_share_of_objects_counted_right() -> None:
    found = [det("apples", 0.9), det("apples", 0.8), det("apples", 0.2), det("dog", 0.7)]  # 0.2: below 0.3
    score = NumeracyScorer(FakeDetector(found))
    assert score(IMAGE, "two apples and one dog") == 1.0
    assert score(IMAGE, "three apples and one dog") == 0.5
    assert score(IMAGE, "three apples and two dogs") == 0.0  # "dogs" is not "dog": nothing found
    with pytest.raises(ValueError, match="no counted object"):
        score(IMAGE, "apples and dogs")


def test_3d_spatial_compares_the_depth_inside_each_box() -> None:
    left, right = (0, 20, 30, 60), (70, 20, 100, 60)  # IMAGE is 100 x 100: left half near
    detector = FakeDetector([det("cat", 0.9, left), det("sofa", 0.9, right), det("box", 0.9, left)])
    score = Spatial3dScorer(detector, LeftIsNear())
    assert score(IMAGE, "a cat in front of a sofa") == 1.0
    assert score(IMAGE, "a cat behind a sofa") == 0.0
    assert score(IMAGE, "a sofa hidden by a box") == 1.0
    assert score(IMAGE, "a cat in front of a table") == 0.0  # no table
    with pytest.raises(ValueError, match="no 3d_spatial relation"):
        score(IMAGE, "a cat near a sofa")


def test_a_tiny_depth_model_loads_and_the_benchmark_names_its_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    depth = DepthModel(save_tiny_dpt(tmp_path / "dpt")).inverse_depth(Image.new("RGB", (48, 40), "red"))
    assert depth.shape == (40, 48) and np.isfinite(depth).all()
    monkeypatch.delenv("SYNRANK_T2I_DEPTH", raising=False)
    roles = {w.role: w.path for w in load_benchmark("t2i-compbench").weights()}
    assert roles["T2I-CompBench depth (Depth Anything V2)"] == "depth-anything/Depth-Anything-V2-Small-hf"
