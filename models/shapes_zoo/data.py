"""Training data of the zoo: an endless seeded stream of rendered shapes scenes and their captions,
and an in-memory pool of them (with hard negatives) that training loops sample batches from.

Rendering costs 1-3 ms per image, far more than a training step spends per image, so every model is
trained on a pool rendered once and indexed with numpy; `build_pool` memoises pools so the VAE, the
generators and the rewards of one build share them. Only train-split specs are used (no held-out benchmark
prompt, as a caption or as a negative's caption), and the renderer never draws a reserved (color, shape)
pairing, so the benchmark's prompts and the novel-binding probe stay unseen.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from itertools import count, islice

import numpy as np
import torch

from models.shapes import WRONG_KINDS, make_specs, render, render_wrong

IMAGE_SIZE = 32
CHUNK = 600  # specs drawn per make_specs call: a multiple of 6 keeps the six tasks in equal shares


@dataclass(frozen=True)
class Sample:
    """One rendered train-split scene: its spec, a 32 x 32 px RGB render and the spec's prompt as caption."""

    spec: dict
    image: np.ndarray  # (32, 32, 3) uint8
    caption: str


def stream(seed: int) -> Iterator[Sample]:
    """Endless (spec, image, caption) samples of the train split; the same seed gives the same stream."""
    rng = np.random.default_rng([seed, 1])
    for chunk in count():
        # A fresh make_specs seed per chunk: one call cannot be asked for "the next" specs.
        for spec in make_specs(CHUNK, seed=seed * 100_003 + chunk, split="train"):
            yield Sample(spec, render(spec, IMAGE_SIZE, rng), spec["prompt"])


def applicable_kinds(spec: dict) -> tuple[str, ...]:
    """Hard-negative kinds that can break this spec (color needs a colored item, relation a position)."""
    inc = spec["include"]
    kinds = []
    for kind in WRONG_KINDS:
        if kind == "color" and not any("color" in it for it in inc):
            continue
        if kind == "relation" and not any("position" in it for it in inc):
            continue
        kinds.append(kind)
    return tuple(kinds)


@dataclass(frozen=True)
class Pool:
    """N rendered samples; with negatives, K = len(kinds) wrong renders per sample (valid where applicable)."""

    images: np.ndarray  # (N, 32, 32, 3) uint8
    captions: tuple[str, ...]
    specs: tuple[dict, ...]
    kinds: tuple[str, ...] = ()
    neg_images: np.ndarray | None = None  # (N, K, 32, 32, 3) uint8
    neg_captions: tuple[tuple[str, ...], ...] = ()  # N x K, "" where not valid
    neg_valid: np.ndarray | None = None  # (N, K) bool

    def __len__(self) -> int:
        return len(self.captions)

    def tags(self) -> list[str]:
        """Each sample's GenEval task tag (single_object, two_object, ...), in pool order, length N."""
        return [s["tag"] for s in self.specs]


@lru_cache(maxsize=8)
def build_pool(n: int, seed: int, kinds: tuple[str, ...] = ()) -> Pool:
    """The first `n` samples of `stream(seed)`, plus wrong renders of the given kinds. Memoised: callers
    must treat the arrays as read-only."""
    samples = list(islice(stream(seed), n))
    images = np.stack([s.image for s in samples])
    captions = tuple(s.caption for s in samples)
    specs = tuple(s.spec for s in samples)
    if not kinds:
        return Pool(images, captions, specs)
    rng = np.random.default_rng([seed, 2])
    neg = np.zeros((n, len(kinds), IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    valid = np.zeros((n, len(kinds)), bool)
    neg_caps = []
    for i, spec in enumerate(specs):
        ok = applicable_kinds(spec)
        row = []
        for k, kind in enumerate(kinds):
            if kind not in ok:
                row.append("")
                continue
            try:
                neg[i, k], wrong = render_wrong(spec, kind, IMAGE_SIZE, rng)
            except ValueError:  # its only negative of this kind is a held-out prompt
                row.append("")
                continue
            valid[i, k] = True
            row.append(wrong["prompt"])
        neg_caps.append(tuple(row))
    return Pool(images, captions, specs, kinds, neg, tuple(neg_caps), valid)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float32 (..., 3, H, W) in [-1, 1], the range the diffusers VAE expects."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(127.5).sub_(1.0)
    return x.movedim(-1, -3)


def batch_indices(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Endless batches of indices: shuffled epochs, so every sample is seen once per epoch."""
    while True:
        order = rng.permutation(n)
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start : start + batch_size]
        if n < batch_size:  # tiny pools (tests): sample with replacement
            yield rng.integers(0, n, size=batch_size)
