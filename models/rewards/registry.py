"""The reward registry and the interface its entries share. A leaf module: reward modules import REWARDS
from here to register themselves, and `models.rewards` imports them all (`import_all`) to fill it."""

from __future__ import annotations

from typing import Protocol

import numpy as np
from PIL import Image

from synrank.config import RewardSpec
from synrank.registry import Registry


class Reward(Protocol):
    """A reward model: built as `cls(spec, device)`, it scores images against their prompts."""

    spec: RewardSpec

    def score(self, images: list[Image.Image], prompts: list[str]) -> np.ndarray:
        """(N,) float64 scores, higher = better, for N images and their N prompts."""
        ...


REWARDS: Registry[type] = Registry("reward model")
