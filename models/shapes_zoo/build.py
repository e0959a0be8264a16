"""Train the shapes-world zoo: one VAE, four generators of graded quality, three CLIP rewards.

The four generators are EMA snapshots of one long run, taken at increasing step counts: on 2 cores
training length is what separates a model that draws the right shapes from one that does not
(measured in the first zoo: the same UNet scored 5% GenEval-shapes after 1,800 steps and 31% after
3,000), and one run costs what its longest member costs.

    python -m models.shapes_zoo.build --out zoo [--scale 1.0] [--seed 0] [--workers 2]

Every step count (and pool and evaluation size) is multiplied by `scale`, so scale=0.01 is a smoke test
of the whole path. Seeds are fixed per model; each model lands in out/<name>/ with a MODEL_CARD.md, and
out/zoo.json holds the summary that build_zoo returns. The size budget (30 MB for all of it, fp16) is
why the generators use CLIP's BPE restricted to the shapes words (tokenizer.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import shutil
import time
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from models.shapes import WRONG_KINDS, benchmark, make_specs, render, verify
from synrank.config import RewardSpec

from . import cards
from .data import build_pool
from .detector_reward import ShapesDetectorReward
from .generator import GeneratorConfig
from .jobs import generator_job, init_worker, line_logger, rewards_job
from .measure import eval_specs, rendered_pairs, verifier_agreement
from .reward import RewardConfig
from .train_utils import folder_bytes, param_count
from .vae import VAEConfig, encode, reconstruct, train_vae

VAE = VAEConfig(channels=(16, 32, 48), steps=1200, batch_size=32, lr=2e-3)
GEN_POOL = 16000
# Graded by width, steps and data: the spread of scores comes from all three.
GENERATOR_RUNS = (
    GeneratorConfig(
        name="shapes-sd",
        unet_channels=(32, 64),
        steps=6000,
        pool_size=GEN_POOL,
        seed=104,
        snapshots=(("shapes-sd-xs", 1500), ("shapes-sd-s", 2500), ("shapes-sd-m", 4000), ("shapes-sd-l", 6000)),
    ),
)
GEN_COMMON = dict(text_hidden=32, text_layers=3, batch_size=64, lr=2e-3)
REWARD_POOL = 6000
# Different in architecture, seed and data, so that their errors differ.
REWARDS = (
    RewardConfig(name="shapes-clip-p4", vision_width=64, vision_layers=3, patch_size=4, steps=400, seed=201),
    RewardConfig(name="shapes-clip-p8", vision_width=96, vision_layers=4, patch_size=8, steps=400, seed=202),
    RewardConfig(
        name="shapes-clip-norel",
        vision_width=64,
        vision_layers=2,
        patch_size=4,
        steps=400,
        seed=203,
        kinds=("count", "color", "shape"),
    ),
)
SAMPLE_STEPS, GUIDANCE = 20, 4.0


class InlineExecutor(Executor):
    """Runs each job at submit time in this process: the workers=1 path (tests, debugging)."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        fut: Future = Future()
        fut.set_result(fn(*args, **kwargs))
        return fut


def _scaled(n: int, scale: float, least: int = 1) -> int:
    return max(least, int(round(n * scale)))


def _vae_recon(vae, n: int, seed: int) -> float:
    """Fraction of eval-split renders that still pass the verifier after the VAE: the generators' ceiling."""
    specs = make_specs(n, seed=seed, split="eval")
    rng = np.random.default_rng([seed, 8])
    images = np.stack([render(s, 32, rng) for s in specs])
    return float(np.mean([verify(im, s) for im, s in zip(reconstruct(vae, images), specs)]))


def _finish(folder: Path, entry: dict, card) -> None:
    cards.write_card(folder, "")  # a placeholder, so that the size counts a card
    entry["bytes"] = folder_bytes(folder)
    cards.write_card(folder, card(entry))


