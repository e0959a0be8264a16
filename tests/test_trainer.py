"""Objectives against hand-computed values, the parametrizations, and the trainer: every objective
runs without NaN, LoRA and full fine-tuning save loadable weights, and a SIGKILLed run resumes onto
the same final weights as an uninterrupted one."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from models.objectives import OBJECTIVES, derangement, objective_loss, preference_loss
from models.parametrization import Parametrization
from models.tiny import build_tiny_sd
from synrank.config import ROOT
from tests.trainer_fixtures import run


def _labels(phi: list[list[float]], tau: list[list[int]]) -> tuple[torch.Tensor, ...]:
    p, t = torch.tensor(phi), torch.tensor(tau)
    return p, t, torch.ones_like(t, dtype=torch.bool)


def test_gpo_weights_and_g2_reduction() -> None:
    phi, tau, mask = _labels([[0.0, 0.5, 1.0]], [[3, 2, 1]])
    w = OBJECTIVES.get("gpo").pairs(phi, tau, mask)[0]
    a = [(x - 0.5) / math.sqrt(1 / 6) for x in (0.0, 0.5, 1.0)]  # population std of (0, .5, 1)
    for i in range(3):
        for j in range(3):
            assert math.isclose(float(w[i, j]), a[i] - a[j] if i > j else 0.0, abs_tol=1e-6)
    # G = 2: standardized rewards are +1 and -1, so the single pair has weight 2 = DPO times 2.
    s = torch.tensor([[0.01, -0.02]])
    phi2, tau2, mask2 = _labels([[1.0, 0.0]], [[1, 2]])
    gpo = preference_loss(s, OBJECTIVES.get("gpo").pairs(phi2, tau2, mask2), 2500.0)
    dpo = preference_loss(s, OBJECTIVES.get("dpo").pairs(phi2, tau2, mask2), 2500.0)
    assert torch.isclose(gpo, 2 * dpo)


def test_all_equal_groups_give_zero_not_nan() -> None:
    phi, tau, mask = _labels([[0.5, 0.5, 0.5]], [[1, 1, 1]])
    err = torch.tensor([[0.3, 0.2, 0.1]])
    for name in ("rankdpo", "dpo", "gpo", "rwr"):
        loss, _ = objective_loss(OBJECTIVES.get(name), err, err * 0.5, phi, tau, mask, 2500.0)
        assert not torch.isnan(loss), name
        if name != "rwr":
            assert loss.item() == 0.0, name
    # Reward-weighted SFT on all-equal phi weighs the images equally; all-zero phi gives zero.
    v = OBJECTIVES.get("rwr").sft(phi, tau, mask)
    assert torch.allclose(v, torch.full((1, 3), 1 / 3))
    assert OBJECTIVES.get("rwr").sft(phi * 0, tau, mask).sum() == 0


def test_sft_and_sudo_losses_by_hand() -> None:
    phi, tau, mask = _labels([[0.0, 1.0]], [[2, 1]])
    model_err, ref_err = torch.tensor([[0.4, 0.1]]), torch.tensor([[0.3, 0.3]])
    sft, _ = objective_loss(OBJECTIVES.get("sft"), model_err, ref_err, phi, tau, mask, 1.0)
    assert math.isclose(sft.item(), 0.1, rel_tol=1e-6)  # the denoising loss of the best image
    # SUDO slots are (dataset image, batch mate) labelled (1, 0).
    phi, tau, mask = _labels([[1.0, 0.0]], [[1, 2]])
    sudo, _ = objective_loss(OBJECTIVES.get("sudo"), model_err, ref_err, phi, tau, mask, 10.0)
    s = model_err - ref_err
    want = 0.5 * -torch.nn.functional.logsigmoid(-10.0 * (s[0, 0] - s[0, 1])) + 0.5 * 0.4
    assert math.isclose(sudo.item(), want.item(), rel_tol=1e-6)


@pytest.mark.parametrize("n", [2, 3, 5, 16])
def test_derangement_has_no_fixed_point(n: int) -> None:
    for seed in range(50):
        perm = derangement(n, torch.Generator().manual_seed(seed))
        assert sorted(perm.tolist()) == list(range(n))
        assert (perm != torch.arange(n)).all()


def test_parametrizations_by_hand() -> None:
    x0, eps = torch.full((1, 1, 1, 1), 2.0), torch.full((1, 1, 1, 1), -1.0)
    ac = torch.tensor([0.64, 0.36])
    x_t, target = Parametrization("epsilon", 2, ac).noisy_and_target(x0, eps, torch.tensor([0]))
    assert torch.allclose(x_t, torch.tensor(0.8 * 2 + 0.6 * -1.0)) and torch.allclose(target, eps)
    _, v = Parametrization("v_prediction", 2, ac).noisy_and_target(x0, eps, torch.tensor([1]))
    assert torch.allclose(v, torch.tensor(0.6 * -1.0 - 0.8 * 2.0))
    flow = Parametrization("flow", 1000)
    x_t, target = flow.noisy_and_target(x0, eps, torch.tensor([0.25]))
    assert torch.allclose(x_t, torch.tensor(0.75 * 2 - 0.25)) and torch.allclose(target, eps - x0)
    assert flow.model_timestep(torch.tensor([0.25])).item() == 250.0


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_sd(tmp_path_factory.mktemp("sd") / "sd", seed=5, channels=(16, 32)))


@pytest.mark.parametrize("objective", ["rankdpo", "dpo", "gpo", "sudo", "sft", "rwr"])
def test_every_objective_trains_without_nan(objective: str, tiny_model: str, tmp_path: Path) -> None:
    final = run(tiny_model, tmp_path, steps=2, checkpoint_every=0, objective=objective)
    assert math.isfinite(final["loss"]) and math.isfinite(final["grad_norm"])
    assert "heldout_implicit_acc" in final
    lora = load_file(tmp_path / "pytorch_lora_weights.safetensors")
    assert lora and all(torch.isfinite(v).all() for v in lora.values())


def test_sigkill_and_resume_reach_the_same_weights(tiny_model: str, tmp_path: Path) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run(tiny_model, straight, steps=6, checkpoint_every=3)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "tests.trainer_fixtures", tiny_model, str(resumed), "6", "3"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list((resumed / "checkpoints").glob("step-0000003")) and time.time() < deadline:
        assert proc.poll() is None, "training ended before its first checkpoint"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (resumed / "tuned.json").exists()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
    a = load_file(straight / "pytorch_lora_weights.safetensors")
    b = load_file(resumed / "pytorch_lora_weights.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
