"""scripts/gpu_check.sh (issue 25): the real-size GPU check runs at a tiny size on the CPU through the same code,
and its real configs are SDXL's UNet (2.57 B parameters) and SD3-Medium's transformer (2.03 B); issue 27: its
--flops-only count of the paper configs' training compute (docs/training-time.md), checked against hand counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytestmark = pytest.mark.slow  # needs a Prefect server, a subprocess or a training run

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_runs_tiny_on_the_cpu() -> None:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    cmd = ["bash", "scripts/gpu_check.sh", "--tiny", "--device", "cpu", "--repeats", "1"]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["device"] == "cpu" and report["tiny"] is True
    for key in ("sdxl_lora_step", "sd3_lora_step"):
        step = report[key]
        assert step["images"] == 4 and step["step_s"] > 0 and step["tflops_per_step"] > 0 and 0 < step["mfu"] < 1
        assert abs(step["images_per_s"] - 4 / step["step_s"]) < 1e-9
    assert sorted(report["sdxl_generation"]) == sorted(f"batch_{b}_images_per_s" for b in (1, 4, 16))


def test_the_real_configs_are_sdxl_and_sd3_medium_sized() -> None:
    from diffusers import SD3Transformer2DModel, UNet2DConditionModel

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from gpu_check import SD3_MEDIUM, SDXL_UNET
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    with torch.device("meta"):  # shapes only: no memory, no time
        unet, sd3 = UNet2DConditionModel(**SDXL_UNET), SD3Transformer2DModel(**SD3_MEDIUM)
    assert sum(p.numel() for p in unet.parameters()) == 2_567_463_684
    assert sum(p.numel() for p in sd3.parameters()) == 2_028_328_000


def _gpu_check():
    """scripts/gpu_check.py as a module (scripts/ is not a package)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return gpu_check


class _TwoLinears(torch.nn.Module):
    """A denoiser-shaped stand-in (its output's .sample) whose FLOPs are known by hand."""

    def __init__(self, n_in: int, hidden: int, n_out: int) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Linear(n_in, hidden), torch.nn.Linear(hidden, n_out)

    def forward(self, x: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(sample=self.b(self.a(x)))


def test_policy_flops_counts_meta_tensors_by_hand() -> None:
    """On the meta device (no numbers computed) torch counts a linear as 2 x batch x in x out per pass: the
    forward; the backward's weight gradients (both layers) and input gradient (the second layer only: the
    model's input needs none)."""
    b, n_in, hidden, n_out = 3, 5, 7, 11
    with torch.device("meta"):
        model, x = _TwoLinears(n_in, hidden, n_out), torch.randn(b, n_in)
    forward, policy = _gpu_check().policy_flops(model, {"x": x}, checkpointing=False)
    assert forward == 2 * b * (n_in * hidden + hidden * n_out) == 672
    assert policy == 2 * forward + 2 * b * hidden * n_out == 1806


def test_sd3_medium_counted_on_meta_matches_its_transformer_by_hand() -> None:
    """The real-size SD3-Medium forward at 128 x 128 latents (64 x 64 = 4,096 patch tokens) and 333 text
    tokens: 24 joint blocks of width 1,536, each with q, k, v, out (4 d^2) and a 4x MLP (8 d^2) per token and
    attention over all 4,429 tokens (2 x 2 T^2 d); the embedders and adaLN add well under 1%. With gradient
    checkpointing the training pass is ~4 forwards: 3 (forward, weight and input gradients) + 1 recompute."""
    from diffusers import SD3Transformer2DModel

    gc = _gpu_check()
    with torch.device("meta"):
        model = SD3Transformer2DModel(**gc.SD3_MEDIUM)
    inputs = gc.sd3_inputs(gc.SD3_MEDIUM, 1, 128, "meta", torch.float32, tokens=gc.SD3_TEXT_TOKENS)
    forward, policy = gc.policy_flops(model, inputs, checkpointing=True)
    t, d = 64 * 64 + 333, 1536
    by_hand = 24 * (2 * t * 12 * d * d + 4 * t * t * d)  # 8.91e12
    assert abs(forward / by_hand - 1) < 0.01
    assert 3.95 < policy / forward <= 4.0


def test_the_paper_configs_run_2000_steps_of_256_groups_of_4_images_at_1024() -> None:
    """prompts_per_step (8) is the global micro-batch split among the 8 processes: 8 x grad_accum 32 = 256
    groups per optimizer step, K = 4 generators x 1 image."""
    gc = _gpu_check()
    for path, base in zip(gc.PAPER_CONFIGS, ("sdxl", "sd3-medium"), strict=True):
        run = gc.paper_run(ROOT / path)
        assert run == {
            "config": path,
            "base": base,
            "steps": 2000,
            "groups_per_step": 256,
            "images_per_group": 4,
            "gpus": 8,
            "pixels": [1024, 1024],
            "latent": [128, 128],
            "gradient_checkpointing": True,
            "lora_rank": 0,
        }


def test_run_estimate_arithmetic_by_hand() -> None:
    """1 TFLOP forward + 4 TFLOPs policy pass = 5 per image; 10 steps x 2 groups x 4 images = 80 images, 400
    TFLOPs; on 8 A100s (312 TFLOPs each) 400 / 2,496 s; one A100-hour (1,123.2 PFLOPs) implies 400 / 1,123,200."""
    run = {"steps": 10, "groups_per_step": 2, "images_per_group": 4, "gpus": 8}
    est = _gpu_check().run_estimate(1e12, 4e12, run, paper_a100_hours=1.0)
    assert est["multipliers"] == {"policy_fwd_bwd_recompute": 4.0, "reference_fwd": 1.0, "total": 5.0}
    assert est["train_tflops_per_image"] == 5.0 and est["train_images"] == 80
    assert abs(est["total_pflops"] - 0.4) < 1e-12
    assert abs(est["floor_hours_8xa100"] - 400 / 2496 / 3600) < 1e-15
    assert abs(est["floor_hours_8xh100"] - 400 / (8 * 989) / 3600) < 1e-15
    low, high = est["hours_8xa100_at_50_30_mfu"]
    assert abs(low - 2 * est["floor_hours_8xa100"]) < 1e-15 and abs(high - est["floor_hours_8xa100"] / 0.3) < 1e-15
    assert est["paper_hours_on_8x_a100"] == 1 / 8
    assert abs(est["paper_implied_mfu"] - 400 / 1_123_200) < 1e-15


def test_flops_only_reports_both_paper_configs(monkeypatch) -> None:
    """--flops-only end to end, with the tiny models in the real ones' place (seconds): per-image FLOPs are
    the group's over K, and the totals follow from them."""
    gc = _gpu_check()
    monkeypatch.setattr(gc, "SDXL_UNET", gc.TINY_UNET)
    monkeypatch.setattr(gc, "SD3_MEDIUM", {**gc.TINY_SD3, "pos_embed_max_size": 64})  # 128 latents: 64 patches
    report = gc.flops_only()
    for base in ("sdxl", "sd3-medium"):
        est = report[base]
        assert est["train_images"] == 2000 * 256 * 4
        per_image = est["forward_tflops_per_image"] * est["multipliers"]["total"]
        assert abs(est["train_tflops_per_image"] / per_image - 1) < 1e-9
        assert abs(est["total_pflops"] / (per_image * 2_048_000 / 1000) - 1) < 1e-9
    assert report["sdxl"]["paper_a100_hours"] == 144.0 and "paper_a100_hours" not in report["sd3-medium"]
