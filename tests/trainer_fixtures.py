"""Synthetic ranked data and a runnable training entry point, shared by the trainer tests and the
resume test's subprocess (`python -m tests.trainer_fixtures <model> <out> <steps> <ckpt_every>`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from synrank.config import GeneratorSpec, TrainConfig


def ranked_table(
    n_prompts: int = 8, k: int = 3, seed: int = 0, size: tuple[int, int] = (32, 32)
) -> tuple[pd.DataFrame, dict[str, Image.Image]]:
    """k images per prompt with distinct phi (a strict ranking) and random pixels; size = (height, width)."""
    rng = np.random.default_rng(seed)
    rows, images = [], {}
    for p in range(n_prompts):
        phi = rng.permutation(k) / (k - 1)
        for i in range(k):
            image_id = f"p{p}-{i}"
            images[image_id] = Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))
            rows.append(
                {
                    "image_id": image_id,
                    "prompt_id": f"p{p}",
                    "prompt": f"a photo of {p} circles",
                    "phi": float(phi[i]),
                    "tau": int(k - phi[i] * (k - 1)),
                    "k": k,
                    # GPO's advantage: one reward equal to phi, standardized within the group.
                    "advantage": float((phi[i] - phi.mean()) / phi.std()),
                }
            )
    return pd.DataFrame(rows), images


def run(
    model: str,
    out: Path,
    steps: int,
    checkpoint_every: int,
    objective: str = "rankdpo",
    lora_rank: int = 2,
    height: int = 32,
    width: int = 32,
    **train_cfg: Any,
) -> dict[str, float]:
    """train() on ranked_table's images (height x width, as the generator spec says); `train_cfg`
    overrides TrainConfig fields (e.g. learning_rate, nonfinite, resolution)."""
    from models.trainer import train

    ranked, images = ranked_table(size=(height, width))
    settings: dict[str, Any] = dict(
        steps=steps,
        prompts_per_step=3,
        lora_rank=lora_rank,
        log_every=1,
        checkpoint_every=checkpoint_every,
        objective=objective,
        holdout_fraction=0.25,
        learning_rate=1e-3,
    )
    cfg = TrainConfig(**{**settings, **train_cfg})
    spec = GeneratorSpec(name="tiny", path=model, height=height, width=width)
    return train(spec, cfg, ranked, lambda ids: [images[i] for i in ids], out)


if __name__ == "__main__":
    run(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
