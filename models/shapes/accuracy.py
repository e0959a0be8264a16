"""Verifier accuracy on clean renders and on renders degraded like generated images (Gaussian
blur + Gaussian noise), per task, at 32 and 64 px.

    .venv/bin/python -m models.shapes.accuracy [--per-task 200] [--sigma 0.7] [--noise 10]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage

from .benchmark import geneval_accuracy
from .render import render
from .specs import TASKS, sample_spec
from .verify import verify


def degrade(img: np.ndarray, rng: np.random.Generator, sigma: float, noise: float) -> np.ndarray:
    """Blur each channel with a Gaussian of `sigma` px, then add N(0, noise) per pixel (0..255)."""
    x = img.astype(np.float32)
    if sigma > 0:
        x = ndimage.gaussian_filter(x, (sigma, sigma, 0))
    if noise > 0:
        x = x + rng.normal(0.0, noise, x.shape)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def run(per_task: int, size: int, sigma: float, noise: float, split: str, seed: int) -> dict:
    """The verifier's GenEval-style accuracy (arXiv 2310.11513's exact-count rules) on `per_task` seeded specs
    of each task of `split`, rendered at `size` x `size` px and, when sigma or noise > 0, degraded (blur
    `sigma` px, noise std `noise` on 0..255). Returns benchmark.geneval_accuracy's dict (overall and per task:
    accuracy, ci95, n)."""
    rng = np.random.default_rng([seed, size])
    results = []
    for tag in TASKS:
        for _ in range(per_task):
            spec = sample_spec(tag, rng, split)  # type: ignore[arg-type]
            img = render(spec, size, rng)
            if sigma > 0 or noise > 0:
                img = degrade(img, rng, sigma, noise)
            results.append((tag, verify(img, spec)))
    return geneval_accuracy(results)


def main() -> None:
    """Command line (module docstring): print the accuracy table, clean and degraded, at 32 and 64 px."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-task", type=int, default=200)
    ap.add_argument("--sigma", type=float, default=0.7, help="blur, px")
    ap.add_argument("--noise", type=float, default=10.0, help="noise std on the 0..255 scale")
    ap.add_argument("--split", choices=("train", "eval"), default="eval")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    degraded = f"blur {args.sigma} + noise {args.noise:g}/255"
    conditions = [("clean", 0.0, 0.0), (degraded, args.sigma, args.noise)]
    header = f"{'size':>4}  {'condition':<24}" + "".join(f"{t:>14}" for t in TASKS) + f"{'overall':>9}"
    print(f"verifier accuracy on {args.split} specs, {args.per_task} per task")
    print(header)
    for size in (32, 64):
        for name, sigma, noise in conditions:
            t0 = time.time()
            s = run(args.per_task, size, sigma, noise, args.split, args.seed)
            cells = "".join(f"{s['tasks'][t]['accuracy']:>14.3f}" for t in TASKS)
            print(f"{size:>4}  {name:<24}{cells}{s['overall']['accuracy']:>9.3f}   ({time.time() - t0:.1f}s)")


if __name__ == "__main__":
    main()
