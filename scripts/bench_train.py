"""Training throughput of DPO vs RankDPO on the same model and the same number of prompts per step.

    .venv/bin/python scripts/bench_train.py [--prompts 8] [--steps 10] [--width 64] [--latent 8] [--repeats 3]

DPO sees 2 images per prompt and scores 1 pair; RankDPO sees K = 4 and scores all 6 ordered pairs of
its ranking, from 4 forwards instead of 2. Reported per objective: step time, training pairs/s
(= comparisons/s: pairs scored per second), images/s, and peak memory (CUDA: max allocated; CPU: the
process's peak RSS, each objective measured in its own process). Not a test: numbers depend on the
machine; each objective runs --repeats times, alternating, and the fastest run is reported."""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch


def tiny_unet(width: int, latent: int, device: str) -> tuple:
    """(a small SD-style UNet (4 latent channels, latent x latent, text width 64), a frozen copy as the
    reference), seeded with torch.manual_seed(0) so that every objective times the same weights."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=latent,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(width, 2 * width),
        norm_num_groups=8,
        cross_attention_dim=64,
        attention_head_dim=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    ).to(device)
    ref = UNet2DConditionModel.from_config(unet.config).to(device).requires_grad_(False)
    ref.load_state_dict(unet.state_dict())
    return unet, ref


def ranked_groups(prompts: int, k: int, latent: int, gen: torch.Generator, device: str) -> tuple:
    """Random (latents (P, K, 4, latent, latent), cond {encoder_hidden_states (P, 16, 64)}) and a strict
    ranking of each group: phi from 1 to 0, tau 1..K, every image real (mask)."""
    lat = torch.randn(prompts, k, 4, latent, latent, generator=gen).to(device)
    cond = {"encoder_hidden_states": torch.randn(prompts, 16, 64, generator=gen).to(device)}
    phi = torch.linspace(1, 0, k).expand(prompts, k).contiguous().to(device)
    tau = torch.arange(1, k + 1).expand(prompts, k).contiguous().to(device)
    mask = torch.ones(prompts, k, dtype=torch.bool, device=device)
    return lat, cond, phi, tau, mask


def peak_mib(device: str) -> float:
    """Peak memory in MiB: CUDA's max allocated, or this process's peak RSS on the CPU."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**20


def measure(objective: str, k: int, prompts: int, steps: int, width: int, latent: int) -> dict:
    """One objective's throughput: the mean step time (s) of `steps` timed steps after two warm-up ones,
    pairs and images per second, peak memory (MiB), the UNet's size (M params) and the device."""
    from models.objectives import OBJECTIVES, objective_loss
    from models.parametrization import Parametrization
    from models.preference_batch import denoise_errors

    device = "cuda" if torch.cuda.is_available() else "cpu"
    unet, ref = tiny_unet(width, latent, device)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-5)
    param = Parametrization("epsilon", 1000, torch.linspace(0.999, 0.01, 1000))
    obj = OBJECTIVES.get(objective)
    gen = torch.Generator().manual_seed(0)
    lat, cond, phi, tau, mask = ranked_groups(prompts, k, latent, gen, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, pairs = [], 0
    for step in range(steps + 2):  # two warm-up steps
        t0 = time.perf_counter()
        t = param.sample_t(prompts, gen).to(device)
        noise = torch.randn(prompts, 4, latent, latent, generator=gen).to(device)
        model_err = denoise_errors(unet, param, lat, cond, t, noise)
        with torch.no_grad():
            ref_err = denoise_errors(ref, param, lat, cond, t, noise)
        loss, w = objective_loss(obj, model_err, ref_err, phi, tau, mask, 2500.0)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if device == "cuda":
            torch.cuda.synchronize()
        if step >= 2:
            times.append(time.perf_counter() - t0)
            pairs = int((w > 0).sum())
    step_s = sum(times) / len(times)
    return {
        "objective": objective,
        "K": k,
        "step_s": step_s,
        "pairs_per_step": pairs,
        "pairs_per_s": pairs / step_s,
        "images_per_s": prompts * k / step_s,
        "peak_mib": peak_mib(device),
        "params_m": sum(p.numel() for p in unet.parameters()) / 1e6,
        "device": device,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--latent", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        objective, k = a.one.split(":")
        print(json.dumps(measure(objective, int(k), a.prompts, a.steps, a.width, a.latent)))
        return
    runs: dict[str, list[dict]] = {"dpo:2": [], "rankdpo:4": []}
    for _ in range(a.repeats):  # alternate, each in a fresh process (its own peak memory); keep the fastest
        for one in runs:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--one",
                    one,
                    "--prompts",
                    str(a.prompts),
                    "--steps",
                    str(a.steps),
                    "--width",
                    str(a.width),
                    "--latent",
                    str(a.latent),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            runs[one].append(json.loads(out.stdout.strip().splitlines()[-1]))
    rows = [min(r, key=lambda x: x["step_s"]) for r in runs.values()]
    print(
        f"UNet {rows[0]['params_m']:.1f} M params, latents 4x{a.latent}x{a.latent}, {a.prompts} prompts per step, "
        f"device {rows[0]['device']}\n"
    )
    print("| objective | K | step (s) | pairs/step | pairs/s (comparisons/s) | images/s | peak MiB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['objective']} | {r['K']} | {r['step_s']:.3f} | {r['pairs_per_step']} | {r['pairs_per_s']:.1f} | "
            f"{r['images_per_s']:.1f} | {r['peak_mib']:.0f} |"
        )
    print(f"\nRankDPO / DPO comparisons/s: {rows[1]['pairs_per_s'] / rows[0]['pairs_per_s']:.2f}x")


if __name__ == "__main__":
    main()
