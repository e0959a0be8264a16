"""The levers of docs/what-moves-the-model.md against hand-computed values: the anchored objective, the label
margin, the winners'/losers' implicit scores, the trained timestep range, task-balanced drawing, on-policy
and half-and-half groups, and the oracle reward (graded, and refused next to the benchmark it would leak into)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from models.objectives import (
    OBJECTIVES,
    Shaping,
    images_used,
    objective_loss,
    winner_loser_scores,
    winners,
)
from models.parametrization import Parametrization
from models.preference_batch import draw_rows
from models.rewards.shapes_verifier import graded_verdict
from models.shapes import render, render_wrong
from models.shapes_zoo.prompt_parser import parse_prompt
from models.train_data import RankedGroups
from models.validate import validate_config
from synrank.config import ConfigError, load_config
from tasks.generate import plan_images

PHI = [[1.0, 0.5, 0.0]]
TAU = [[1, 2, 3]]


def _labels() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    tau = torch.tensor(TAU)
    return torch.tensor(PHI), tau, torch.ones_like(tau, dtype=torch.bool)


def test_anchored_rankdpo_adds_lambda_times_the_winners_error() -> None:
    phi, tau, mask = _labels()
    model_err, ref_err = torch.tensor([[0.30, 0.50, 0.40]]), torch.tensor([[0.35, 0.45, 0.40]])
    beta, lam = 10.0, 2.0
    # By hand: s = model - ref = [-0.05, 0.05, 0]; RankDPO's Delta_ij for i above j; plus lam x err of the winner.
    s = [-0.05, 0.05, 0.0]
    g = [1.0, math.sqrt(2) - 1, 0.0]
    d = [1 / math.log(2), 1 / math.log(3), 1 / math.log(4)]
    pairs = sum(
        abs(g[i] - g[j]) * abs(d[i] - d[j]) * -math.log(1 / (1 + math.exp(beta * (s[i] - s[j]))))
        for i in range(3)
        for j in range(i + 1, 3)
    )
    want = pairs + lam * 0.30
    got, _ = objective_loss(OBJECTIVES.get("rankdpo"), model_err, ref_err, phi, tau, mask, beta, Shaping(anchor=lam))
    assert math.isclose(float(got), want, rel_tol=1e-6)
    plain, _ = objective_loss(OBJECTIVES.get("rankdpo"), model_err, ref_err, phi, tau, mask, beta)
    assert math.isclose(float(plain), pairs, rel_tol=1e-6)


def test_anchor_shares_lambda_among_tied_winners_and_adds_to_sft() -> None:
    phi, tau, mask = torch.tensor([[0.8, 0.8, 0.1]]), torch.tensor([[1, 1, 3]]), torch.ones(1, 3, dtype=torch.bool)
    assert winners(phi, tau, mask).tolist() == [[0.5, 0.5, 0.0]]
    err = torch.tensor([[0.2, 0.4, 1.0]])
    dpo, _ = objective_loss(OBJECTIVES.get("dpo"), err, err, phi, tau, mask, 1.0, Shaping(anchor=1.0))
    # DPO at s = 0 everywhere: log 2 on its one pair (best 0 over worst 2); anchor: mean of the two winners' errors.
    assert math.isclose(float(dpo), math.log(2) + 0.3, rel_tol=1e-6)
    sft, _ = objective_loss(OBJECTIVES.get("sft"), err, err, phi, tau, mask, 1.0, Shaping(anchor=1.0))
    assert math.isclose(float(sft), 0.2 + 0.3, rel_tol=1e-6)  # SFT on the first best + the anchor
    # DPO alone forwards the best and the worst; the anchor adds the tied second winner.
    assert images_used(OBJECTIVES.get("dpo"), phi, tau, mask).tolist() == [[True, False, True]]
    assert images_used(OBJECTIVES.get("dpo"), phi, tau, mask, Shaping(anchor=1.0)).tolist() == [[True, True, True]]


def test_min_margin_drops_near_ties_only() -> None:
    phi, tau, mask = _labels()
    w = OBJECTIVES.get("rankdpo").pairs(phi, tau, mask)
    err = torch.zeros(1, 3)
    _, kept = objective_loss(OBJECTIVES.get("rankdpo"), err, err, phi, tau, mask, 1.0, Shaping(min_margin=0.6))
    # phi gaps: (0,1) 0.5 and (1,2) 0.5 are below 0.6 and dropped; (0,2) 1.0 stays with its weight.
    want = torch.zeros_like(w)
    want[0, 0, 2] = w[0, 0, 2]
    assert torch.equal(kept, want)


def test_winner_and_loser_scores_by_hand() -> None:
    s = torch.tensor([[-0.2, 0.1, 0.4, 9.0], [0.3, 0.0, -0.1, 0.0]])
    tau = torch.tensor([[1, 2, 3, 5], [1, 1, 3, 5]])  # slot 4 of each group is padding
    mask = torch.tensor([[True, True, True, False], [True, True, True, False]])
    got = winner_loser_scores(s, tau, mask)
    assert math.isclose(got["winner_s"], (-0.2 + 0.3 + 0.0) / 3, abs_tol=1e-7)
    assert math.isclose(got["loser_s"], (0.4 - 0.1) / 2, abs_tol=1e-7)


def test_timestep_range_keeps_draws_inside_it() -> None:
    from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler

    param = Parametrization.from_scheduler(DDPMScheduler(), t_range=(0.5, 1.0))
    t = param.sample_t(4000, torch.Generator().manual_seed(0))
    assert int(t.min()) == 500 and int(t.max()) == 999
    assert param.describe()["timestep_range"] == "0.5-1"
    full = Parametrization.from_scheduler(DDPMScheduler())
    assert torch.equal(
        full.sample_t(50, torch.Generator().manual_seed(1)),
        torch.randint(0, 1000, (50,), generator=torch.Generator().manual_seed(1)),
    )
    flow = Parametrization.from_scheduler(FlowMatchEulerDiscreteScheduler(shift=3.0), t_range=(0.25, 0.75))
    sigma = flow.sample_t(2000, torch.Generator().manual_seed(2))
    assert float(sigma.min()) >= 0.25 and float(sigma.max()) <= 0.75
    with pytest.raises(ValueError, match=r"timestep_range \[0.8, 0.2\] must satisfy"):
        Parametrization.from_scheduler(DDPMScheduler(), t_range=(0.8, 0.2))


def _groups(categories: list[int]) -> RankedGroups:
    p = len(categories)
    idx = torch.arange(2 * p).view(p, 2)
    return RankedGroups(
        index=idx,
        phi=torch.tensor([[1.0, 0.0]] * p),
        tau=torch.tensor([[1, 2]] * p),
        mask=torch.ones(p, 2, dtype=torch.bool),
        cond={"encoder_hidden_states": torch.zeros(p, 1, 1)},
        latents=torch.zeros(2 * p, 1, 1, 1),
        category=torch.tensor(categories),
    )


def test_balanced_draws_weigh_every_task_alike() -> None:
    groups = _groups([0] * 9 + [1] * 3)  # 9 prompts of one task, 3 of another
    w = groups.task_balanced_weights()
    assert torch.allclose(w, torch.tensor([1 / 18] * 9 + [1 / 6] * 3, dtype=torch.float64))
    rows = torch.cat(
        [draw_rows(12, 8, OBJECTIVES.get("rankdpo"), g, w) for g in [torch.Generator().manual_seed(3)] * 500]
    )
    share = float((rows >= 9).float().mean())
    assert abs(share - 0.5) < 0.03  # uniform drawing would give 0.25
    assert groups.select(torch.tensor([10, 0])).category.tolist() == [1, 0]
    with pytest.raises(ValueError, match="balance_tasks needs each prompt's category"):
        RankedGroups(**{**groups.__dict__, "category": None}).task_balanced_weights()


def test_onpolicy_and_half_and_half_groups() -> None:
    prompts = pd.DataFrame({"prompt_id": ["p1", "p2"], "prompt": ["a photo of a star", "a photo of two rings"]})
    onpolicy = load_config(
        overrides=[
            "generate.generators=[{name: shapes-sd-s, path: zoo/shapes-sd-s, steps: 10, height: 32, width: 32, "
            "images_per_prompt: 8}]",
            "train.base=shapes-sd-s",
        ]
    )
    validate_config(onpolicy, "pipeline")
    assert onpolicy.generate.group_size() == 8
    plan = plan_images(prompts, "shapes-sd-s", 8, 0, 256)
    assert plan.groupby("prompt_id").size().tolist() == [8, 8] and plan["seed"].nunique() == 16
    half = load_config(
        overrides=[
            "generate.generators.1.images_per_prompt=4",
            "generate.images_per_prompt=1",
        ]
    )
    # 4 from the base (shapes-sd-s) and 1 from each of the 3 others: K = 7 per prompt, 4 of them on-policy.
    assert [half.generate.images_of(g) for g in half.generate.generators] == [1, 4, 1, 1]
    assert half.generate.group_size() == 7


def test_oracle_is_graded_like_the_verifier() -> None:
    prompt = "a photo of two red circles"
    spec = parse_prompt(prompt)
    rng = np.random.default_rng(0)
    assert graded_verdict(render(spec, 32, rng), prompt) == 1.0
    wrong, _ = render_wrong(spec, "count", 32, rng, avoid_reserved=False)
    # Requirements: the include item and GenEval's counting exclude (fewer than 3): a wrong count fails one
    # or both, never passes.
    assert graded_verdict(wrong, prompt) in (0.0, 0.5)
    assert graded_verdict(np.zeros((32, 32, 3), np.uint8), prompt) == 0.5  # no circle: only the exclude holds
    assert graded_verdict(np.zeros((32, 32, 3), np.uint8), "not a shapes prompt") == 0.0


def test_oracle_reward_is_refused_next_to_its_benchmark() -> None:
    oracle = "score.rewards=[{name: oracle, kind: shapes-verifier}]"
    cfg = load_config(overrides=[oracle])
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, "pipeline")
    assert str(err.value) == (
        "bad value for 'score.rewards.0.kind': 'shapes-verifier' is the geneval-shapes benchmark's own judge, "
        "so training on its labels leaks the benchmark; set score.oracle: true for a diagnosis run, or use "
        "learned rewards"
    )
    validate_config(load_config(overrides=[oracle, "score.oracle=true"]), "pipeline")
    assert not load_config().score.oracle  # params.yaml: no oracle
    assert "shapes-verifier" not in [r.kind for r in load_config().score.rewards]


@pytest.mark.slow
def test_learning_rate_schedule_warmup_and_scaling(tmp_path: Path) -> None:
    from tests.fixtures.tiny_models import build_tiny_sd
    from tests.fixtures.trainer import run

    model = build_tiny_sd(tmp_path / "sd", seed=0, channels=(16, 32))
    rows: list[tuple[int, float]] = []
    import models.trainer

    real = models.trainer._run_steps

    def record(loop, ckpts, log):
        return real(loop, ckpts, lambda m, s: rows.append((s, m["lr"])) if "lr" in m else None)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(models.trainer, "_run_steps", record)
        run(str(model), tmp_path / "out", 4, 0, lr_scheduler="linear", lr_warmup_steps=2, scale_lr=True)
    # prompts_per_step 3 x grad_accum 1 = 3: peak 3e-3; linear warmup over 2 steps, then linear decay to 0 at 4.
    assert [s for s, _ in rows] == [1, 2, 3, 4]
    assert [round(lr, 9) for _, lr in rows] == [0.0, 0.0015, 0.003, 0.0015]


@pytest.mark.slow
def test_bf16_keeps_frozen_weights_in_bf16_and_the_lora_in_float32(tmp_path: Path, fresh_accelerate) -> None:
    from models.trainer import load_for_training
    from synrank.config import GeneratorSpec, TrainConfig
    from tests.fixtures.tiny_models import build_tiny_sd
    from tests.fixtures.trainer import run

    model = build_tiny_sd(tmp_path / "sd", seed=0, channels=(16, 32))
    spec = GeneratorSpec(name="tiny", steps=20, path=str(model), height=32, width=32)
    pipe, unet, _ = load_for_training(spec, TrainConfig(lora_rank=2), "cpu", "bf16")
    dtypes = {(p.requires_grad, p.dtype) for p in unet.parameters()}
    assert dtypes == {(False, torch.bfloat16), (True, torch.float32)}
    assert (
        {p.dtype for p in pipe.vae.parameters()}
        == {p.dtype for p in pipe.text_encoder.parameters()}
        == {torch.bfloat16}
    )
    final = run(str(model), tmp_path / "out", 2, 0, mixed_precision="bf16")
    assert math.isfinite(final.metrics["loss"]) and final.settings["mixed_precision"] == "bf16"


@pytest.mark.slow
def test_ema_saves_the_moving_average_of_the_steps_weights(tmp_path: Path) -> None:
    """diffusers' EMAModel: after update 1 the average is the weights (decay 0), after update 2 it is
    2/11 of them plus 9/11 of the new ones (decay min(0.9, (1 + 1) / (10 + 1))). The runs of 1 and 2 steps
    without EMA give those weights (same seed: the 2-step run's first step is the 1-step run)."""
    from safetensors.torch import load_file

    from tests.fixtures.tiny_models import build_tiny_sd
    from tests.fixtures.trainer import run

    model = str(build_tiny_sd(tmp_path / "sd", seed=0, channels=(16, 32)))
    for name, steps, decay in (("w1", 1, 0.0), ("w2", 2, 0.0), ("ema", 2, 0.9)):
        run(model, tmp_path / name, steps, 0, ema_decay=decay)
    w1, w2, ema = (load_file(tmp_path / n / "pytorch_lora_weights.safetensors") for n in ("w1", "w2", "ema"))
    assert sorted(ema) == sorted(w2) and any(not torch.equal(w1[k], w2[k]) for k in w2)
    for key in ema:
        torch.testing.assert_close(ema[key], 2 / 11 * w1[key] + 9 / 11 * w2[key], rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_validation_images_are_what_the_tuned_model_renders(tmp_path: Path) -> None:
    """Every validation_every steps the main process renders the prompts (seeds seed + i) with the model as it
    is; the last step's images are the saved model's own renders (loaded as any generator, LoRA fused)."""
    import numpy as np
    from PIL import Image

    from models.generators import load_generator
    from synrank.models_io import tuned_spec
    from tests.fixtures.tiny_models import build_tiny_sd
    from tests.fixtures.trainer import run

    model = str(build_tiny_sd(tmp_path / "sd", seed=0, channels=(16, 32)))
    prompts = ["a photo of 1 circles", "two squares"]
    run(model, tmp_path / "out", 2, 0, validation_every=1, validation_prompts=prompts, seed=5)
    folders = sorted(p.name for p in (tmp_path / "out" / "validation").iterdir())
    assert folders == ["step-0000001", "step-0000002"]
    last = [Image.open(tmp_path / "out" / "validation" / "step-0000002" / f"{i:02d}.png") for i in range(2)]
    assert [im.size for im in last] == [(32, 32), (32, 32)]
    tuned = load_generator(tuned_spec(tmp_path / "out")[1], "cpu").generate(prompts, [5, 6])
    for got, want in zip(last, tuned):
        diff = np.abs(np.asarray(got, np.int16) - np.asarray(want, np.int16))
        assert diff.mean() < 1.0, diff.mean()  # the same render up to the fused LoRA's rounding


def test_each_validation_folder_goes_to_mlflow_once(tmp_path: Path) -> None:
    from tasks.train import ValidationUpload

    calls: list[tuple] = []
    client = type("Client", (), {"log_artifacts": lambda self, *a: calls.append(a)})()
    upload = ValidationUpload(client, "run-1", tmp_path / "validation")
    upload()  # no folder yet
    for step in ("step-0000002", "step-0000001", ".step-0000003.tmp"):
        (tmp_path / "validation" / step).mkdir(parents=True)
    upload()
    upload()
    (tmp_path / "validation" / "step-0000003").mkdir()
    upload()
    folder = tmp_path / "validation"
    assert calls == [
        ("run-1", str(folder / s), f"validation/{s}") for s in ("step-0000001", "step-0000002", "step-0000003")
    ]


def test_validation_every_without_prompts_is_refused() -> None:
    from models.validate import validate_config

    with pytest.raises(ConfigError) as err:
        validate_config(load_config(overrides=["train.validation_every=5"]), "train")
    assert str(err.value) == (
        "bad value for 'train.validation_prompts': [] is empty; train.validation_every (5) renders them: give at "
        "least one prompt or set validation_every 0"
    )
