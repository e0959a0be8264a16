"""One place that turns the config's `device: auto` into a torch device string."""

from __future__ import annotations


def pick_device(name: str = "auto") -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
