"""The units of work of a zoo build, as top-level functions so that they can run in worker processes.

On a 2-core machine shared with other jobs, two single-threaded processes use both cores far more
reliably than one process with two torch threads: a parallel op waits for its slowest thread, and an
oversubscribed core makes that thread slow (measured here: 0.24 s per step with one thread, 0.18 to
10 s with two). So a build trains the rewards next to the VAE, and two generators at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .data import build_pool
from .generator import GeneratorConfig, save_pipeline, train_generator
from .measure import generate_and_verify, load_pipeline
from .reward import RewardConfig, save_reward, train_reward
from .train_utils import param_count
from .vae import VAEConfig, make_vae


def init_worker(threads: int) -> None:
    """Worker-process initializer: limit torch to `threads` intra-op threads (module docstring)."""
    torch.set_num_threads(threads)


def line_logger(name: str, total: int, enabled: bool) -> Callable[[int, float], None] | None:
    """Progress as a line every 10% of the steps: tqdm bars of parallel processes would overwrite each other."""
    if not enabled:
        return None
    start, every = time.time(), max(1, total // 10)

    def log(step: int, loss: float) -> None:
        if (step + 1) % every == 0 or step + 1 == total:
            print(f"  {name}: step {step + 1}/{total} loss {loss:.4f} ({time.time() - start:.0f} s)", flush=True)

    return log


def rebuild_vae(cfg: VAEConfig, state: dict, scaling_factor: float):
    """The trained zoo VAE in a worker process: make_vae(cfg.channels) with `state` loaded and the latent
    `scaling_factor` in its config, frozen in eval mode. RuntimeError if `state` does not fit the config."""
    vae = make_vae(cfg.channels)
    vae.load_state_dict(state)
    vae.register_to_config(scaling_factor=scaling_factor)
    return vae.eval().requires_grad_(False)


def generator_job(
    cfg: GeneratorConfig,
    vae_cfg: VAEConfig,
    vae_state: dict,
    scaling_factor: float,
    lat_mean: np.ndarray,
    lat_std: np.ndarray,
    captions: list[str],
    out_dir: Path,
    specs: list[dict],
    images_per_prompt: int,
    eval_seed: int,
    sample_steps: int,
    guidance: float,
    log: bool,
) -> list[dict]:
    """Train one run, then save and evaluate each of its snapshots as a pipeline under out_dir/<name>;
    the EvalImages come back for reward agreement."""
    vae = rebuild_vae(vae_cfg, vae_state, scaling_factor)
    t0 = time.time()
    snapshots = train_generator(
        cfg,
        torch.from_numpy(lat_mean),
        torch.from_numpy(lat_std),
        captions,
        progress=line_logger(cfg.name, cfg.steps, log),
    )
    train_s = time.time() - t0
    entries = []
    for step, name in sorted(cfg.snapshot_steps().items()):
        unet, text = snapshots[name]
        save_pipeline(Path(out_dir) / name, vae, unet, text)
        t0 = time.time()
        ev = generate_and_verify(
            load_pipeline(Path(out_dir) / name), specs, images_per_prompt, eval_seed, sample_steps, guidance
        )
        entries.append(
            {
                "name": name,
                "run": cfg.name,
                "snapshot_step": step,
                "config": cfg.as_dict(),
                "train_s": train_s * step / cfg.steps,
                "eval_s": time.time() - t0,
                "params": {"unet": param_count(unet), "text_encoder": param_count(text), "vae": param_count(vae)},
                "eval_images": ev,
            }
        )
    return entries


def rewards_job(
    configs: list[RewardConfig], pool_size: int, pool_seed: int, kinds: tuple[str, ...], out_dir: Path, log: bool
) -> list[dict]:
    """Render the negatives pool once, then train and save every reward on it."""
    pool = build_pool(pool_size, pool_seed, kinds)
    out = []
    for cfg in configs:
        t0 = time.time()
        model = train_reward(cfg, pool, line_logger(cfg.name, cfg.steps, log))
        save_reward(Path(out_dir) / cfg.name, model, cfg)
        out.append(
            {
                "name": cfg.name,
                "config": cfg.as_dict(),
                "params": param_count(model),
                "train_s": time.time() - t0,
                "pool_size": len(pool),
                "data_seed": pool_seed,
            }
        )
    return out
