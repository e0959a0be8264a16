"""Validation images during training, as diffusers' training scripts make them: every `validation_every`
steps the main process renders `validation_prompts` with the model as it is (seeds train.seed + i, the
generator's own sampling settings) into `<work>/validation/step-NNNNNNN/NN.png`. The train stage's process
logs each new folder to the MLflow run (tasks.train); nothing here knows MLflow."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from models.train_data import ENCODERS
from synrank.atomic import building_dir
from synrank.config import GeneratorSpec, TrainConfig


def step_folder(folder: Path, step: int) -> Path:
    """Where the images of `step` go."""
    return folder / f"step-{step:07d}"


def validation_renderer(
    pipe, model, spec: GeneratorSpec, cfg: TrainConfig, accelerator, folder: Path
) -> Callable[[int], None] | None:
    """render(step) for train's loop, or None when cfg asks for no validation images. Only the main process
    renders; the denoiser `model` (in `pipe`) is put in eval mode for it and back in train mode after, and
    the encoders visit the accelerator for it (models.trainer.release_encoders moved them off)."""
    if not cfg.validation_every:
        return None
    from models.generators import GENERATORS
    from synrank.registry import import_all

    import_all("models.generators")
    backend = GENERATORS.get(spec.backend).around(spec, pipe, str(accelerator.device))
    seeds = [cfg.seed + i for i in range(len(cfg.validation_prompts))]

    def render(step: int) -> None:
        if not accelerator.is_main_process:
            return
        parked = [getattr(pipe, n) for n in ENCODERS if getattr(pipe, n, None) is not None]
        home = [next(p.parameters()).device for p in parked]
        for part in parked:
            part.to(accelerator.device)
        model.eval()
        try:
            with torch.no_grad(), accelerator.autocast():
                images = backend.generate(list(cfg.validation_prompts), seeds)
        finally:
            model.train()
            for part, device in zip(parked, home):
                part.to(device)
        with building_dir(step_folder(folder, step)) as tmp:
            for i, image in enumerate(images):
                image.save(tmp / f"{i:02d}.png")

    return render
