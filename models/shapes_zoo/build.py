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

from models.rewards.shapes_detector import ShapesDetectorReward
from models.shapes import WRONG_KINDS, benchmark, make_specs, render, verify
from synrank.config import RewardSpec

from . import cards
from .data import build_pool
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
        """Run fn(*args, **kwargs) now; a Future that holds its result (an exception propagates at once)."""
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


@dataclasses.dataclass(frozen=True)
class _Build:
    """What every step of one zoo build shares: the output folder, the scale of every step count and pool
    size, the base seed, and whether to show progress."""

    out_dir: Path
    scale: float
    seed: int
    progress: bool

    def scaled(self, n: int, least: int = 1) -> int:
        """n x scale, rounded, at least `least`."""
        return _scaled(n, self.scale, least)

    def say(self, msg: str) -> None:
        """One progress line (tqdm.write, so that it does not break a progress bar), when progress is on."""
        if self.progress:
            tqdm.write(msg)


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
    b = _Build(out_dir, scale, seed, progress)
    n_eval = eval_per_task or b.scaled(48)
    with _executor(workers) as executor:
        reward_cfgs = [dataclasses.replace(r, steps=b.scaled(r.steps), seed=seed + r.seed) for r in REWARDS]
        reward_future = executor.submit(
            rewards_job, reward_cfgs, b.scaled(REWARD_POOL, 32), seed + 1, WRONG_KINDS, out_dir, progress
        )
        gen_pool, vae, vae_cfg, vae_info = _pool_and_vae(b)
        lat_mean, lat_std = (t.numpy() for t in encode(vae, gen_pool.images))
        specs = eval_specs(n_eval, seed + 1000)  # the same prompts and seeds for every generator
        gen_cfgs = _generator_configs(b, len(gen_pool))
        futures = _submit_generators(
            executor, b, gen_cfgs, vae, vae_cfg, lat_mean, lat_std, gen_pool.captions, specs, images_per_prompt
        )
        eval_info = {"n_per_task": n_eval, "images_per_prompt": images_per_prompt, "seed": seed + 1000}
        generators, eval_sets = _finish_generators(b, gen_cfgs, futures, vae_info, eval_info)
        rewards = reward_future.result()
    rewards = _finish_rewards(b, rewards, eval_sets)
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
    return _write_summary(out_dir, summary)


def _executor(workers: int) -> Executor:
    """`workers` single-threaded spawned processes, or InlineExecutor for workers=1."""
    if workers > 1:
        return ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"), initializer=init_worker, initargs=(1,)
        )
    return InlineExecutor()


def _pool_and_vae(b: _Build) -> tuple:
    """(the generators' training pool, the VAE trained on it, its config, its summary entry)."""
    t0 = time.time()
    gen_pool = build_pool(b.scaled(GEN_POOL, 64), b.seed)
    vae_cfg = dataclasses.replace(VAE, steps=b.scaled(VAE.steps), seed=b.seed + VAE.seed)
    vae = train_vae(gen_pool.images, vae_cfg, line_logger("vae", vae_cfg.steps, b.progress))
    vae_info = {
        "config": vae_cfg.as_dict(),
        "params": param_count(vae),
        "train_s": time.time() - t0,
        "recon_verify": _vae_recon(vae, b.scaled(600, 12), b.seed),
    }
    b.say(
        f"vae: {vae_info['params']:,} params, recon verify {vae_info['recon_verify']:.3f}, {vae_info['train_s']:.0f} s"
    )
    return gen_pool, vae, vae_cfg, vae_info


def _generator_configs(b: _Build, pool_len: int) -> list[GeneratorConfig]:
    """GENERATOR_RUNS with GEN_COMMON, scaled step counts, pool sizes and snapshot steps, seeds offset by b.seed."""
    return [
        dataclasses.replace(
            g,
            **GEN_COMMON,
            steps=b.scaled(g.steps),
            seed=b.seed + g.seed,
            pool_size=min(pool_len, b.scaled(g.pool_size, 64)),
            snapshots=tuple((n, b.scaled(s)) for n, s in g.snapshots),
        )
        for g in GENERATOR_RUNS
    ]


def _submit_generators(
    executor: Executor,
    b: _Build,
    gen_cfgs: list[GeneratorConfig],
    vae,
    vae_cfg: VAEConfig,
    lat_mean: np.ndarray,
    lat_std: np.ndarray,
    captions,
    specs: list[dict],
    images_per_prompt: int,
) -> dict[str, Future]:
    """One generator_job per run, longest first, on the first pool_size latents; futures by run name."""
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
            list(captions[:n]),
            b.out_dir,
            specs,
            images_per_prompt,
            b.seed + 1000,
            SAMPLE_STEPS,
            GUIDANCE,
            b.progress,
        )
    return futures


def _finish_generators(
    b: _Build, gen_cfgs: list[GeneratorConfig], futures: dict[str, Future], vae_info: dict, eval_info: dict
) -> tuple[list[dict], list]:
    """(each snapshot's summary entry with its GenEval-shapes accuracy, its eval images), in the zoo's order,
    weakest first; each snapshot's folder gets its model card."""
    generators, eval_sets = [], []
    for cfg in gen_cfgs:
        for entry in futures[cfg.name].result():
            eval_sets.append(entry.pop("eval_images"))
            entry.update(
                geneval=benchmark.geneval_accuracy(eval_sets[-1].results(), prompts=eval_sets[-1].prompts()),
                vae=vae_info,
                data_seed=b.seed,
                eval=dict(eval_info),
                sample_steps=SAMPLE_STEPS,
                guidance=GUIDANCE,
            )
            _finish(b.out_dir / entry["name"], entry, cards.generator_card)
            generators.append(entry)
            g = entry["geneval"]["overall"]
            b.say(f"{entry['name']}: GenEval-shapes {g['accuracy']:.3f} {g['ci95']}, train {entry['train_s']:.0f} s")
    return generators, eval_sets


def _finish_rewards(b: _Build, rewards: list[dict], eval_sets: list) -> list[dict]:
    """Each trained reward's agreement with the verifier (on rendered pairs and the generators' eval images)
    and its model card, then the shapes-detector reward's agreement as one more entry."""
    pairs = rendered_pairs(b.scaled(24), b.seed + 2000)
    for entry in rewards:
        entry["agreement"] = verifier_agreement(
            b.out_dir / entry["name"], seed=b.seed + 2000, generated=eval_sets, pairs=pairs
        )
        _finish(b.out_dir / entry["name"], entry, cards.reward_card)
        b.say(f"{entry['name']}: agreement {entry['agreement']['rendered']['agreement']:.3f}")
    detector = ShapesDetectorReward(RewardSpec(name="shapes-detector", kind="shapes-detector"))
    rewards.append(
        {
            "name": "shapes-detector",
            "kind": "shapes-detector",
            "agreement": verifier_agreement(detector, seed=b.seed + 2000, generated=eval_sets, pairs=pairs),
        }
    )
    return rewards


def _write_summary(out_dir: Path, summary: dict) -> dict:
    """Write zoo.json until the size it records (`bytes`) is its folder's, itself included; returns it."""
    while True:
        cards.write_summary(out_dir, summary)
        if summary["bytes"] == folder_bytes(out_dir):
            return summary
        summary["bytes"] = folder_bytes(out_dir)


def main(argv: list[str] | None = None) -> int:
    """`python -m models.shapes_zoo.build` (module docstring) with `argv`: builds the zoo, prints its table,
    returns 0."""
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
