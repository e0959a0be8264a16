"""Images per second of batched multi-prompt generation vs the naive one-prompt-per-call loop.

Both paths run the same StableDiffusionPipeline (random weights, built offline by
tests/fixtures/tiny_models.py) with the same seeds: "batched" is the sd15 generator backend, i.e. one pipe
call over all prompts with one torch.Generator per image; "naive" is `pipe(prompt, generator=...)` once per
prompt. The script also checks that both give the same pixels, so the speed-up is not bought with different
images.

    .venv/bin/python scripts/bench_generate.py            # tiny + mid + zoo, 16 prompts, 10 steps
    .venv/bin/python scripts/bench_generate.py --configs tiny --repeats 1

Prints a markdown table on stdout (progress goes to stderr).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without installing

from models.generators import load_generator  # noqa: E402
from models.generators.base import seeded_generators  # noqa: E402
from synrank.config import GeneratorSpec  # noqa: E402
from tests.fixtures.tiny_models import build_tiny_sd  # noqa: E402


@dataclass(frozen=True)
class UNetConfig:
    label: str
    image_size: int
    channels: tuple[int, ...]
    layers_per_block: int
    path: str = ""  # a committed pipeline to load instead of building a random one


CONFIGS = {
    "tiny": UNetConfig("tiny SD (tiny_models defaults)", 32, (32, 64), 1),
    # Mid-size: three UNet levels, two layers each, 64 px (16x16 latents): ~100x the tiny UNet's
    # parameters, still a few seconds per 16-image batch on a laptop CPU.
    "mid": UNetConfig("mid SD (random UNet)", 64, (64, 128, 256), 2),
    # The embedded default: the committed zoo generator that `make run` tunes.
    "zoo": UNetConfig("zoo shapes-sd-s (trained)", 32, (), 0, path="zoo/shapes-sd-s"),
}
COLORS = ["red", "green", "blue", "yellow"]
SHAPES = ["cube", "sphere", "cone", "cylinder"]


def prompts(n: int) -> list[str]:
    """n different prompts (colour x shape, then numbered), so no two batch entries are alike."""
    pairs = [f"a {c} {s}" for c in COLORS for s in SHAPES]
    return [pairs[i % len(pairs)] + (f" number {i // len(pairs)}" if i >= len(pairs) else "") for i in range(n)]


def timed(fn: Callable[[], list]) -> tuple[float, float, list]:
    """(wall seconds, CPU seconds of this process, result). CPU time is the steadier number on a shared
    machine: other people's processes lengthen the wall clock, not this process's CPU time."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def bench(cfg: UNetConfig, n: int, steps: int, repeats: int, folder: Path) -> dict[str, object]:
    path = (
        Path(__file__).resolve().parent.parent / cfg.path
        if cfg.path
        else build_tiny_sd(
            folder, image_size=cfg.image_size, channels=cfg.channels, layers_per_block=cfg.layers_per_block
        )
    )
    spec = GeneratorSpec(
        name=f"bench-{cfg.image_size}",
        backend="sd15",
        path=str(path),
        steps=steps,
        guidance=5.0,
        height=cfg.image_size,
        width=cfg.image_size,
    )
    gen = load_generator(spec)
    pipe = gen.pipe
    texts, seeds = prompts(n), list(range(n))

    def naive() -> list:
        return [
            pipe(
                p,
                generator=g,
                num_inference_steps=steps,
                guidance_scale=spec.guidance,
                height=spec.height,
                width=spec.width,
            ).images[0]
            for p, g in zip(texts, seeded_generators(seeds))
        ]

    def batched() -> list:
        return gen.generate(texts, seeds)

    batched(), naive()  # warm-up: first calls pay for lazy initialisation
    # Alternate the two paths so that both see the same (shared, fluctuating) machine; compare per pair.
    runs: list[tuple[tuple[float, float, list], tuple[float, float, list]]] = []
    for r in range(repeats):
        print(f"[{cfg.label}] repeat {r + 1}/{repeats}", file=sys.stderr, flush=True)
        runs.append((timed(batched), timed(naive)))
    wall_batched = statistics.median(b[0] for b, _ in runs)
    wall_naive = statistics.median(nv[0] for _, nv in runs)
    batched_images, naive_images = runs[-1][0][2], runs[-1][1][2]
    max_diff = max(
        int(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max())
        for a, b in zip(batched_images, naive_images)
    )
    return {
        "config": cfg.label,
        "UNet params": f"{sum(p.numel() for p in pipe.unet.parameters()) / 1e6:.2f} M",
        "image": f"{cfg.image_size}x{cfg.image_size}",
        "naive img/s": n / wall_naive,
        "batched img/s": n / wall_batched,
        "speed-up (wall)": statistics.median(nv[0] / b[0] for b, nv in runs),
        "speed-up (CPU time)": statistics.median(nv[1] / b[1] for b, nv in runs),
        "max pixel diff": max_diff,  # batched vs naive images, uint8 levels
    }


def markdown(rows: list[dict[str, object]]) -> str:
    def cell(v: object) -> str:
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(cell(r[k]) for k in head) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="tiny,mid,zoo", help=f"comma-separated, from {', '.join(CONFIGS)}")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.configs.split(","):
            rows.append(bench(CONFIGS[key], args.prompts, args.steps, args.repeats, Path(tmp) / key))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{args.prompts} prompts, {args.steps} steps, CFG on, float32 CPU, torch threads "
        f"{torch.get_num_threads()}, {os.cpu_count()} CPUs, load average {load:.1f}; "
        f"medians of {args.repeats} alternating runs.\n"
    )
    print(markdown(rows))


if __name__ == "__main__":
    main()
