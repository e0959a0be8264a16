"""Throughput of batched reward scoring vs a per-image loop, on the tiny random reward models of
`tests/fixtures/tiny_rewards.py` (real architectures and loaders, CPU). Prints a markdown table.

    .venv/bin/python scripts/bench_rewards.py [--batch 32] [--repeats 5] [--image-size 64] [--threads 1]

Not a test: the numbers depend on the machine. The batch holds `--batch` images for
`--batch / --per-prompt` distinct prompts, as a generate stage with several images per prompt does.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.rewards import load_reward  # noqa: E402
from synrank.config import RewardSpec  # noqa: E402
from tests.fixtures.tiny_rewards import build_aesthetic, build_hps, build_imagereward, build_pickscore  # noqa: E402


def fastest(repeats: int, runs: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Fastest of `repeats` timings of each run, interleaved so that a burst of load from another
    tenant of a shared machine hits both sides rather than one."""
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--per-prompt", type=int, default=4, help="images per distinct prompt in a batch")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads; 1 keeps timings stable on a small shared machine",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (args.image_size, args.image_size, 3), dtype=np.uint8))
        for _ in range(args.batch)
    ]
    prompts = [f"a photo of object number {i // args.per_prompt} on a table" for i in range(args.batch)]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        specs: list[RewardSpec] = [
            build_hps(root / "hps"),
            build_pickscore(root / "pick"),
            build_aesthetic(root / "aes"),
            build_imagereward(root / "ir"),
        ]
        rows = []
        for spec in specs:
            reward = load_reward(spec, "cpu")
            reward.score(images[:2], prompts[:2])  # warm-up
            t = fastest(
                args.repeats,
                {
                    "batched": lambda reward=reward: reward.score(images, prompts),
                    "looped": lambda reward=reward: [reward.score([im], [p]) for im, p in zip(images, prompts)],
                },
            )
            batched, looped = t["batched"], t["looped"]
            rows.append((spec.kind, args.batch / batched, args.batch / looped, looped / batched))

    print(f"| reward | batched (batch {args.batch}) img/s | per-image img/s | speed-up |")
    print("|---|---:|---:|---:|")
    for kind, fast, slow, ratio in rows:
        print(f"| {kind} | {fast:,.0f} | {slow:,.0f} | {ratio:.1f}x |")


if __name__ == "__main__":
    main()
