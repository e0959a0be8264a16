"""Trainer fidelity (issue 11, item 5): SD3's timestep density, a mixed precision that takes effect or
is refused, and a run with no ordered pair stops before it trains.

- Flow matching samples sigma as SD3's recipe (logit-normal, then the scheduler's shift: median 0.75 at
  shift 3), in the scheduler's own timestep convention; epsilon / v-prediction UNets draw exactly the
  random numbers they drew before.
- fp16 on a CPU (a silent no-op in accelerate) is refused; "auto" takes accelerate's setting, an explicit
  value overrides it.
- Groups whose images all tie are dropped and counted; with none left, training stops naming the counts.
"""

from __future__ import annotations

import math
from pathlib import Path
from statistics import NormalDist
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from models.parametrization import Parametrization, shift_sigma
from models.preflight import NothingToLearnError, PrecisionError, drop_tied_groups, make_accelerator
from synrank.config import GeneratorSpec, TrainConfig
from tests.fixtures.trainer import ranked_table

N = 20_000


def _flow(shift: float = 3.0, **kw: object):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(shift=shift, **kw)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- SD3 / flow matching: the timestep density ---------------------------------------------------------------


def test_shifted_density_is_the_scheduler_shift_of_a_uniform_draw() -> None:
    param = Parametrization.from_scheduler(_flow(3.0), "shifted")
    sigma = param.sample_t(N, _gen(1))
    u = torch.rand(N, generator=_gen(1))
    torch.testing.assert_close(sigma, 3.0 * u / (1 + 2.0 * u))
    assert float(sigma.median()) == pytest.approx(0.75, abs=0.02)
    assert float(u.median()) == pytest.approx(0.50, abs=0.02)  # what uniform sigma (the old sampling) gives


def test_the_default_for_flow_matching_is_sd3s_recipe() -> None:
    """auto = logit_normal(0, 1) through the scheduler's shift 3, as diffusers' SD3 scripts: median 0.75."""
    param = Parametrization.from_scheduler(_flow(3.0))
    assert (param.kind, param.density, param.shift) == ("flow", "logit_normal", 3.0)
    sigma = param.sample_t(N, _gen(2))
    assert float(sigma.median()) == pytest.approx(0.75, abs=0.02)
    torch.testing.assert_close(sigma, shift_sigma(torch.sigmoid(torch.randn(N, generator=_gen(2))), 3.0))


@pytest.mark.parametrize(("mean", "std"), [(0.0, 1.0), (0.5, 0.8), (-1.0, 1.5)])
def test_logit_normal_sigma_is_the_sigmoid_of_a_normal(mean: float, std: float) -> None:
    """Unshifted (flow_shift 1): sigma = sigmoid(N(mean, std)); its quantiles are sigmoid(mean + std z_q)."""
    param = Parametrization.from_scheduler(_flow(3.0), "logit_normal", 1.0, logit_mean=mean, logit_std=std)
    sigma = param.sample_t(N, _gen(3))
    torch.testing.assert_close(sigma, torch.sigmoid(mean + std * torch.randn(N, generator=_gen(3))))
    for q in (0.05, 0.25, 0.5, 0.75, 0.95):
        expected = 1 / (1 + math.exp(-(mean + std * NormalDist().inv_cdf(q))))
        assert float(sigma.quantile(q)) == pytest.approx(expected, abs=0.01), q


def test_mode_density_follows_sd3s_formula() -> None:
    """sigma = f(v) = 1 - v - s (cos^2(pi v / 2) - 1 + v), v uniform; f decreases, so the q-quantile is f(1 - q)."""
    s = 1.29
    param = Parametrization.from_scheduler(_flow(1.0), "mode", mode_scale=s)
    sigma = param.sample_t(N, _gen(4))

    def f(v: float) -> float:
        return 1 - v - s * (math.cos(math.pi * v / 2) ** 2 - 1 + v)

    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        assert float(sigma.quantile(q)) == pytest.approx(f(1 - q), abs=0.01), q
    assert 0.0 <= float(sigma.min()) and float(sigma.max()) <= 1.0


