"""scripts/gpu_check.sh (issue 25): the real-size GPU check runs at a tiny size on the CPU through the same code,
and its real configs are SDXL's UNet (2.57 B parameters) and SD3-Medium's transformer (2.03 B)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

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
