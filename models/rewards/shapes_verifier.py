"""The controlled oracle: the GenEval-shapes benchmark's own judge (models.shapes.verify) as a reward, kind
"shapes-verifier". For diagnosis runs only (docs/what-moves-the-model.md): it answers "would the model
improve if the labels were perfect?", which separates label quality from the method. Scoring the train
images with the very rules the held-out benchmark applies is a leak, so validation refuses this kind
next to the geneval-shapes benchmark unless `score.oracle: true` says the run is a diagnosis
(models/validate.py, check_oracle); params.yaml's default never uses it.

Graded where the rules allow partial credit: 1.0 for an image that passes, otherwise the share of the
prompt's requirements it meets, 1 - failures / requirements (requirements: every include item, every
exclude item and every position relation; a failure is one of verify_report's), so a counting image one
object off still ranks above an empty one. An image that fails never reaches 1.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from models.rewards.registry import REWARDS
from models.rewards.shapes_detector import per_image
from models.shapes.verify import verify_report
from models.shapes_zoo.prompt_parser import parse_prompt
from synrank.config import RewardSpec

KIND = "shapes-verifier"


def requirements(spec: dict) -> int:
    """How many requirements verify_report checks for `spec`: include items, exclude items, positions."""
    include = spec["include"]
    return len(include) + len(spec.get("exclude") or []) + sum("position" in it for it in include)


def graded_verdict(image: np.ndarray, prompt: str) -> float:
    """1.0 if `image` passes the prompt's spec, else 1 - failures / requirements (module docstring), in [0, 1);
    0.0 for a prompt outside the shapes grammar."""
    spec = parse_prompt(prompt)
    if spec is None:
        return 0.0
    report = verify_report(image, spec)
    if report["ok"]:
        return 1.0
    return max(0.0, 1.0 - len(report["failures"]) / requirements(spec))


@REWARDS.register(KIND)
class ShapesVerifierReward:
    """Reward kind "shapes-verifier" (the oracle); `arch` and `pretrained` of the RewardSpec are not used."""

    def __init__(self, spec: RewardSpec, device: str = "cpu") -> None:
        self.spec, self.device = spec, device

    def score(self, images: list[Image.Image], prompts: list[str]) -> np.ndarray:
        """graded_verdict of each (image, prompt): (N,) float64 in [0, 1]; ValueError if the lengths differ."""
        return per_image(graded_verdict, images, prompts)