def build_zoo(
    out_dir: Path,
    scale: float = 1.0,
    seed: int = 0,
    progress: bool = False,
    eval_per_task: int | None = None,
    images_per_prompt: int = 4,
    workers: int = 1,
) -> dict:
    """Train and write the zoo under out_dir; returns the summary (also written to out_dir/zoo.json).

    workers > 1 trains in that many single-threaded processes (rewards next to the VAE, then the
    generators, longest first); workers=1 runs everything here with torch's current thread count."""
    t_start = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_eval = eval_per_task or _scaled(48, scale)
    say = tqdm.write if progress else (lambda _msg: None)
    executor = (
        ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"), initializer=init_worker, initargs=(1,)
        )
        if workers > 1
        else InlineExecutor()
    )
    with executor:
        reward_cfgs = [dataclasses.replace(r, steps=_scaled(r.steps, scale), seed=seed + r.seed) for r in REWARDS]
        reward_future = executor.submit(
            rewards_job, reward_cfgs, _scaled(REWARD_POOL, scale, 32), seed + 1, WRONG_KINDS, out_dir, progress
        )

        t0 = time.time()
        gen_pool = build_pool(_scaled(GEN_POOL, scale, 64), seed)
        vae_cfg = dataclasses.replace(VAE, steps=_scaled(VAE.steps, scale), seed=seed + VAE.seed)
        vae = train_vae(gen_pool.images, vae_cfg, line_logger("vae", vae_cfg.steps, progress))
        vae_info = {
            "config": vae_cfg.as_dict(),
            "params": param_count(vae),
            "train_s": time.time() - t0,
            "recon_verify": _vae_recon(vae, _scaled(600, scale, 12), seed),
        }
        say(
            f"vae: {vae_info['params']:,} params, recon verify {vae_info['recon_verify']:.3f}, "
            f"{vae_info['train_s']:.0f} s"
        )
        lat_mean, lat_std = (t.numpy() for t in encode(vae, gen_pool.images))

        specs = eval_specs(n_eval, seed + 1000)  # the same prompts and seeds for every generator
        gen_cfgs = [
            dataclasses.replace(
                g,
                **GEN_COMMON,
                steps=_scaled(g.steps, scale),
                seed=seed + g.seed,
                pool_size=min(len(gen_pool), _scaled(g.pool_size, scale, 64)),
                snapshots=tuple((n, _scaled(s, scale)) for n, s in g.snapshots),
            )
            for g in GENERATOR_RUNS
        ]
        futures = {}
        for cfg in sorted(gen_cfgs, key=lambda c: -c.steps * c.unet_channels[-1]):  # longest first
            n = cfg.pool_size
            futures[cfg.name] = executor.submit(
                generator_job,
                cfg,
                vae_cfg,
                vae.state_dict(),
                float(vae.config.scaling_factor),
                lat_mean[:n],
                lat_std[:n],
                list(gen_pool.captions[:n]),
                out_dir,
                specs,
                images_per_prompt,
                seed + 1000,
                SAMPLE_STEPS,
                GUIDANCE,
                progress,
            )
        generators, eval_sets = [], []
        for cfg in gen_cfgs:  # results in the zoo's order, weakest first
            for entry in futures[cfg.name].result():
                eval_sets.append(entry.pop("eval_images"))
                entry.update(
                    geneval=benchmark.geneval_accuracy(eval_sets[-1].results(), prompts=eval_sets[-1].prompts()),
                    vae=vae_info,
                    data_seed=seed,
                    eval={"n_per_task": n_eval, "images_per_prompt": images_per_prompt, "seed": seed + 1000},
                    sample_steps=SAMPLE_STEPS,
                    guidance=GUIDANCE,
                )
                _finish(out_dir / entry["name"], entry, cards.generator_card)
                generators.append(entry)
                g = entry["geneval"]["overall"]
                say(f"{entry['name']}: GenEval-shapes {g['accuracy']:.3f} {g['ci95']}, train {entry['train_s']:.0f} s")
        rewards = reward_future.result()

    pairs = rendered_pairs(_scaled(24, scale), seed + 2000)
    for entry in rewards:
        entry["agreement"] = verifier_agreement(
            out_dir / entry["name"], seed=seed + 2000, generated=eval_sets, pairs=pairs
        )
        _finish(out_dir / entry["name"], entry, cards.reward_card)
        say(f"{entry['name']}: agreement {entry['agreement']['rendered']['agreement']:.3f}")
    detector = ShapesDetectorReward(RewardSpec(name="shapes-detector", kind="shapes-detector"))
    rewards.append(
        {
            "name": "shapes-detector",
            "kind": "shapes-detector",
            "agreement": verifier_agreement(detector, seed=seed + 2000, generated=eval_sets, pairs=pairs),
        }
    )

    summary = {
        "scale": scale,
        "seed": seed,
        "workers": workers,
        "vae": vae_info,
        "generators": generators,
        "rewards": rewards,
        "wall_s": time.time() - t_start,
        "bytes": 0,
    }
    while True:  # zoo.json counts itself: rewrite until the number it records is its folder's size
        cards.write_summary(out_dir, summary)
        if summary["bytes"] == folder_bytes(out_dir):
            return summary
        summary["bytes"] = folder_bytes(out_dir)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("zoo"))
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies every step count and pool size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2, help="single-threaded training processes (1 = in-process)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of this process")
    ap.add_argument("--clean", action="store_true", help="remove --out first")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.clean:
        shutil.rmtree(args.out, ignore_errors=True)
    summary = build_zoo(args.out, scale=args.scale, seed=args.seed, progress=True, workers=args.workers)
    print(cards.table(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
