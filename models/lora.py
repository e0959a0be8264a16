"""LoRA adapters on a frozen denoiser, as diffusers' LoRA training scripts set them up: the one setup the
trainer (models.trainer.load_for_training) and the real-size checks (scripts/gpu_check.py,
scripts/bench_memory.py) share."""

from __future__ import annotations

import torch

LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]  # the attention projections
FROZEN_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # accelerate's mixed precision -> frozen dtype


def add_lora(model: torch.nn.Module, rank: int, frozen_dtype: torch.dtype | None = None) -> torch.nn.Module:
    """`model` frozen (in `frozen_dtype` when given: half the memory of float32) with rank-r LoRA adapters
    (alpha = r, gaussian init) on LORA_TARGETS, whose weights stay float32 (the optimizer's master copy)."""
    from peft import LoraConfig

    model.requires_grad_(False)
    if frozen_dtype is not None:
        model.to(frozen_dtype)
    config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=LORA_TARGETS)
    model.add_adapter(config)
    for p in model.parameters():
        if p.requires_grad:  # the adapters
            p.data = p.data.float()
    return model
