"""Preference fine-tuning of a diffusers pipeline with accelerate: one readable loop.

A step is one optimizer update (as diffusers' max_train_steps) over `grad_accum` micro-batches of
`prompts_per_step` ranked groups; the K images of a group share one timestep and one noise draw, and the
images the objective's loss uses (models.objectives.images_used: DPO's best and worst, all K for RankDPO) go
through the denoiser in one batched forward. The reference is the same denoiser with its LoRA adapters
disabled (no second copy), or a frozen copy for a full fine-tune. Every `checkpoint_every` steps the
accelerate state plus the sampling RNG is saved atomically (models.checkpoints), and a restarted run
resumes from the newest checkpoint on the same curve.

A run never publishes a broken result: a NaN or infinite loss or gradient norm raises
NonFiniteLossError naming the step before anything is saved (`nonfinite: fail`), or, with
`nonfinite: skip`, that update (its whole accumulation window) is dropped and counted (`skipped_steps`);
more than MAX_SKIPPED_FRACTION of the steps skipped still fails.

The batches and the errors the objectives compare are built in models.preference_batch (the same builder
as the held-out accuracy, models.heldout).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

from models.checkpoints import resume, save_checkpoint, trainable_only
from models.generators.base import pickle_policy
from models.heldout import heldout_accuracy, split_holdout
from models.lora import FROZEN_DTYPES, add_lora
from models.objectives import (
    OBJECTIVES,
    Objective,
    Shaping,
    images_used,
    implicit_scores,
    objective_loss,
    pair_stats,
    winner_loser_scores,
)
from models.parametrization import Parametrization
from models.preference_batch import draw_rows, paired_errors, preference_batch
from models.preflight import drop_tied_groups, make_accelerator
from models.train_data import ENCODERS, RankedGroups, training_groups
from models.train_result import TrainResult
from models.validation_images import validation_renderer
from synrank.config import GeneratorSpec, TrainConfig
from synrank.models_io import resolve_model_path

MAX_SKIPPED_FRACTION = 0.5  # nonfinite=skip: a run that skips more of its steps than this fails


class NonFiniteLossError(RuntimeError):
    """Training met a NaN or infinite loss or gradient norm; raised before anything is saved."""


def load_for_training(spec: GeneratorSpec, cfg: TrainConfig, device, precision: str = "no") -> tuple:
    """(pipeline, trainable denoiser, reference) on `device`, every other component frozen. lora_rank > 0:
    LoRA adapters (models.lora.add_lora) and no reference (the adapters disabled are it); 0: the whole
    denoiser trains against a frozen deep copy. With LoRA under `precision` bf16 or fp16 (accelerate's
    effective mixed precision) every frozen weight is loaded in that dtype (half the memory, and never a
    float32 copy first: an SDXL UNet 4.8 GiB instead of 9.6) and the adapters stay float32, as diffusers'
    LoRA scripts do. Raises resolve_model_path's errors for a missing model and diffusers' for an
    unloadable one."""
    from diffusers import DiffusionPipeline

    source = resolve_model_path(spec.path, what=f"generator '{spec.name}'")
    frozen = FROZEN_DTYPES.get(precision) if cfg.lora_rank > 0 else None
    dtype = {"torch_dtype": frozen} if frozen is not None else {}
    pipe = DiffusionPipeline.from_pretrained(source, **pickle_policy(spec, [source]), **dtype)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    model = getattr(pipe, denoiser_name(pipe))
    for name in ENCODERS:
        if getattr(pipe, name, None) is not None:
            getattr(pipe, name).requires_grad_(False)
    if cfg.lora_rank > 0:
        add_lora(model, cfg.lora_rank, frozen)
        ref = None
    else:
        model.requires_grad_(False)
        ref = copy.deepcopy(model).eval()
        model.requires_grad_(True)
    if cfg.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    return pipe, model, ref


@dataclass
class _StepResult:
    """One step's outputs: loss (scalar), grad_norm (None between accumulation syncs or when the loss was
    not finite), implicit scores s and pair weights w (B, K) and (B, K, K) on the CPU, and whether the
    optimizer step was skipped for a non-finite value."""

    loss: torch.Tensor
    grad_norm: torch.Tensor | None
    s: torch.Tensor
    w: torch.Tensor
    skipped: bool
    tau: torch.Tensor | None = None  # (B, K) ranks and mask of the batch, for the winners'/losers' scores
    mask: torch.Tensor | None = None

    def metrics(self, lr: float, beta: float) -> dict[str, float]:
        grad = float(self.grad_norm) if self.grad_norm is not None else float("nan")
        out = {"loss": float(self.loss), "lr": lr, "grad_norm": grad, **pair_stats(self.s, self.w, beta)}
        if self.tau is not None:
            out.update(winner_loser_scores(self.s, self.tau, self.mask))
        return out


def _finite_everywhere(accelerator, value: torch.Tensor) -> bool:
    """Whether `value` is finite on every process (one all-reduce when there are several), so that all
    processes take the same branch and none waits for a backward another one skipped."""
    bad = (~torch.isfinite(value.detach().float())).float().sum().reshape(1)
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, reduction="sum")
    return float(bad.sum()) == 0


@dataclass
class _Loop:
    """What one optimisation step needs (the prepared model and optimizer, the raw model for its adapters)."""

    accelerator: Any
    model: Any
    ref: Any
    raw: Any
    opt: Any
    params: list[torch.nn.Parameter]
    param: Parametrization
    obj: Objective
    groups: RankedGroups
    cfg: TrainConfig
    draw_weights: torch.Tensor | None = None  # (P,) per-group draw probability (balance_tasks), None = uniform
    sched: Any = None  # the learning-rate schedule (train.lr_scheduler), None = constant
    ema: Any = None  # the moving average of `params` (train.ema_decay), None = off
    validate: Callable[[int], None] | None = None  # renders the validation images of a step (train.validation_every)
    dropped: bool = False  # a micro-batch of the current accumulation window was non-finite (nonfinite=skip)

    def step(self, step: int, rng: torch.Generator) -> _StepResult:
        """Draw a batch, compute the objective, update (or skip/raise on a non-finite value)."""
        acc, cfg, dev = self.accelerator, self.cfg, self.accelerator.device
        shaping = Shaping(anchor=cfg.anchor_weight, min_margin=cfg.min_margin)
        with acc.accumulate(self.model):
            rows = draw_rows(len(self.groups), cfg.prompts_per_step, self.obj, rng, self.draw_weights)
            # One draw of the whole micro-batch on every process (the same rng), each training its share.
            b = preference_batch(
                self.groups, self.obj, rows, rng, self.param, dev, (acc.process_index, acc.num_processes)
            )
            used = images_used(self.obj, b.label, b.tau, b.mask, shaping)  # only these reach the loss
            model_err, ref_err = paired_errors(self.model, self.ref, self.param, b, self.raw, used)
            label, tau, mask = b.label.to(dev), b.tau.to(dev), b.mask.to(dev)
            loss, w = objective_loss(self.obj, model_err, ref_err, label, tau, mask, cfg.beta, shaping)
            grad_norm, skipped = self._update(loss, step)
        s = implicit_scores(model_err, ref_err).detach().cpu()
        return _StepResult(loss.detach(), grad_norm, s, w.detach().cpu(), skipped, b.tau, b.mask)

    def _update(self, loss: torch.Tensor, step: int) -> tuple[torch.Tensor | None, bool]:
        """Backward, clip, optimizer step: (grad_norm, skipped). A non-finite loss is never back-propagated;
        under fp16 the grad scaler handles inf gradients itself (it skips the step and lowers its scale)."""
        acc = self.accelerator
        if not _finite_everywhere(acc, loss):
            return None, self._nonfinite("loss", loss, step)
        acc.backward(loss)
        grad_norm = acc.clip_grad_norm_(self.params, 1.0) if acc.sync_gradients else None
        if grad_norm is not None and acc.scaler is None and not _finite_everywhere(acc, grad_norm):
            return grad_norm, self._nonfinite("gradient norm", grad_norm, step)
        if acc.sync_gradients and self.dropped:  # the window lost a micro-batch: drop its whole update
            self.opt.zero_grad()
            self.dropped = False
            return grad_norm, True
        self.opt.step()
        self.opt.zero_grad()
        if self.ema is not None and acc.sync_gradients:
            self.ema.step(self.params)
        return grad_norm, False

    def _nonfinite(self, what: str, value: torch.Tensor, step: int) -> bool:
        """nonfinite=fail: raise NonFiniteLossError; skip: drop this update (every micro-batch of its
        accumulation window; accelerate clears gradients only at the window's end) and report it skipped."""
        cfg = self.cfg
        if cfg.nonfinite == "fail":
            raise NonFiniteLossError(
                f"train: {what} is {float(value.detach())} at step {step} (objective "
                f"{cfg.objective}, learning_rate {cfg.learning_rate:g}); no model was saved"
            )
        self.opt.zero_grad()  # acts at the window's end (AcceleratedOptimizer), where the update is dropped
        self.dropped = not self.accelerator.sync_gradients
        return True


def _window(acc, results: list[_StepResult]) -> _StepResult:
    """One optimizer step's results over its accumulation window and all processes: the mean loss, and the
    implicit scores, pair weights, ranks and masks of every group (all-gathered), so the logged pairs and
    accuracy are the whole global batch's, whatever the process count."""
    cat = lambda name: torch.cat([getattr(r, name) for r in results])  # noqa: E731
    loss = torch.stack([r.loss for r in results]).mean()
    parts = {k: cat(k) for k in ("s", "w", "tau", "mask")}
    if acc.num_processes > 1:
        loss = acc.reduce(loss.to(acc.device), reduction="mean").cpu()
        parts = {k: acc.gather(v.to(acc.device)).cpu() for k, v in parts.items()}
    return replace(results[-1], loss=loss, **parts)


def _check_skipped(cfg: TrainConfig, skipped: int, step: int) -> None:
    if skipped > MAX_SKIPPED_FRACTION * cfg.steps:
        raise NonFiniteLossError(
            f"train: {skipped} steps up to step {step} of {cfg.steps} had a non-finite loss or gradient norm "
            f"and were skipped (nonfinite=skip tolerates at most {MAX_SKIPPED_FRACTION:.0%} of the steps; "
            f"objective {cfg.objective}, learning_rate {cfg.learning_rate:g}); no model was saved"
        )


def train(
    spec: GeneratorSpec,
    cfg: TrainConfig,
    ranked: pd.DataFrame,
    images: Callable[[list[str]], list[Image.Image]],
    out_dir: Path,
    log: Callable[[dict[str, float], int], None] = lambda m, s: None,
    work_dir: Path | None = None,
    latents: Callable[[list[str]], list] | None = None,
) -> TrainResult:
    """Tune `spec`'s pipeline on ranked groups; saves LoRA weights or a full pipeline in out_dir and returns
    a TrainResult (the final metrics, the settings that took effect, where the latents came from). `latents`
    loads the generate stage's stored latents by image id (float32 (C, h, w) arrays); they are used where
    `ranked`'s latent_vae is this base's VAE and latent_shape the training shape, else the image is encoded at
    training_size(spec.height, spec.width, cfg.resolution), the generator's aspect kept.
    Checkpoints and the latent cache go to work_dir (default out_dir): keep it outside versioned
    outputs and keyed by the run's config, so that a resume never picks up another config's state.
    Raises NonFiniteLossError (module docstring) before out_dir is written; models.preflight's errors
    (every group ties, a mixed precision that cannot take effect) before a model loads."""
    work_dir = work_dir or out_dir
    from accelerate.utils import set_seed

    obj = OBJECTIVES.get(cfg.objective)
    ranked, counts = drop_tied_groups(ranked, obj)
    accelerator = make_accelerator(cfg.mixed_precision, cfg.grad_accum)
    set_seed(cfg.seed)
    device = accelerator.device
    pipe, model, ref = load_for_training(spec, cfg, device, accelerator.mixed_precision)
    param = training_parametrization(pipe.scheduler, cfg)
    with accelerator.main_process_first():  # the main process encodes and writes; the others read its files
        groups = training_groups(pipe, spec, cfg, ranked, images, latents, device, work_dir / "cache")
    release_encoders(pipe)
    train_groups, held = split_holdout(groups, cfg.holdout_fraction, cfg.seed)
    loop = _prepare_loop(accelerator, model, ref, param, obj, train_groups, cfg)
    loop.validate = validation_renderer(pipe, loop.raw, spec, cfg, accelerator, work_dir / "validation")
    last, skipped = _run_steps(loop, work_dir / "checkpoints", log)
    accelerator.wait_for_everyone()
    result = TrainResult(
        metrics={**last, "skipped_steps": float(skipped), **counts},
        settings={
            "mixed_precision": accelerator.mixed_precision,
            "processes": accelerator.num_processes,
            **param.describe(),
        },
        latents=groups.latent_counts(),
    )
    if loop.ema is not None:
        loop.ema.copy_to(loop.params)  # the average is the tuned model (and what the held-out accuracy judges)
    if not accelerator.is_main_process:
        return result
    if held is not None:
        acc = heldout_accuracy(loop.raw, ref, param, held, obj, cfg.beta, device)
        result.metrics["heldout_implicit_acc"] = acc
        log({"heldout_implicit_acc": acc}, cfg.steps)
    save_tuned(loop.raw, pipe, spec, cfg, out_dir)
    return result


def training_parametrization(scheduler, cfg: TrainConfig) -> Parametrization:
    """The noising, target and timestep density of `scheduler`'s model under `cfg`'s timestep_density,
    flow_shift, logit-normal / mode settings and Min-SNR gamma (Parametrization.from_scheduler, whose
    ValueError refuses a setting the model cannot take)."""
    return Parametrization.from_scheduler(
        scheduler,
        cfg.timestep_density,
        cfg.flow_shift,
        **cfg.model_dump(include={"logit_mean", "logit_std", "mode_scale", "snr_gamma"}),
        t_range=cfg.timestep_range,
    )


def _prepare_loop(accelerator, model, ref, param: Parametrization, obj: Objective, groups, cfg: TrainConfig) -> _Loop:
    """AdamW over the trainable parameters (the LoRA adapters, or all weights), model and optimizer prepared
    by accelerate; the loop keeps the unwrapped model for its adapters and for saving."""
    params = [p for p in model.parameters() if p.requires_grad]
    # foreach: one multi-tensor update instead of a Python loop over the adapters (bit-identical on the CPU).
    opt = torch.optim.AdamW(params, lr=learning_rate(cfg), foreach=True)
    model, opt = accelerator.prepare(model, opt)
    raw = accelerator.unwrap_model(model)
    if cfg.lora_rank > 0:
        trainable_only(accelerator)  # checkpoints hold the adapters, not the frozen base
    weights = groups.task_balanced_weights() if cfg.balance_tasks else None
    loop = _Loop(accelerator, model, ref, raw, opt, params, param, obj, groups, cfg, weights)
    if cfg.lr_scheduler != "constant" or cfg.lr_warmup_steps:
        from diffusers.optimization import get_scheduler

        # Stepped once per optimizer step by _run_steps, on every process alike (not prepared: accelerate's
        # wrapper would step it once per process); saved in the checkpoints.
        loop.sched = get_scheduler(
            cfg.lr_scheduler, opt.optimizer, num_warmup_steps=cfg.lr_warmup_steps, num_training_steps=cfg.steps
        )
        accelerator.register_for_checkpointing(loop.sched)
    if cfg.ema_decay:
        from diffusers.training_utils import EMAModel

        loop.ema = EMAModel(params, decay=cfg.ema_decay, foreach=True)  # a float32 copy of the trainable weights
        accelerator.register_for_checkpointing(loop.ema)
    return loop


def learning_rate(cfg: TrainConfig) -> float:
    """The optimizer's learning rate: train.learning_rate, times the global batch in groups
    (prompts_per_step x grad_accum) with train.scale_lr, as diffusers' --scale_lr does."""
    return cfg.learning_rate * (cfg.prompts_per_step * cfg.grad_accum if cfg.scale_lr else 1)


def _run_steps(
    loop: _Loop, ckpts: Path, log: Callable[[dict[str, float], int], None]
) -> tuple[dict[str, float | str], int]:
    """Steps from the newest checkpoint in `ckpts` (or 1) to cfg.steps: (the last logged metrics, the number
    of skipped steps). Logs every log_every steps and the last from the main process; checkpoints every
    checkpoint_every steps but the last."""
    acc, cfg, opt = loop.accelerator, loop.cfg, loop.opt
    rng = torch.Generator().manual_seed(cfg.seed)  # one stream on every process: the same global batches
    start, skipped = resume(acc, ckpts, rng)
    last: dict[str, float | str] = {}
    loop.model.train()
    for step in tqdm(
        range(start + 1, cfg.steps + 1), desc=f"train {cfg.objective}", unit="step", initial=start, total=cfg.steps
    ):
        # A step is one optimizer update, as diffusers' max_train_steps: grad_accum micro-batches whose
        # gradients accelerate adds up, the update on the last (accelerator.sync_gradients).
        lr = opt.param_groups[0]["lr"]  # this step's rate, before the schedule moves on
        results = [loop.step(step, rng) for _ in range(cfg.grad_accum)]
        skipped += any(r.skipped for r in results)  # an update any of whose micro-batches was dropped
        if loop.sched is not None:
            loop.sched.step()  # the schedule follows the step count, skipped updates included
        _check_skipped(cfg, skipped, step)
        if step % cfg.log_every == 0 or step == cfg.steps:
            result = _window(acc, results)  # every micro-batch of every process
            last = {**result.metrics(lr, cfg.beta), "skipped_steps": float(skipped)}
            if acc.is_main_process:
                log(last, step)
        if loop.validate is not None and step % cfg.validation_every == 0:
            loop.validate(step)
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
            save_checkpoint(acc, ckpts, step, rng, skipped)
    return last, skipped


def release_encoders(pipe) -> None:
    """Move the VAE and text encoders off the accelerator once the groups are on disk: training reads
    their outputs from there, and the denoiser gets their memory (nothing moves on the CPU)."""
    for name in ENCODERS:
        part = getattr(pipe, name, None)
        if part is not None and part.device.type != "cpu":
            part.to("cpu")


def denoiser_name(pipe) -> str:
    """'transformer' (SD3, PixArt) or 'unet' (SD1.5, SDXL): the one test that both picks the denoiser to train
    and names it when saving (a pipeline may carry a `transformer` attribute that is None)."""
    return "transformer" if getattr(pipe, "transformer", None) is not None else "unet"


def save_tuned(model, pipe, spec: GeneratorSpec, cfg: TrainConfig, out_dir: Path) -> None:
    """LoRA -> pytorch_lora_weights.safetensors (loadable with pipe.load_lora_weights);
    full -> a whole diffusers pipeline folder. tuned.json says which, and from which base."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.lora_rank > 0:
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(model))
        type(pipe).save_lora_weights(out_dir, **{f"{denoiser_name(pipe)}_lora_layers": layers}, safe_serialization=True)
    else:
        setattr(pipe, denoiser_name(pipe), model)
        pipe.save_pretrained(out_dir / "pipeline", safe_serialization=True)
    kind = "lora" if cfg.lora_rank > 0 else "full"
    (out_dir / "tuned.json").write_text(json.dumps({"base": spec.model_dump(), "kind": kind}, indent=2) + "\n")
