"""Preference fine-tuning of a diffusers pipeline with accelerate: one readable loop.

Each step takes `prompts_per_step` ranked groups; the K images of a group share one timestep and one
noise draw and go through the denoiser in one batched forward. The reference is the same denoiser
with its LoRA adapters disabled (no second copy), or a frozen copy for a full fine-tune. Every
`checkpoint_every` steps the accelerate state (weights, optimizer) plus the sampling RNG is saved
atomically, and a restarted run resumes from the newest checkpoint on the same curve.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from models.objectives import OBJECTIVES, Objective, derangement, implicit_scores, objective_loss, pair_stats
from models.parametrization import Parametrization, predict
from models.train_data import RankedGroups, build_groups
from synrank.config import GeneratorSpec, TrainConfig
from synrank.models_io import resolve_model_path

LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]


def denoise_errors(model, param: Parametrization, latents: torch.Tensor, cond: dict[str, torch.Tensor],
                   t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Per-image squared error. latents (B, K, C, h, w); t (B,); noise (B, C, h, w) shared by the K
    images of a group; cond per group. Returns (B, K)."""
    B, K = latents.shape[:2]
    x0 = latents.flatten(0, 1)
    eps = noise[:, None].expand_as(latents).flatten(0, 1)
    tt = t.repeat_interleave(K)
    x_t, target = param.noisy_and_target(x0, eps, tt)
    cond_k = {k: v.repeat_interleave(K, dim=0) for k, v in cond.items()}
    pred = predict(model, x_t, param.model_timestep(tt), cond_k)
    return F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3)).view(B, K)


def make_batch(groups: RankedGroups, obj: Objective, rows: torch.Tensor, rng: torch.Generator) -> tuple:
    """(latents (B, K, ...), cond, phi, tau, mask). SUDO pairs each group's image (a random member)
    with a deranged batch mate's image under the first one's caption, labelled (1, 0)."""
    g = groups.select(rows)
    if not obj.self_pairs:
        return groups.latents_of(g.index), g.cond, g.phi, g.tau, g.mask
    counts = g.mask.sum(dim=1)
    pick = (torch.rand(len(rows), generator=rng) * counts).long()
    own = g.index[torch.arange(len(rows)), pick]
    other = own[derangement(len(rows), rng)]
    pair = torch.stack([own, other], dim=1)
    ones = torch.ones(len(rows), 2)
    return (groups.latents_of(pair), g.cond, ones * torch.tensor([1.0, 0.0]), (ones * torch.tensor([1, 2])).long(),
            (pair[:, 0] != pair[:, 1])[:, None].expand(-1, 2).clone())


def load_for_training(spec: GeneratorSpec, cfg: TrainConfig, device) -> tuple:
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(resolve_model_path(spec.path, what=f"generator '{spec.name}'"))
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    model = pipe.transformer if getattr(pipe, "transformer", None) is not None else pipe.unet
    for name in ("vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
        if getattr(pipe, name, None) is not None:
            getattr(pipe, name).requires_grad_(False)
    model.requires_grad_(False)
    if cfg.lora_rank > 0:
        from peft import LoraConfig

        model.add_adapter(LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_rank, init_lora_weights="gaussian",
                                     target_modules=LORA_TARGETS))
        ref = None
    else:
        ref = copy.deepcopy(model).eval()
        model.requires_grad_(True)
    if cfg.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    return pipe, model, ref


def split_holdout(groups: RankedGroups, fraction: float, seed: int) -> tuple[RankedGroups, RankedGroups | None]:
    n_hold = int(round(len(groups) * fraction))
    if n_hold == 0 or n_hold >= len(groups):
        return groups, None
    perm = torch.randperm(len(groups), generator=torch.Generator().manual_seed(seed + 1))
    return groups.select(perm[n_hold:]), groups.select(perm[:n_hold])


