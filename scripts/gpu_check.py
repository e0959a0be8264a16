"""Real-size training and generation numbers on one GPU, with random-init models (no hub, no weights):

    bash scripts/gpu_check.sh                 # on the GPU machine: SDXL at 1024^2, SD3-Medium, generation
    bash scripts/gpu_check.sh --tiny --device cpu   # the same code at a tiny size (tests/test_gpu_check.py)

1. An SDXL UNet (its public config: 2.57 B parameters) takes RankDPO LoRA steps through synrank's own step
   code (models.preference_batch.denoise_errors, models.objectives) on K images of one prompt at 128 x 128
   latents (1024^2 pixels) in bf16: step time, images/s, peak GPU memory and model FLOPs utilization (the
   FLOPs of one policy forward counted by torch's FlopCounterMode, x 3 for forward + backward, + 1 forward
   for the reference with the adapters off, over the elapsed time and the GPU's peak bf16 FLOPs).
2. The same for an SD3-Medium-size transformer (flow matching).
3. SDXL-size generation: images/s of the UNet's denoising loop (classifier-free guidance, 30 Euler steps;
   text encoders and VAE left out) at batch 1, 4 and 16.

`--flops-only` (no GPU, seconds on a CPU) instead counts the training compute of the paper configs
(configs/paper/syn-pic-sdxl.yaml, syn-pic-sd3m.yaml): the real-size models built on the meta device (shapes
only, no memory), one training pass of a group of K images at the configs' size counted by FlopCounterMode
(forward, backward and gradient checkpointing's recompute as torch runs them), the frozen reference's
forward, the run's total and its floor on 8 A100s / H100s (docs/training-time.md).

Prints one JSON object; docs/benchmarks.md records it. Needs torch, diffusers and peft (the wheels are carried
to a machine without a registry).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

# The public config values of SDXL 1.0's UNet and SD3-Medium's transformer (their model cards' config.json).
SDXL_UNET = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(320, 640, 1280),
    layers_per_block=2,
    transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
    use_linear_projection=True,
)
SD3_MEDIUM = dict(
    sample_size=128,
    patch_size=2,
    in_channels=16,
    num_layers=24,
    attention_head_dim=64,
    num_attention_heads=24,
    joint_attention_dim=4096,
    caption_projection_dim=1536,
    pooled_projection_dim=2048,
    out_channels=16,
    pos_embed_max_size=192,
)
# A few-million-parameter version of each, same classes and code paths (the CPU test).
TINY_UNET = {
    **SDXL_UNET,
    "block_out_channels": (32, 64, 64),
    "transformer_layers_per_block": (1, 1, 1),
    "attention_head_dim": (2, 4, 4),
    "cross_attention_dim": 32,
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 32 + 6 * 8,
    "layers_per_block": 1,
}
TINY_SD3 = {
    **SD3_MEDIUM,
    "num_layers": 2,
    "attention_head_dim": 8,
    "num_attention_heads": 2,
    "joint_attention_dim": 32,
    "caption_projection_dim": 16,
    "pooled_projection_dim": 16,
    "pos_embed_max_size": 16,
}


def timed(fn: Callable[[], object], device: str, repeats: int) -> float:
    """Median wall seconds of fn() over `repeats` runs after one warm-up, synchronizing a GPU."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def forward_flops(model, args: dict) -> int:
    """FLOPs of one forward of `model` on `args`, counted by torch (matmuls and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    device = next(v for v in args.values() if torch.is_tensor(v)).device.type
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16), FlopCounterMode(display=False) as counter:
        model(**args)
    return counter.get_total_flops()


def unet_inputs(cfg: dict, k: int, size: int, device: str, dtype) -> dict:
    """One prompt's conditioning repeated for K images of `size` x `size` latents (SDXL: pooled text, time ids)."""
    n = cfg["projection_class_embeddings_input_dim"] - 6 * cfg["addition_time_embed_dim"]
    return {
        "sample": torch.randn(k, cfg["in_channels"], size, size, device=device, dtype=dtype),
        "timestep": torch.full((k,), 500, device=device),
        "encoder_hidden_states": torch.randn(k, 77, cfg["cross_attention_dim"], device=device, dtype=dtype),
        "added_cond_kwargs": {
            "text_embeds": torch.randn(k, n, device=device, dtype=dtype),
            "time_ids": torch.tensor([[size * 8, size * 8, 0, 0, size * 8, size * 8]] * k, device=device, dtype=dtype),
        },
    }


