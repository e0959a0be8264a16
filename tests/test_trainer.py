"""The trainer: every objective
runs without NaN, LoRA and full fine-tuning save loadable weights, and a SIGKILLed run resumes onto
the same final weights as an uninterrupted one. A NaN loss or gradient stops a run before it saves
anything (or is skipped and counted), SUDO's negatives always come from another prompt, and a
non-square generator trains at its own aspect."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from models.objectives import OBJECTIVES, derangement, dpo_pairs
from models.preference_batch import draw_rows, make_batch
from models.train_data import RankedGroups, _to_pixels, encode_prompts, training_size
from synrank.config import ROOT
from tests.fixtures.tiny_models import build_tiny_sd
from tests.fixtures.trainer import run

pytestmark = pytest.mark.slow  # training runs


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_sd(tmp_path_factory.mktemp("sd") / "sd", seed=5, channels=(16, 32)))


@pytest.mark.parametrize("objective", ["rankdpo", "dpo", "gpo", "sudo", "sft", "rwr"])
def test_every_objective_trains_without_nan(objective: str, tiny_model: str, tmp_path: Path) -> None:
    final = run(tiny_model, tmp_path, steps=2, checkpoint_every=0, objective=objective)
    assert math.isfinite(final.metrics["loss"]) and math.isfinite(final.metrics["grad_norm"])
    assert "heldout_implicit_acc" in final.metrics
    lora = load_file(tmp_path / "pytorch_lora_weights.safetensors")
    assert lora and all(torch.isfinite(v).all() for v in lora.values())


@pytest.mark.slow
def test_steps_count_optimizer_updates(tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """train.steps counts updates, as diffusers' max_train_steps: with grad_accum 3, 2 steps draw 6
    micro-batches and step AdamW twice (accelerate skips the wrapped optimizer between syncs)."""
    from models import trainer

    draws, updates, real_draw, real_step = [], [], trainer.draw_rows, torch.optim.AdamW.step
    monkeypatch.setattr(trainer, "draw_rows", lambda *a, **k: draws.append(1) or real_draw(*a, **k))
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, *a, **k: updates.append(1) or real_step(self, *a, **k))
    final = run(tiny_model, tmp_path, steps=2, checkpoint_every=0, grad_accum=3)
    assert (len(draws), len(updates)) == (6, 2) and math.isfinite(final.metrics["grad_norm"])  # the last draw synced


def test_full_fine_tune_saves_a_loadable_pipeline(tiny_model: str, tmp_path: Path) -> None:
    from diffusers import DiffusionPipeline

    from models.generators import load_generator
    from synrank.models_io import tuned_spec

    run(tiny_model, tmp_path, steps=2, checkpoint_every=0, lora_rank=0)
    base, tuned = tuned_spec(tmp_path)
    assert tuned.path == str(tmp_path / "pipeline") and not tuned.lora
    before = DiffusionPipeline.from_pretrained(tiny_model).unet.state_dict()
    after = DiffusionPipeline.from_pretrained(tuned.path).unet.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the UNet was trained
    images = load_generator(tuned.model_copy(update={"steps": 2})).generate(["a photo of 2 circles"], [7])
    assert images[0].size == (32, 32)


@pytest.mark.slow
def test_sigkill_and_resume_reach_the_same_weights(tiny_model: str, tmp_path: Path) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run(tiny_model, straight, steps=6, checkpoint_every=3)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "tests.fixtures.trainer", tiny_model, str(resumed), "6", "3"]
    # Killed right after the step-3 checkpoint is saved.
    kill = [sys.executable, "-m", "tests.killpoint", "models.trainer:save_checkpoint", "1", *cmd[2:]]
    res = subprocess.run(kill, cwd=ROOT, env=env, capture_output=True)
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    assert [p.name for p in (resumed / "checkpoints").iterdir()] == ["step-0000003"]
    assert not (resumed / "tuned.json").exists()
    # The checkpoint holds the LoRA adapters only (models.checkpoints.trainable_only), not the frozen UNet.
    held = load_file(resumed / "checkpoints" / "step-0000003" / "model.safetensors")
    assert held and all("lora" in k for k in held)
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
    a = load_file(straight / "pytorch_lora_weights.safetensors")
    b = load_file(resumed / "pytorch_lora_weights.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sdxl", "sd3"])
def test_sdxl_and_sd3_train_through_the_same_loop(kind: str, tmp_path: Path) -> None:
    """SDXL's UNet needs its pooled text and size/crop time ids; SD3's transformer is flow matching
    with pooled projections: both come out of the same train() and load back as LoRA."""
    from models.generators import load_generator
    from synrank.models_io import tuned_spec
    from tests.fixtures import tiny_pipelines

    model = getattr(tiny_pipelines, f"build_tiny_{kind}")(tmp_path / kind, seed=3)
    final = run(str(model), tmp_path / "out", steps=2, checkpoint_every=0)
    assert (
        math.isfinite(final.metrics["loss"])
        and math.isfinite(final.metrics["grad_norm"])
        and final.metrics["grad_norm"] > 0
    )
    lora = load_file(tmp_path / "out" / "pytorch_lora_weights.safetensors")
    assert lora and all(torch.isfinite(v).all() for v in lora.values())
    _, tuned = tuned_spec(tmp_path / "out")
    images = load_generator(tuned.model_copy(update={"steps": 2, "backend": kind})).generate(["a photo of a star"], [1])
    assert images[0].size == (32, 32)


# -- a run never publishes a broken result ---------------------------------------------------------------


def _no_model_in(out: Path) -> bool:
    return not (out / "tuned.json").exists() and not list(out.glob("*.safetensors")) and not (out / "pipeline").exists()


def test_a_nan_loss_stops_training_before_anything_is_saved(tiny_model: str, tmp_path: Path) -> None:
    from models.trainer import NonFiniteLossError

    with pytest.raises(
        NonFiniteLossError,
        match=r"^train: loss is (nan|inf|-inf) at step [2-4] \(objective rankdpo, "
        r"learning_rate 1e\+12\); no model was saved$",
    ):
        run(tiny_model, tmp_path, steps=4, checkpoint_every=0, learning_rate=1e12)
    assert _no_model_in(tmp_path)


def test_a_nan_gradient_norm_stops_training(tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A finite loss whose gradient is NaN (sqrt at 0: inf * 0 in backward) is caught at the gradient norm."""
    from models import trainer

    real = trainer.objective_loss

    def nan_gradient(*args: object, **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        loss, w = real(*args, **kwargs)
        x = args[1].sum()  # model_err
        return loss + torch.sqrt(x - x), w

    monkeypatch.setattr(trainer, "objective_loss", nan_gradient)
    with pytest.raises(trainer.NonFiniteLossError, match=r"gradient norm is nan at step 1 .*no model was saved"):
        run(tiny_model, tmp_path, steps=2, checkpoint_every=0)
    assert _no_model_in(tmp_path)


def test_skip_mode_skips_and_counts_nonfinite_steps(
    tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from models import trainer

    real, calls = trainer.objective_loss, []

    def nan_on_second_call(*args: object, **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        loss, w = real(*args, **kwargs)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 2 else loss), w

    monkeypatch.setattr(trainer, "objective_loss", nan_on_second_call)
    final = run(tiny_model, tmp_path, steps=4, checkpoint_every=0, nonfinite="skip")
    assert len(calls) == 4 and final.metrics["skipped_steps"] == 1.0
    assert math.isfinite(final.metrics["loss"]) and math.isfinite(final.metrics["grad_norm"])
    lora = load_file(tmp_path / "pytorch_lora_weights.safetensors")
    assert all(torch.isfinite(v).all() for v in lora.values())


def test_skip_mode_drops_the_whole_accumulation_window(
    tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """grad_accum 2: a NaN on the first micro-batch of update 1 drops that update (its second micro-batch's
    gradients are not applied alone), so AdamW steps once in 2 steps and one step is counted skipped."""
    from models import trainer

    real, calls, updates, real_step = trainer.objective_loss, [], [], torch.optim.AdamW.step

    def nan_on_first_call(*args: object, **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        loss, w = real(*args, **kwargs)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 1 else loss), w

    monkeypatch.setattr(trainer, "objective_loss", nan_on_first_call)
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, *a, **k: updates.append(1) or real_step(self, *a, **k))
    final = run(tiny_model, tmp_path, steps=2, checkpoint_every=0, nonfinite="skip", grad_accum=2)
    assert (len(calls), len(updates), final.metrics["skipped_steps"]) == (4, 1, 1.0)


def test_skip_mode_still_fails_when_most_steps_are_skipped(tiny_model: str, tmp_path: Path) -> None:
    from models.trainer import NonFiniteLossError

    with pytest.raises(
        NonFiniteLossError,
        match=r"train: 3 steps up to step 4 of 4 had a non-finite loss .*skipped "
        r"\(nonfinite=skip tolerates at most 50% .*no model was saved",
    ):
        run(tiny_model, tmp_path, steps=4, checkpoint_every=0, learning_rate=1e12, nonfinite="skip")
    assert _no_model_in(tmp_path)


# -- SUDO: the negative always comes from another prompt -------------------------------------------------


def _groups(n_groups: int, k: int = 3, same_text: tuple[int, int] | None = None) -> RankedGroups:
    """Group p holds images 3p .. 3p+k-1; latents[i] is the constant i, so a batch names its images."""
    index = torch.arange(n_groups * k).view(n_groups, k)
    text = torch.randn(n_groups, 2, 4, generator=torch.Generator().manual_seed(0))
    if same_text:
        text[same_text[1]] = text[same_text[0]]
    return RankedGroups(
        index=index,
        phi=torch.rand(n_groups, k),
        tau=torch.arange(1, k + 1).repeat(n_groups, 1),
        mask=torch.ones(n_groups, k, dtype=torch.bool),
        cond={"encoder_hidden_states": text},
        latents=torch.arange(n_groups * k, dtype=torch.float32).view(-1, 1, 1, 1),
    )


@pytest.mark.parametrize("n", [2, 4, 6])
def test_sudo_batches_never_pair_two_images_of_one_prompt(n: int) -> None:
    sudo, groups, rng = OBJECTIVES.get("sudo"), _groups(6), torch.Generator().manual_seed(n)
    for _ in range(300):
        rows = draw_rows(len(groups), n, sudo, rng)
        assert len(set(rows.tolist())) == n  # without replacement
        lat, _, phi, tau, mask = make_batch(groups, sudo, rows, rng)
        images = lat.flatten(1).long()  # (n, 2) image ids
        assert (images[:, 0] // 3 == rows).all()
        assert (images[:, 0] // 3 != images[:, 1] // 3).all() and mask.all()


def test_sudo_batch_by_hand() -> None:
    """One draw replayed on a second generator with the same seed: the rows, the member picked in each
    group and the derangement give exactly the pairs, labelled (1, 0) / ranks (1, 2)."""
    sudo, groups = OBJECTIVES.get("sudo"), _groups(5)
    rows = draw_rows(5, 4, sudo, torch.Generator().manual_seed(7))
    lat, cond, phi, tau, mask = make_batch(groups, sudo, rows, torch.Generator().manual_seed(8))
    replay = torch.Generator().manual_seed(7)
    expected_rows = torch.randperm(5, generator=replay)[:4]
    assert torch.equal(rows, expected_rows)
    replay = torch.Generator().manual_seed(8)
    own = rows * 3 + (torch.rand(4, generator=replay) * 3).long()
    perm = derangement(4, replay)
    assert (perm != torch.arange(4)).all()
    assert torch.equal(lat.flatten(1).long(), torch.stack([own, own[perm]], dim=1))
    assert torch.equal(cond["encoder_hidden_states"], groups.cond["encoder_hidden_states"][rows])
    assert torch.equal(phi, torch.tensor([[1.0, 0.0]] * 4)) and torch.equal(tau, torch.tensor([[1, 2]] * 4))
    assert mask.all()


def test_sudo_masks_a_pair_from_one_prompt() -> None:
    """Defence in depth: rows drawn with replacement, or two groups with the same caption, give pairs from
    one prompt; their negative slot is masked out (no preference pair, the SFT term stays)."""
    sudo = OBJECTIVES.get("sudo")
    _, _, phi, tau, mask = make_batch(_groups(4), sudo, torch.tensor([1, 1]), torch.Generator().manual_seed(0))
    assert torch.equal(mask, torch.tensor([[True, False], [True, False]]))
    assert dpo_pairs(phi, tau, mask).sum() == 0
    groups = _groups(4, same_text=(0, 2))
    _, _, _, _, mask = make_batch(groups, sudo, torch.tensor([0, 2]), torch.Generator().manual_seed(0))
    assert not mask[:, 1].any()


# -- non-square images keep their aspect -----------------------------------------------------------------


def _circle(width: int, height: int, radius: int) -> Image.Image:
    im = Image.new("RGB", (width, height), "white")
    cx, cy = width // 2, height // 2
    ImageDraw.Draw(im).ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill="black")
    return im


def _aspect(pixels: torch.Tensor) -> float:
    """Width / height of the dark blob in one (3, H, W) image."""
    ys, xs = torch.nonzero(pixels.mean(dim=0) < 0, as_tuple=True)
    return float(xs.max() - xs.min() + 1) / float(ys.max() - ys.min() + 1)


@pytest.mark.parametrize(("resolution", "shape"), [(0, (32, 48)), (64, (64, 96)), (20, (16, 24))])
def test_a_wide_generator_trains_at_its_own_aspect(resolution: int, shape: tuple[int, int]) -> None:
    size = training_size(32, 48, resolution)  # a 48 x 32 (width x height) generator
    assert size == shape
    pixels = _to_pixels([_circle(48, 32, 12)], size)
    assert pixels.shape == (1, 3, *shape)
    assert _aspect(pixels[0]) == pytest.approx(1.0, abs=0.1)  # squashed to a square it was 0.65


def test_an_image_of_another_aspect_is_cropped_not_squashed() -> None:
    pixels = _to_pixels([_circle(64, 64, 12)], (32, 48))
    assert pixels.shape == (1, 3, 32, 48) and _aspect(pixels[0]) == pytest.approx(1.0, abs=0.1)


def test_sdxl_size_conditioning_is_height_then_width() -> None:
    pipe = SimpleNamespace(
        text_encoder_2=object(),
        unet=object(),
        encode_prompt=lambda **kw: (torch.zeros(2, 3, 4), None, torch.zeros(2, 4), None),
    )
    ids = encode_prompts(pipe, ["a", "b"], "cpu", (32, 48))["time_ids"]
    assert ids.tolist() == [[32, 48, 0, 0, 32, 48]] * 2
    assert encode_prompts(pipe, ["a"], "cpu", 64)["time_ids"].tolist() == [[64, 64, 0, 0, 64, 64]]


def test_a_wide_generator_trains_end_to_end(tiny_model: str, tmp_path: Path) -> None:
    final = run(tiny_model, tmp_path, steps=2, checkpoint_every=0, height=32, width=48)
    assert math.isfinite(final.metrics["loss"])
    (cache,) = (tmp_path / "cache").glob("groups-*")
    latents = np.load(cache / "latents.npy")
    assert latents.shape[-1] * 2 == latents.shape[-2] * 3  # 48 x 32 in latent space too
