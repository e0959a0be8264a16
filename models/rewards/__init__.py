"""Reward models behind one batched interface: `score(images, prompts) -> np.ndarray` (higher = better).
Each kind is one module registering a class in REWARDS (models/rewards/registry.py); `load_reward(spec)`
picks it by `spec.kind`."""

from __future__ import annotations

from models.rewards.registry import REWARDS, Reward
from synrank.config import RewardSpec
from synrank.registry import import_all

__all__ = ["REWARDS", "Reward", "load_reward", "text_window"]


def text_window(reward: Reward, prompts: list[str]) -> tuple[list[int], int] | None:
    """(content tokens of each prompt, content tokens the reward's text encoder reads) for a reward that
    tokenizes its prompt (its `text_window` method), None for one that reads no token window (an
    aesthetic head, a prompt parser). Used to count the prompts a reward cuts: it scores the cut prompt."""
    window = getattr(reward, "text_window", None)
    return None if window is None else window(prompts)


def load_reward(spec: RewardSpec, device: str = "cpu") -> Reward:
    """The reward of kind `spec.kind` on `device`, after importing every reward module so each registers
    itself; KeyError naming the known kinds for an unknown one."""
    import_all("models.rewards")

    return REWARDS.get(spec.kind)(spec, device)