@torch.no_grad()
def heldout_accuracy(model, ref, param: Parametrization, groups: RankedGroups, obj: Objective, beta: float,
                     device, draws: int = 4, batch: int = 16) -> float:
    """Implicit accuracy on held-out groups, averaged over a few fixed (t, noise) draws."""
    from models.objectives import dpo_pairs, rankdpo_pairs

    rng = torch.Generator().manual_seed(12345)
    correct = total = 0.0
    for _ in range(draws):
        for start in range(0, len(groups), batch):
            rows = torch.arange(start, min(start + batch, len(groups)))
            lat, cond, phi, tau, mask = make_batch(groups, obj, rows, rng)
            t = param.sample_t(len(rows), rng)
            noise = torch.randn(lat.shape[:1] + lat.shape[2:], generator=rng)
            lat, cond = lat.to(device), {k: v.to(device) for k, v in cond.items()}
            s = implicit_scores(*_errors(model, ref, param, lat, cond, t.to(device), noise.to(device)))
            # Every objective is judged on the same label pairs: all strictly ordered pairs.
            w = (rankdpo_pairs if not obj.self_pairs else dpo_pairs)(phi, tau, mask) > 0
            stats = pair_stats(s.cpu(), w.float(), beta)
            correct += stats["implicit_acc"] * stats["pairs"] if stats["pairs"] else 0.0
            total += stats["pairs"]
    return correct / total if total else float("nan")


def _errors(model, ref, param, lat, cond, t, noise, raw=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Tuned and reference errors on the same inputs; `raw` is the unwrapped model (for its adapters)
    when `model` is accelerate's wrapper."""
    raw = raw if raw is not None else model
    model_err = denoise_errors(model, param, lat, cond, t, noise)
    with torch.no_grad():
        if ref is None:
            raw.disable_adapters()
            ref_err = denoise_errors(raw, param, lat, cond, t, noise)
            raw.enable_adapters()
        else:
            ref_err = denoise_errors(ref, param, lat, cond, t, noise)
    return model_err, ref_err


def train(spec: GeneratorSpec, cfg: TrainConfig, ranked: pd.DataFrame,
          images: Callable[[list[str]], list[Image.Image]], out_dir: Path,
          log: Callable[[dict[str, float], int], None] = lambda m, s: None,
          work_dir: Path | None = None) -> dict[str, float]:
    """Tune `spec`'s pipeline on ranked groups; saves LoRA weights or a full pipeline in out_dir.
    Checkpoints and the latent cache go to work_dir (default out_dir): keep it outside versioned
    outputs and keyed by the run's config, so that a resume never picks up another config's state."""
    work_dir = work_dir or out_dir
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum)
    set_seed(cfg.seed)
    device = accelerator.device
    pipe, model, ref = load_for_training(spec, cfg, device)
    groups = build_groups(pipe, ranked, images, cfg.resolution or spec.height, device, cache=work_dir / "cache")
    train_groups, held = split_holdout(groups, cfg.holdout_fraction, cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate)
    model, opt = accelerator.prepare(model, opt)
    param = Parametrization.from_scheduler(pipe.scheduler)
    obj = OBJECTIVES.get(cfg.objective)
    rng = torch.Generator().manual_seed(cfg.seed + accelerator.process_index)  # each process its own groups
    ckpts = work_dir / "checkpoints"
    start = resume(accelerator, ckpts, rng)
    last: dict[str, float] = {}
    raw = accelerator.unwrap_model(model)
    model.train()
    for step in tqdm(range(start + 1, cfg.steps + 1), desc=f"train {cfg.objective}", unit="step",
                     initial=start, total=cfg.steps):
        with accelerator.accumulate(model):
            rows = torch.randint(0, len(train_groups), (min(cfg.prompts_per_step, len(train_groups)),), generator=rng)
            lat, cond, phi, tau, mask = make_batch(train_groups, obj, rows, rng)
            t = param.sample_t(len(rows), rng)
            noise = torch.randn(lat.shape[:1] + lat.shape[2:], generator=rng)
            lat, cond = lat.to(device), {k: v.to(device) for k, v in cond.items()}
            model_err, ref_err = _errors(model, ref, param, lat, cond, t.to(device), noise.to(device), raw)
            loss, w = objective_loss(obj, model_err, ref_err, phi.to(device), tau.to(device), mask.to(device),
                                     cfg.beta)
            accelerator.backward(loss)
            grad_norm = accelerator.clip_grad_norm_(params, 1.0) if accelerator.sync_gradients else None
            opt.step()
            opt.zero_grad()
        if step % cfg.log_every == 0 or step == cfg.steps:
            last = {"loss": loss.item(), "lr": opt.param_groups[0]["lr"],
                    "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
                    **pair_stats(implicit_scores(model_err, ref_err).detach().cpu(), w.cpu(), cfg.beta)}
            if accelerator.is_main_process:
                log(last, step)
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
            save_checkpoint(accelerator, ckpts, step, rng)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return last
    if held is not None:
        last["heldout_implicit_acc"] = heldout_accuracy(raw, ref, param, held, obj, cfg.beta, device)
        log({"heldout_implicit_acc": last["heldout_implicit_acc"]}, cfg.steps)
    save_tuned(raw, pipe, spec, cfg, out_dir)
    return last