def test_sigma_maps_to_the_schedulers_timestep_convention() -> None:
    """The scheduler's own table is sigma_i = shift(u_i) and timestep_i = sigma_i * N; a training sigma goes
    to the model as sigma * N and noises a latent exactly as the scheduler's scale_noise at that timestep."""
    sched = _flow(3.0)
    param = Parametrization.from_scheduler(sched, "shifted")
    n = sched.config.num_train_timesteps
    u = torch.linspace(1, n, n).flip(0) / n  # the scheduler's unshifted grid
    torch.testing.assert_close(shift_sigma(u, param.shift), sched.sigmas[:n])
    torch.testing.assert_close(param.model_timestep(sched.sigmas[:n]), sched.timesteps)
    x0, eps = torch.randn(3, 4, 8, 8, generator=_gen(5)), torch.randn(3, 4, 8, 8, generator=_gen(6))
    idx = torch.tensor([10, 500, 990])
    sigma = sched.sigmas[idx]
    x_t, target = param.noisy_and_target(x0, eps, sigma)
    # scale_noise (training use, no begin index) looks each timestep up in the scheduler's own table
    torch.testing.assert_close(x_t, sched.scale_noise(x0, param.model_timestep(sigma), eps))
    torch.testing.assert_close(target, eps - x0)
    sched.set_timesteps(28)  # inference: the transformer sees sigma * N too
    torch.testing.assert_close(sched.timesteps, sched.sigmas[:-1] * n)


def test_flow_shift_overrides_and_dynamic_shifting_is_unshifted() -> None:
    assert Parametrization.from_scheduler(_flow(3.0), "shifted", 2.0).shift == 2.0
    assert Parametrization.from_scheduler(_flow(3.0, use_dynamic_shifting=True)).shift == 1.0
    param = Parametrization.from_scheduler(_flow(3.0), "uniform")
    torch.testing.assert_close(param.sample_t(100, _gen(7)), torch.rand(100, generator=_gen(7)))  # the old draw
    with pytest.raises(ValueError, match="flow_shift has no effect with timestep_density 'uniform'"):
        Parametrization.from_scheduler(_flow(3.0), "uniform", 2.0)


# -- epsilon / v-prediction UNets: unchanged ------------------------------------------------------------------


def _ddim(**kw: object):
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", **kw)


@pytest.mark.parametrize("density", ["auto", "uniform"])
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_a_unet_draws_the_same_timesteps_as_before(density: str, prediction: str) -> None:
    param = Parametrization.from_scheduler(_ddim(prediction_type=prediction), density)
    assert (param.kind, param.describe()) == (prediction, {"timestep_density": "uniform-discrete"})
    got, expected = _gen(11), _gen(11)
    for n in (1, 8, 1000):
        assert torch.equal(param.sample_t(n, got), torch.randint(0, 1000, (n,), generator=expected))
    assert torch.equal(got.get_state(), expected.get_state())  # no extra draw: the next noise is the same too


@pytest.mark.parametrize(("density", "shift"), [("logit_normal", None), ("shifted", None), ("auto", 3.0)])
def test_a_flow_setting_on_a_unet_is_refused(density: str, shift: float | None) -> None:
    with pytest.raises(ValueError, match="applies to flow-matching models only; DDIMScheduler trains on uniformly"):
        Parametrization.from_scheduler(_ddim(), density, shift)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_min_snr_weights_against_the_schedule_by_hand(prediction: str) -> None:
    # scaled_linear: beta_t = (sqrt(0.00085) + (sqrt(0.012) - sqrt(0.00085)) * t / 999)^2; alpha_bar = prod(1 - beta)
    betas = [(math.sqrt(0.00085) + (math.sqrt(0.012) - math.sqrt(0.00085)) * k / 999) ** 2 for k in range(1000)]
    alpha_bar = [math.prod(1 - b for b in betas[: k + 1]) for k in (0, 100, 999)]
    param = Parametrization.from_scheduler(_ddim(prediction_type=prediction), snr_gamma=5.0)
    got = param.loss_weight(torch.tensor([0, 100, 999]))
    for w, a in zip(got.tolist(), alpha_bar):
        snr = a / (1 - a)
        assert w == pytest.approx(min(snr, 5.0) / (snr if prediction == "epsilon" else snr + 1), rel=1e-4)
    assert got[2] == pytest.approx(1.0 if prediction == "epsilon" else alpha_bar[2] / 1.0, rel=1e-2)
    assert Parametrization.from_scheduler(_ddim()).loss_weight(torch.tensor([5])) is None  # default: unweighted


