"""The trainer's checkpoints: accelerate's state plus each process's sampling RNG and the step, saved
atomically (a folder gets its final name only when every process has written its part), and resumed
from the newest complete one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from synrank.atomic import replace_dir, temp_path


class CheckpointMismatch(ValueError):
    """A checkpoint written by another number of processes: its optimizer and RNG states do not fit this run."""


def trainable_only(accelerator) -> None:
    """Checkpoints of the prepared models' trainable weights only (a LoRA's adapters, not the frozen base: an
    SDXL checkpoint is megabytes instead of 9.6 GiB), with the optimizer, schedule and RNG states as before.
    accelerate's save hook swaps each model's state dict for its trainable parameters; the load hook loads
    them itself (non-strict, every trainable key required) and leaves accelerate no model to load."""
    from safetensors.torch import load_file

    def save(models: list, weights: list, output_dir: str) -> None:
        for i, model in enumerate(models):
            weights[i] = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}

    def load(models: list, input_dir: str) -> None:
        for i, model in enumerate(models):
            state = load_file(str(Path(input_dir) / ("model.safetensors" if i == 0 else f"model_{i}.safetensors")))
            wanted = {k for k, v in model.named_parameters() if v.requires_grad}
            if missing := wanted - set(state):
                raise CheckpointMismatch(f"train: checkpoint {input_dir} lacks {len(missing)} trainable weights")
            model.load_state_dict(state, strict=False)
        models.clear()

    accelerator.register_save_state_pre_hook(save)
    accelerator.register_load_state_pre_hook(load)


def save_checkpoint(accelerator, ckpts: Path, step: int, rng: torch.Generator, skipped: int = 0) -> Path:
    """accelerate's state plus each process's sampling RNG, the step and the skipped-step count, written
    to a temporary folder that the main process renames once every process has written its part."""
    final = ckpts / f"step-{step:07d}"
    tmp = temp_path(final, unique=False)  # one name for every process
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    torch.save(rng.get_state(), tmp / f"sampler_rng_{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = {"step": step, "skipped_steps": skipped, "processes": accelerator.num_processes}
        (tmp / "trainer_state.json").write_text(json.dumps(state))
        replace_dir(tmp, final)  # fsynced: a checkpoint is there to survive a crash
        for old in sorted(ckpts.glob("step-*"))[:-2]:  # keep the last two
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def resume(accelerator, ckpts: Path, rng: torch.Generator) -> tuple[int, int]:
    """Load the newest complete checkpoint (unfinished ones never got their final name);
    (step, skipped steps so far), (0, 0) without one."""
    done = sorted(ckpts.glob("step-*")) if ckpts.exists() else []
    if not done:
        return 0, 0
    state = json.loads((done[-1] / "trainer_state.json").read_text())
    if state.get("processes", 1) != accelerator.num_processes:
        raise CheckpointMismatch(
            f"train: checkpoint {done[-1]} was written by {state.get('processes', 1)} process(es) and this run "
            f"has {accelerator.num_processes}; resume with the same train.processes, or delete {ckpts} to start over"
        )
    accelerator.load_state(str(done[-1]))
    rng.set_state(torch.load(done[-1] / f"sampler_rng_{accelerator.process_index}.pt"))
    print(f"resumed from {done[-1]} at step {state['step']}")
    return state["step"], state.get("skipped_steps", 0)
