"""One place that turns the config's `device: auto` into a torch device string."""

from __future__ import annotations


def pick_device(name: str = "auto") -> str:
    """`name` as given, or for "auto" "cuda" when torch sees a GPU, else "cpu" (torch imported only then)."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