def test_min_snr_on_flow_matching_is_refused() -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler

    with pytest.raises(ValueError, match="snr_gamma .* applies to epsilon / v-prediction models only"):
        Parametrization.from_scheduler(FlowMatchEulerDiscreteScheduler(shift=3.0), snr_gamma=5.0)


def test_train_config_defaults() -> None:
    cfg = TrainConfig()
    assert (cfg.mixed_precision, cfg.timestep_density, cfg.flow_shift) == ("auto", "auto", None)
    assert (cfg.logit_mean, cfg.logit_std, cfg.mode_scale) == (0.0, 1.0, 1.29)


# -- mixed precision: honoured, or refused ---------------------------------------------------------------------


FP16_ON_CPU = (
    r"^train: mixed_precision 'fp16' cannot take effect on cpu \(accelerate runs fp32 there\); "
    r"use 'no' or 'bf16'$"
)


def test_fp16_on_cpu_is_refused(fresh_accelerate: pytest.MonkeyPatch) -> None:
    with pytest.raises(PrecisionError, match=FP16_ON_CPU):
        make_accelerator("fp16", 1)
    fresh_accelerate.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    with pytest.raises(
        PrecisionError,
        match=r"'fp16' \(from accelerate's config / ACCELERATE_MIXED_PRECISION, as "
        r"mixed_precision 'auto'\) cannot take effect on cpu",
    ):
        make_accelerator("auto", 1)


