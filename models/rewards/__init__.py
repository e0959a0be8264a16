"""Reward models behind one batched interface: `score(images, prompts) -> np.ndarray` (higher = better).
Each kind is one module registering a class in REWARDS; `load_reward(spec)` picks it by `spec.kind`."""

from __future__ import annotations

from typing import Protocol

import numpy as np
from PIL import Image

from synrank.config import RewardSpec
from synrank.registry import Registry, import_all


class Reward(Protocol):
    spec: RewardSpec

    def score(self, images: list[Image.Image], prompts: list[str]) -> np.ndarray: ...


def text_window(reward: Reward, prompts: list[str]) -> tuple[list[int], int] | None:
    """(content tokens of each prompt, content tokens the reward's text encoder reads) for a reward that
    tokenizes its prompt (its `text_window` method), None for one that reads no token window (an
    aesthetic head, a prompt parser). Used to count the prompts a reward cuts: it scores the cut prompt."""
    window = getattr(reward, "text_window", None)
    return None if window is None else window(prompts)


REWARDS: Registry[type] = Registry("reward model")


def load_reward(spec: RewardSpec, device: str = "cpu") -> Reward:
    import_all("models.rewards")

    return REWARDS.get(spec.kind)(spec, device)