def sd3_inputs(cfg: dict, k: int, size: int, device: str, dtype, tokens: int = 154) -> dict:
    """K images' inputs for an SD3 transformer at `size` x `size` latents and `tokens` text tokens."""
    return {
        "hidden_states": torch.randn(k, cfg["in_channels"], size, size, device=device, dtype=dtype),
        "timestep": torch.full((k,), 500.0, device=device),
        "encoder_hidden_states": torch.randn(k, tokens, cfg["joint_attention_dim"], device=device, dtype=dtype),
        "pooled_projections": torch.randn(k, cfg["pooled_projection_dim"], device=device, dtype=dtype),
    }


def rankdpo_step(model, inputs: dict, opt, beta: float = 1000.0) -> Callable[[], None]:
    """One RankDPO LoRA step on the K images of `inputs` (phi = K-1 .. 0 / (K-1)), reference = adapters off,
    through models.objectives' loss."""
    from models.objectives import OBJECTIVES, objective_loss
    from models.preference_batch import adapters_disabled

    key = "sample" if "sample" in inputs else "hidden_states"
    k = inputs[key].shape[0]
    target = torch.randn_like(inputs[key])
    phi = torch.linspace(1.0, 0.0, k).view(1, k)
    tau = torch.arange(1, k + 1).view(1, k)
    mask = torch.ones(1, k, dtype=torch.bool)

    def errors():
        return ((model(**inputs).sample.float() - target.float()) ** 2).mean(dim=(1, 2, 3)).view(1, k)

    def step() -> None:
        with torch.autocast(inputs[key].device.type, dtype=torch.bfloat16):
            err = errors()
            with torch.no_grad(), adapters_disabled(model):
                ref = errors()
            loss, _ = objective_loss(
                OBJECTIVES.get("rankdpo"), err, ref, phi.to(err.device), tau.to(err.device), mask.to(err.device), beta
            )
        loss.backward()
        opt.step()
        opt.zero_grad()

    return step