def test_fp16_on_cpu_stops_train_before_the_model_loads(fresh_accelerate: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from models.trainer import train

    ranked, images = ranked_table()
    spec = GeneratorSpec(name="tiny", steps=20, path=str(tmp_path / "no-such-model"), height=32, width=32)
    with pytest.raises(PrecisionError, match=FP16_ON_CPU):
        train(spec, TrainConfig(mixed_precision="fp16"), ranked, lambda ids: [images[i] for i in ids], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_auto_takes_accelerates_setting(fresh_accelerate: pytest.MonkeyPatch) -> None:
    fresh_accelerate.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what `accelerate launch` of 1gpu.yaml sets
    acc = make_accelerator("auto", 1)
    assert (acc.mixed_precision, acc.native_amp) == ("bf16", True)


def test_an_explicit_value_overrides_accelerates_setting(fresh_accelerate: pytest.MonkeyPatch) -> None:
    fresh_accelerate.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert make_accelerator("no", 1).mixed_precision == "no"


def test_auto_without_a_setting_is_full_precision(fresh_accelerate: pytest.MonkeyPatch) -> None:
    acc = make_accelerator("auto", 1)
    assert (acc.mixed_precision, acc.native_amp) == ("no", False)


def test_bf16_on_cpu_does_take_effect(fresh_accelerate: pytest.MonkeyPatch) -> None:
    """Why bf16 is not refused on a CPU: accelerate autocasts there, the output differs from fp32."""
    layer = torch.nn.Linear(64, 64)
    x = torch.randn(8, 64, generator=_gen(8))
    full = layer(x)
    acc = make_accelerator("bf16", 1)
    with acc.autocast():
        mixed = layer(x)
    assert mixed.dtype == torch.bfloat16 and not torch.equal(mixed.float(), full)


# -- ties: no ordered pair, nothing to learn -------------------------------------------------------------------


def _tie(ranked, prompts: list[str]):
    """Every image of these prompts gets phi 0.5 and rank 1 (equal phi share a rank)."""
    ranked = ranked.copy()
    rows = ranked["prompt_id"].isin(prompts)
    ranked.loc[rows, "phi"], ranked.loc[rows, "tau"] = 0.5, 1
    return ranked


@pytest.mark.parametrize("objective", ["rankdpo", "dpo", "gpo-phi", "sft", "rwr", "sudo"])
def test_tied_groups_are_dropped_and_counted(objective: str) -> None:
    from models.objectives import OBJECTIVES

    ranked, _ = ranked_table(n_prompts=6)
    ranked = _tie(ranked, ["p1", "p4"])
    kept, counts = drop_tied_groups(ranked, OBJECTIVES.get(objective))
    if objective == "sudo":  # no labels: every group stays
        assert kept is ranked and counts == {"groups_ranked": 6.0, "groups_all_tied": 2.0, "groups_used": 6.0}
    else:
        assert sorted(kept["prompt_id"].unique()) == ["p0", "p2", "p3", "p5"]
        assert counts == {"groups_ranked": 6.0, "groups_all_tied": 2.0, "groups_used": 4.0}


def test_ties_are_judged_on_the_objectives_label() -> None:
    """GPO weighs the advantage column: a group tied on phi but not on advantage still orders pairs."""
    ranked, _ = ranked_table(n_prompts=3)
    ranked = _tie(ranked, ["p0", "p1"])
    ranked["advantage"] = ranked.groupby("prompt_id").cumcount().astype(float)
    ranked.loc[ranked["prompt_id"] == "p1", "advantage"] = 0.0
    kept, counts = drop_tied_groups(ranked, SimpleNamespace(self_pairs=False, label="advantage"))
    assert sorted(kept["prompt_id"].unique()) == ["p0", "p2"] and counts["groups_all_tied"] == 1.0


def test_a_frame_without_ties_is_passed_through() -> None:
    from models.objectives import OBJECTIVES

    ranked, _ = ranked_table()
    kept, counts = drop_tied_groups(ranked, OBJECTIVES.get("rankdpo"))
    assert kept is ranked and counts == {"groups_ranked": 8.0, "groups_all_tied": 0.0, "groups_used": 8.0}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    from tests.fixtures.tiny_models import build_tiny_sd

    return str(build_tiny_sd(tmp_path_factory.mktemp("sd") / "sd", seed=5, channels=(16, 32)))


def _train(model: str, ranked, images, out: Path, **cfg: object) -> dict[str, float | str]:
    from models.trainer import train

    settings = dict(steps=2, prompts_per_step=3, lora_rank=2, log_every=1, holdout_fraction=0.25, learning_rate=1e-3)
    spec = GeneratorSpec(name="tiny", steps=20, path=model, height=32, width=32)
    return train(spec, TrainConfig(**{**settings, **cfg}), ranked, lambda ids: [images[i] for i in ids], out)


def test_all_tied_groups_stop_before_training(tiny_model: str, tmp_path: Path) -> None:
    ranked, images = ranked_table(n_prompts=12)
    ranked = _tie(ranked, list(ranked["prompt_id"].unique()))
    with pytest.raises(
        NothingToLearnError,
        match=r"^train: all 12 ranked groups tie \(every image of a prompt got "
        r"the same phi\); nothing to learn from$",
    ):
        _train(tiny_model, ranked, images, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))


@pytest.mark.slow
def test_a_mix_of_tied_and_ordered_groups_trains_on_the_ordered_ones(tiny_model: str, tmp_path: Path) -> None:
    ranked, images = ranked_table(n_prompts=8)
    ranked = _tie(ranked, ["p0", "p3", "p6"])
    final = _train(tiny_model, ranked, images, tmp_path)
    assert (final.metrics["groups_ranked"], final.metrics["groups_all_tied"], final.metrics["groups_used"]) == (
        8.0,
        3.0,
        5.0,
    )
    assert math.isfinite(final.metrics["loss"]) and final.settings["mixed_precision"] == "no"
    assert final.settings["timestep_density"] == "uniform-discrete"
    (cache,) = (tmp_path / "cache").glob("groups-*")
    assert np.load(cache / "latents.npy").shape[0] == 5 * 3  # the tied prompts' images were never encoded
    assert (tmp_path / "pytorch_lora_weights.safetensors").exists()


@pytest.mark.slow
def test_sd3_trains_with_and_reports_the_sd3_density(tmp_path: Path) -> None:
    from tests.fixtures.tiny_pipelines import build_tiny_sd3

    model = build_tiny_sd3(tmp_path / "sd3", seed=3)
    ranked, images = ranked_table()
    final = _train(str(model), ranked, images, tmp_path / "out", steps=1)
    assert (final.settings["timestep_density"], final.settings["timestep_shift"]) == ("logit_normal", 3.0)
    assert math.isfinite(final.metrics["loss"])