def save_checkpoint(accelerator, ckpts: Path, step: int, rng: torch.Generator) -> Path:
    """accelerate's state plus each process's sampling RNG and the step, written to a temporary
    folder that the main process renames once every process has written its part."""
    final, tmp = ckpts / f"step-{step:07d}", ckpts / f".step-{step:07d}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    torch.save(rng.get_state(), tmp / f"sampler_rng_{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step}))
        tmp.rename(final)
        for old in sorted(ckpts.glob("step-*"))[:-2]:  # keep the last two
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def resume(accelerator, ckpts: Path, rng: torch.Generator) -> int:
    """Load the newest complete checkpoint (unfinished ones never got their final name); the step."""
    done = sorted(ckpts.glob("step-*")) if ckpts.exists() else []
    if not done:
        return 0
    accelerator.load_state(str(done[-1]))
    rng.set_state(torch.load(done[-1] / f"sampler_rng_{accelerator.process_index}.pt"))
    step = json.loads((done[-1] / "trainer_state.json").read_text())["step"]
    print(f"resumed from {done[-1]} at step {step}")
    return step


def save_tuned(model, pipe, spec: GeneratorSpec, cfg: TrainConfig, out_dir: Path) -> None:
    """LoRA -> pytorch_lora_weights.safetensors (loadable with pipe.load_lora_weights);
    full -> a whole diffusers pipeline folder. tuned.json says which, and from which base."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.lora_rank > 0:
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(model))
        key = "transformer_lora_layers" if hasattr(pipe, "transformer") else "unet_lora_layers"
        type(pipe).save_lora_weights(out_dir, **{key: layers}, safe_serialization=True)
    else:
        setattr(pipe, "transformer" if hasattr(pipe, "transformer") else "unet", model)
        pipe.save_pretrained(out_dir / "pipeline", safe_serialization=True)
    kind = "lora" if cfg.lora_rank > 0 else "full"
    (out_dir / "tuned.json").write_text(json.dumps({"base": spec.model_dump(), "kind": kind}, indent=2) + "\n")


def tuned_spec(model_dir: Path) -> tuple[GeneratorSpec, GeneratorSpec]:
    """(base, tuned) generator specs from a folder written by save_tuned; the tuned one points at it."""
    info = json.loads((model_dir / "tuned.json").read_text())
    base = GeneratorSpec.model_validate(info["base"])
    update = {"lora": str(model_dir)} if info["kind"] == "lora" else {"path": str(model_dir / "pipeline")}
    return base, base.model_copy(update={"name": f"{base.name}-tuned", **update})