def train_numbers(model, inputs: dict, device: str, repeats: int, peak_tflops: float) -> dict:
    """Step time, images/s, peak GPU memory and MFU of rankdpo_step on `model`."""
    from models.lora import add_lora

    model = add_lora(model, rank=8, frozen_dtype=torch.bfloat16).to(device)  # as models.trainer under bf16
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    seconds = timed(rankdpo_step(model, inputs, opt), device, repeats)
    k = next(iter(v for v in inputs.values() if torch.is_tensor(v))).shape[0]
    flops = 4 * forward_flops(model, inputs)  # policy forward + backward (3x) and the reference forward
    out = {
        "parameters_b": sum(p.numel() for p in model.parameters()) / 1e9,
        "images": k,
        "step_s": seconds,
        "images_per_s": k / seconds,
        "tflops_per_step": flops / 1e12,
        "mfu": flops / seconds / (peak_tflops * 1e12),
    }
    if device.startswith("cuda"):
        out["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def generation_numbers(model, cfg: dict, size: int, device: str, batches: tuple[int, ...], steps: int) -> dict:
    """Images/s of `steps` guided denoising steps (two UNet passes each) at each batch size."""
    out = {}
    for b in batches:
        inputs = unet_inputs(cfg, 2 * b, size, device, torch.bfloat16)

        @torch.no_grad()
        def loop(inputs: dict = inputs) -> None:
            x = inputs["sample"]
            for _ in range(steps):
                x = model(**{**inputs, "sample": x}).sample

        out[f"batch_{b}_images_per_s"] = b / timed(loop, device, 1)
    return out


# --flops-only: the paper configs' training compute, counted on the real-size models built on the meta device.
ROOT = Path(__file__).resolve().parent.parent
PAPER_CONFIGS = ("configs/paper/syn-pic-sdxl.yaml", "configs/paper/syn-pic-sd3m.yaml")
# Dense bf16 peaks (NVIDIA's A100 and H100 SXM datasheets, without sparsity): the denominators of a floor.
PEAK_TFLOPS = {"a100": 312.0, "h100": 989.0}
# The paper's training compute as issue 27 reads it: about 6 A100-days for SDXL (not re-checked against the
# paper); no figure for SD3-Medium.
PAPER_A100_HOURS = {"sdxl": 6 * 24.0}
# SD3's conditioning as its pipeline encodes it (models/train_data.encode_prompts): CLIP's 77 tokens then
# T5's 256 (the pipeline's default max_sequence_length), 333 in all; SDXL's is CLIP's 77 (unet_inputs).
SD3_TEXT_TOKENS = 77 + 256


def paper_run(path: Path) -> dict:
    """The numbers of a paper config that set its training compute, read through the project's own config
    classes (their defaults and K, train.base and the training size exactly as the train stage takes them)."""
    import yaml

    from models.train_data import training_size
    from synrank.config import base_generator
    from synrank.config_sections import GenerateConfig
    from synrank.train_config import TrainConfig

    raw = yaml.safe_load(path.read_text())
    gen, train = GenerateConfig(**raw["generate"]), TrainConfig(**raw["train"])
    spec = base_generator(train, gen)
    height, width = training_size(spec.height, spec.width, train.resolution)
    return {
        "config": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
        "base": spec.preset or spec.name,
        "steps": train.steps,
        # prompts_per_step is the global micro-batch, split among the world_size processes (train_config.py),
        # so an optimizer step takes prompts_per_step x grad_accum groups in all, whatever the process count.
        "groups_per_step": train.prompts_per_step * train.grad_accum,
        "images_per_group": gen.group_size(),
        "gpus": train.world_size,
        "pixels": [height, width],
        "latent": [height // 8, width // 8],  # both VAEs (SDXL's, SD3's) downsample by 8
        "gradient_checkpointing": train.gradient_checkpointing,
        "lora_rank": train.lora_rank,
    }


def policy_flops(model, inputs: dict, checkpointing: bool) -> tuple[int, int]:
    """(forward, forward + backward) FLOPs of one training pass of `model` on `inputs`, counted by torch's
    FlopCounterMode as the trainer runs it: train mode, every weight trained (a full fine-tune), and with
    `checkpointing` diffusers' gradient checkpointing on, so that the backward's recomputed forward is counted
    rather than assumed (the blocks it covers differ by model). On the meta device no number is computed."""
    from torch.utils.flop_counter import FlopCounterMode

    model.train()
    if checkpointing:
        model.enable_gradient_checkpointing()
    with FlopCounterMode(display=False) as counter:
        out = model(**inputs).sample
        forward = counter.get_total_flops()
        out.float().pow(2).mean().backward()  # the loss itself is elementwise: no matmul, no FLOPs counted
    model.zero_grad(set_to_none=True)
    return forward, counter.get_total_flops()


def run_estimate(forward: float, policy: float, run: dict, paper_a100_hours: float | None) -> dict:
    """From one image's FLOPs to the whole run: a training image costs the policy's pass (`policy`: forward,
    backward, recompute) plus the frozen reference copy's forward (no graph, no backward); the run trains
    steps x groups_per_step x images_per_group images, over run["gpus"] GPUs at their dense bf16 peak (a
    floor: 100% utilization, perfect scaling), and the paper's A100-hours imply a model FLOP utilization."""
    per_image = policy + forward
    images = run["steps"] * run["groups_per_step"] * run["images_per_group"]
    total = per_image * images
    out: dict = {
        "forward_tflops_per_image": forward / 1e12,
        "multipliers": {
            "policy_fwd_bwd_recompute": policy / forward,
            "reference_fwd": 1.0,
            "total": per_image / forward,
        },
        "train_tflops_per_image": per_image / 1e12,
        "train_images": images,
        "total_pflops": total / 1e15,
    }
    for gpu, peak in PEAK_TFLOPS.items():
        floor = total / (run["gpus"] * peak * 1e12) / 3600
        out[f"floor_hours_{run['gpus']}x{gpu}"] = floor
        # A realistic utilization for a large-batch bf16 fine-tune is 30-50% of the peak: the expected range.
        out[f"hours_{run['gpus']}x{gpu}_at_50_30_mfu"] = [floor / 0.5, floor / 0.3]
    if paper_a100_hours:
        out["paper_a100_hours"] = paper_a100_hours
        out[f"paper_hours_on_{run['gpus']}x_a100"] = paper_a100_hours / run["gpus"]  # ideal scaling
        out["paper_implied_mfu"] = total / (paper_a100_hours * 3600 * PEAK_TFLOPS["a100"] * 1e12)
    return out


def flops_only() -> dict:
    """--flops-only: each paper config's run_estimate from its real-size model counted on the meta device."""
    from diffusers import SD3Transformer2DModel, UNet2DConditionModel

    models = {  # train.base's preset -> (the model class, its public config, its inputs)
        "sdxl": (UNet2DConditionModel, SDXL_UNET, unet_inputs),
        "sd3-medium": (SD3Transformer2DModel, SD3_MEDIUM, partial(sd3_inputs, tokens=SD3_TEXT_TOKENS)),
    }
    report: dict = {"device": "meta (shapes only: FLOPs counted, no wall time)", "peak_tflops": PEAK_TFLOPS}
    for path in PAPER_CONFIGS:
        run = paper_run(ROOT / path)
        if run["lora_rank"]:  # a LoRA backward trains no base weight: policy_flops would overcount it
            raise SystemExit(f"{path}: --flops-only counts a full fine-tune (lora_rank 0)")
        cls, cfg, inputs = models[run["base"]]
        with torch.device("meta"):  # real size, no memory: parameters and activations are shapes only
            model = cls(**cfg)
        k, (h, w) = run["images_per_group"], run["latent"]
        assert h == w, "the inputs builders take square latents"
        fwd, policy = policy_flops(model, inputs(cfg, k, h, "meta", torch.float32), run["gradient_checkpointing"])
        report[run["base"]] = {"run": run, **run_estimate(fwd / k, policy / k, run, PAPER_A100_HOURS.get(run["base"]))}
    return report


def main(argv: list[str] | None = None) -> int:
    """Run the three checks (module docstring) and print their numbers as JSON."""
    from diffusers import SD3Transformer2DModel, UNet2DConditionModel

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny models and latents (the CPU test)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--images", type=int, default=4, help="K, images of one prompt per RankDPO step")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak (H100 SXM: 989)")
    ap.add_argument("--flops-only", action="store_true", help="count the paper configs' training FLOPs, no GPU")
    args = ap.parse_args(argv)
    if args.flops_only:
        print(json.dumps(flops_only(), indent=1))
        return 0
    unet_cfg, sd3_cfg = (TINY_UNET, TINY_SD3) if args.tiny else (SDXL_UNET, SD3_MEDIUM)
    size, sd3_size, dev = (8 if args.tiny else 128), (8 if args.tiny else 128), args.device
    torch.manual_seed(0)
    report: dict = {"device": torch.cuda.get_device_name() if dev.startswith("cuda") else dev, "tiny": args.tiny}
    unet = UNet2DConditionModel(**unet_cfg)
    report["sdxl_lora_step"] = train_numbers(
        unet, unet_inputs(unet_cfg, args.images, size, dev, torch.float32), dev, args.repeats, args.peak_tflops
    )
    gen = UNet2DConditionModel(**unet_cfg).to(dev, torch.bfloat16)
    report["sdxl_generation"] = generation_numbers(gen, unet_cfg, size, dev, (1, 4, 16), 2 if args.tiny else 30)
    del unet, gen
    sd3 = SD3Transformer2DModel(**sd3_cfg)
    report["sd3_lora_step"] = train_numbers(
        sd3, sd3_inputs(sd3_cfg, args.images, sd3_size, dev, torch.float32), dev, args.repeats, args.peak_tflops
    )
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
