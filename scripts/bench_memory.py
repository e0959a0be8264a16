"""Peak resident memory of one training process: flat as the ranked data grows, and an SDXL-size LoRA step.

    .venv/bin/python scripts/bench_memory.py data [--scales 1 4 16] [--groups 32] [--steps 8] [--in-memory]
    .venv/bin/python scripts/bench_memory.py sdxl [--latent 32]

data: synthetic ranked groups at SDXL's sizes (K = 4 images of 4 x 128 x 128 latents, the 1024^2 latent;
77 x 2048 text states, 1280 pooled, 6 time ids per prompt), `scale` x `groups` prompts, written as a group
build writes them (models.group_store). A fresh process per scale then trains `steps` RankDPO LoRA steps
through the trainer's own loading and loop (models.trainer: load_for_training, _prepare_loop, _run_steps) on
a small SDXL-class UNet (the data, not the model, is what grows) and reports its peak RSS: over the whole
process (ru_maxrss), through loading the model, and from then on (training alone; VmHWM reset after loading).
`--in-memory` holds the groups as tensors instead, as the trainer did before the groups went to disk.

sdxl: a random-init UNet with SDXL 1.0's public config (2.57 B parameters, scripts/gpu_check.SDXL_UNET) in a
pipeline folder, loaded by load_for_training under bf16 (frozen weights bf16, LoRA float32), one RankDPO step
of 4 images at `latent` x `latent` on the CPU: peak RSS, then a checkpoint (models.checkpoints) and the tuned
LoRA file (models.trainer.save_tuned) with their sizes.

Prints one JSON object per process; docs/benchmarks.md records the numbers. Not a test: they depend on the
machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

K, TEXT, POOLED = 4, (77, 2048), 1280  # images per prompt; SDXL's text conditioning


def small_unet_config() -> dict:
    """An SDXL-class UNet (text_time conditioning, SDXL's text widths) a few million parameters big."""
    from scripts.gpu_check import SDXL_UNET

    return {
        **SDXL_UNET,
        # attention only at the lowest level (32 x 32 tokens at 128 x 128 latents): a light step, so that what
        # grows with the data would show
        "down_block_types": ("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        "block_out_channels": (32, 64, 64),
        "transformer_layers_per_block": (1, 1, 1),
        "attention_head_dim": (2, 4, 4),
        "layers_per_block": 1,
        "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": POOLED + 6 * 8,
    }


def write_pipeline(folder: Path, unet_config: dict, dtype: torch.dtype) -> Path:
    """A StableDiffusionXLPipeline folder (the tiny test encoders and VAE) whose UNet is `unet_config`,
    random-init directly in `dtype` (an SDXL-size UNet never exists in float32 here)."""
    from diffusers import UNet2DConditionModel

    from tests.fixtures.tiny_pipelines import build_tiny_sdxl

    build_tiny_sdxl(folder)
    torch.manual_seed(0)
    torch.set_default_dtype(dtype)
    unet = UNet2DConditionModel(**unet_config)
    torch.set_default_dtype(torch.float32)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    return folder


def write_groups(folder: Path, prompts: int, latent: int) -> Path:
    """`prompts` synthetic ranked groups of K images (phi K-1..0 / (K-1)) in models.group_store's layout."""
    from models.group_store import npy_rows, save_small
    from models.train_data import RankedGroups

    folder.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    with npy_rows(folder / "latents.npy", prompts * K) as out:
        for _ in range(prompts):
            out.write(torch.randn(K, 4, latent, latent, generator=gen))
    shapes = {"encoder_hidden_states": TEXT, "text_embeds": (POOLED,), "time_ids": (6,)}
    for name, shape in shapes.items():
        with npy_rows(folder / f"cond.{name}.npy", prompts) as out:
            for _ in range(prompts):
                out.write(torch.randn(1, *shape, generator=gen))
    index = torch.arange(prompts * K).view(prompts, K)
    phi = torch.linspace(1.0, 0.0, K).repeat(prompts, 1)
    tau = torch.arange(1, K + 1).repeat(prompts, 1)
    save_small(RankedGroups(index, phi, tau, index >= 0, {}, torch.empty(0)), folder)
    return folder


def train_child(args: argparse.Namespace) -> dict:
    """Train on the groups in args.groups with the pipeline in args.pipeline (one process) and report."""
    from accelerate.utils import set_seed

    from models.checkpoints import save_checkpoint
    from models.group_store import load_fields, take
    from models.objectives import OBJECTIVES
    from models.preflight import make_accelerator
    from models.train_data import RankedGroups
    from models.trainer import _prepare_loop, _run_steps, load_for_training, save_tuned, training_parametrization
    from synrank.config import GeneratorSpec, TrainConfig

    torch.set_num_threads(args.threads)
    cfg = TrainConfig(
        steps=args.steps,
        prompts_per_step=args.prompts_per_step,
        lora_rank=8,
        mixed_precision=args.precision,
        log_every=1,
        seed=0,
    )
    acc = make_accelerator(cfg.mixed_precision, 1)
    set_seed(cfg.seed)  # as train(): the same LoRA init in every run
    spec = GeneratorSpec(name="bench", steps=20, path=args.pipeline, height=8 * args.latent, width=8 * args.latent)
    pipe, model, ref = load_for_training(spec, cfg, acc.device, acc.mixed_precision)
    loaded_gib = peak_rss_gib(reset=True)  # from here on, the peak of training alone
    fields = load_fields(Path(args.groups_dir))
    if args.in_memory:  # the trainer before the groups went to disk: every latent and embedding in RAM
        everything = lambda rows: take(rows, torch.arange(len(rows)))  # noqa: E731
        fields = {**fields, "latents": everything(fields["latents"])}
        fields["cond"] = {k: everything(v) for k, v in fields["cond"].items()}
    groups = RankedGroups(**fields)
    loop = _prepare_loop(
        acc, model, ref, training_parametrization(pipe.scheduler, cfg), OBJECTIVES.get("rankdpo"), groups, cfg
    )
    work = Path(args.work)
    last, _ = _run_steps(loop, work / "checkpoints", lambda m, s: None)
    report = {"prompts": len(groups), "steps": args.steps, "loss": float(last["loss"])}
    report["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # the whole process
    report["load_peak_rss_gib"], report["train_peak_rss_gib"] = loaded_gib, peak_rss_gib(reset=True)
    if args.sizes:
        ckpt = save_checkpoint(acc, work / "checkpoints", args.steps, torch.Generator().manual_seed(0))
        save_tuned(loop.raw, pipe, spec, cfg, work / "model")
        report["checkpoint_mib"] = _mib(ckpt)
        report["lora_file_mib"] = _mib(work / "model" / "pytorch_lora_weights.safetensors")
        report["unet_bf16_mib"] = _mib(Path(args.pipeline) / "unet")
        report["save_peak_rss_gib"] = peak_rss_gib()
    return report


def peak_rss_gib(reset: bool = False) -> float:
    """This process's peak resident memory (VmHWM) in GiB; `reset` then starts a new peak from the current
    RSS (Linux: 5 to /proc/self/clear_refs), so that a later call measures what came after."""
    status = Path("/proc/self/status").read_text()
    peak = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 2**20
    if reset:
        Path("/proc/self/clear_refs").write_text("5")
    return peak


def _mib(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def child(pipeline: Path, groups: Path, work: Path, args: argparse.Namespace, *extra: str) -> dict:
    """Run train_child in a fresh process (its own peak RSS) and return its report."""
    command = [sys.executable, __file__, "child", "--pipeline", str(pipeline), "--groups-dir", str(groups)]
    command += ["--work", str(work), "--steps", str(args.steps), "--latent", str(args.latent)]
    command += ["--prompts-per-step", str(args.prompts_per_step), *extra]
    out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def data_scaling(args: argparse.Namespace, tmp: Path) -> None:
    """data: one child per scale on the same pipeline, each on its own synthetic groups."""
    pipeline = write_pipeline(tmp / "pipeline", {**small_unet_config(), "sample_size": args.latent}, torch.float32)
    for scale in args.scales:
        groups = write_groups(tmp / f"groups-{scale}", scale * args.groups, args.latent)
        extra = ["--precision", "no"] + (["--in-memory"] if args.in_memory else [])
        report = child(pipeline, groups, tmp / f"work-{scale}", args, *extra)
        data_mib = sum(_mib(p) for p in groups.glob("*.npy"))
        print(json.dumps({"scale": scale, "data_mib": round(data_mib, 1), "in_memory": args.in_memory, **report}))


def sdxl_step(args: argparse.Namespace, tmp: Path) -> None:
    """sdxl: one bf16 LoRA step of an SDXL-size UNet, then the checkpoint's and the LoRA's sizes."""
    from scripts.gpu_check import SDXL_UNET

    pipeline = write_pipeline(tmp / "pipeline", {**SDXL_UNET, "sample_size": args.latent}, torch.bfloat16)
    groups = write_groups(tmp / "groups", 4, args.latent)
    report = child(pipeline, groups, tmp / "work", args, "--precision", "bf16", "--sizes")
    print(json.dumps({"model": "SDXL-size UNet, random init", "latent": args.latent, **report}))


def main(argv: list[str] | None = None) -> int:
    """Parse the command (module docstring) and run it."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["data", "sdxl", "child"])
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--groups", type=int, default=32, help="prompts at scale 1")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--prompts-per-step", type=int, default=2, help="prompt groups (of K = 4 images) per step")
    ap.add_argument("--latent", type=int, default=None, help="latent side (data: 128, sdxl: 32)")
    ap.add_argument("--in-memory", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pipeline", help=argparse.SUPPRESS)  # the child's inputs, set by child()
    ap.add_argument("--groups-dir", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--precision", default="no", help=argparse.SUPPRESS)
    ap.add_argument("--sizes", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.latent = args.latent or (32 if args.what == "sdxl" else 128)
    if args.what == "child":
        print(json.dumps(train_child(args)))
        return 0
    if args.what == "sdxl":
        args.steps = 1
    with tempfile.TemporaryDirectory(dir=ROOT / "outputs") as tmp:
        (data_scaling if args.what == "data" else sdxl_step)(args, Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
