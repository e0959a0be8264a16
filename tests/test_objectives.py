"""Objectives and parametrizations against hand-computed values: RankDPO's weights and its K = 2
reduction to DPO, GPO's G = 2 reduction, ties and all-equal groups, SFT, SUDO and its derangement."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.objectives import OBJECTIVES, derangement, implicit_scores, objective_loss, pair_stats, preference_loss
from models.parametrization import Parametrization


def _labels(phi: list[list[float]], tau: list[list[int]]) -> tuple[torch.Tensor, ...]:
    p, t = torch.tensor(phi), torch.tensor(tau)
    return p, t, torch.ones_like(t, dtype=torch.bool)


def test_rankdpo_weights_by_hand() -> None:
    phi, tau, mask = _labels([[1.0, 0.5, 0.0]], [[1, 2, 3]])
    w = OBJECTIVES.get("rankdpo").pairs(phi, tau, mask)[0]
    g = [1.0, math.sqrt(2) - 1, 0.0]  # 2^phi - 1
    d = [1 / math.log(2), 1 / math.log(3), 1 / math.log(4)]  # 1 / log(1 + tau)
    for i in range(3):
        for j in range(3):
            want = abs(g[i] - g[j]) * abs(d[i] - d[j]) if i < j else 0.0
            assert math.isclose(float(w[i, j]), want, rel_tol=1e-6, abs_tol=1e-7)


def test_rankdpo_k2_is_dpo_times_a_constant() -> None:
    s = torch.tensor([[0.003, -0.001], [-0.002, 0.004]])  # implicit scores, winner first
    phi, tau, mask = _labels([[1.0, 0.0], [1.0, 0.0]], [[1, 2], [1, 2]])
    beta = 2500.0
    dpo = -F.logsigmoid(-beta * (s[:, 0] - s[:, 1])).mean()
    const = 1 / math.log(2) - 1 / math.log(3)
    rank = preference_loss(s, OBJECTIVES.get("rankdpo").pairs(phi, tau, mask), beta)
    assert torch.isclose(rank, const * dpo, rtol=1e-6)
    assert torch.isclose(preference_loss(s, OBJECTIVES.get("dpo").pairs(phi, tau, mask), beta), dpo, rtol=1e-6)


def test_ties_and_padding_contribute_nothing() -> None:
    s = torch.tensor([[0.5, -0.5, 0.1]])
    phi = torch.tensor([[0.5, 0.5, 0.0]])
    tau = torch.tensor([[1, 1, 4]])
    mask = torch.tensor([[True, True, False]])  # third slot is padding
    for name in ("rankdpo", "dpo"):
        w = OBJECTIVES.get(name).pairs(phi, tau, mask)
        assert float(w.sum()) == 0.0
        loss = preference_loss(s, w, 2500.0)
        assert loss.item() == 0.0 and not torch.isnan(loss)
    assert pair_stats(s, torch.zeros(1, 3, 3), 1.0)["pairs"] == 0.0


def test_implicit_accuracy_and_margin() -> None:
    model_err = torch.tensor([[0.10, 0.30]])
    ref_err = torch.tensor([[0.20, 0.20]])
    s = implicit_scores(model_err, ref_err)  # [-0.1, 0.1]: the model prefers image 0
    w = torch.tensor([[[0.0, 1.0], [0.0, 0.0]]])
    stats = pair_stats(s, w, beta=10.0)
    assert stats["implicit_acc"] == 1.0
    assert math.isclose(stats["reward_margin"], 10.0 * 0.2, rel_tol=1e-6)


def test_gpo_phi_weights_and_g2_reduction() -> None:
    phi, tau, mask = _labels([[0.0, 0.5, 1.0]], [[3, 2, 1]])
    w = OBJECTIVES.get("gpo-phi").pairs(phi, tau, mask)[0]
    a = [(x - 0.5) / math.sqrt(1 / 6) for x in (0.0, 0.5, 1.0)]  # population std of (0, .5, 1)
    for i in range(3):
        for j in range(3):
            assert math.isclose(float(w[i, j]), a[i] - a[j] if i > j else 0.0, abs_tol=1e-6)
    # G = 2: standardized rewards are +1 and -1, so the single pair has weight 2 = DPO times 2.
    s = torch.tensor([[0.01, -0.02]])
    phi2, tau2, mask2 = _labels([[1.0, 0.0]], [[1, 2]])
    gpo = preference_loss(s, OBJECTIVES.get("gpo-phi").pairs(phi2, tau2, mask2), 2500.0)
    dpo = preference_loss(s, OBJECTIVES.get("dpo").pairs(phi2, tau2, mask2), 2500.0)
    assert torch.isclose(gpo, 2 * dpo)


def test_gpo_weighs_the_raw_rewards_advantage_by_hand() -> None:
    """GPO standardizes each reward model's raw scores within the group, not phi: two groups with the
    same ranking (so the same phi) but different reward gaps get different weights."""
    import numpy as np
    import pandas as pd

    from models.ranking import rank_groups

    # One prompt, 3 images, 2 rewards: r1 = [1, 2, 3] -> z = [-1.2247, 0, 1.2247];
    # r2 = [10, 10, 40] -> mean 20, std sqrt(200) -> z = [-0.7071, -0.7071, 1.4142].
    # advantage = mean of the two = [-0.9659, -0.3536, 1.3195].
    scores = pd.DataFrame(
        {
            "image_id": ["i0", "i1", "i2"] * 2,
            "reward": ["r1"] * 3 + ["r2"] * 3,
            "score": [1.0, 2.0, 3.0, 10.0, 10.0, 40.0],
        }
    )
    ranked, _ = rank_groups(scores, pd.Series({"i0": "p", "i1": "p", "i2": "p"}))
    adv = ranked.set_index("image_id").loc[["i0", "i1", "i2"], "advantage"].to_numpy()
    z1, z2 = np.array([-1, 0, 1]) * np.sqrt(1.5), np.array([-1, -1, 2]) / np.sqrt(2)
    np.testing.assert_allclose(adv, (z1 + z2) / 2, rtol=1e-6)
    np.testing.assert_allclose(adv, [-0.96593, -0.35355, 1.31948], atol=1e-5)
    a = torch.tensor([adv], dtype=torch.float32)
    obj = OBJECTIVES.get("gpo")
    assert obj.label == "advantage"
    w = obj.pairs(a, torch.tensor([[3, 2, 1]]), torch.ones(1, 3, dtype=torch.bool))[0]
    want = {(2, 0): adv[2] - adv[0], (2, 1): adv[2] - adv[1], (1, 0): adv[1] - adv[0]}
    for i in range(3):
        for j in range(3):
            assert math.isclose(float(w[i, j]), want.get((i, j), 0.0), abs_tol=1e-6)
    # phi only counts wins ([0, 0.25, 1]: i1 beats i0 under r1 alone), so the phi variant weighs
    # the same pairs differently.
    phi = torch.tensor([ranked.set_index("image_id").loc[["i0", "i1", "i2"], "phi"].to_numpy()], dtype=torch.float32)
    assert torch.allclose(phi, torch.tensor([[0.0, 0.25, 1.0]]))
    assert not torch.allclose(
        OBJECTIVES.get("gpo-phi").pairs(phi, torch.tensor([[3, 2, 1]]), torch.ones(1, 3, dtype=torch.bool))[0], w
    )


def test_all_equal_groups_give_zero_not_nan() -> None:
    phi, tau, mask = _labels([[0.5, 0.5, 0.5]], [[1, 1, 1]])
    err = torch.tensor([[0.3, 0.2, 0.1]])
    for name in ("rankdpo", "dpo", "gpo", "rwr"):
        loss, _ = objective_loss(OBJECTIVES.get(name), err, err * 0.5, phi, tau, mask, 2500.0)
        assert not torch.isnan(loss), name
        assert loss.item() == 0.0, name
    # Reward-weighted SFT weighs phi above the group's minimum: all-equal phi carries no signal, zero.
    assert torch.equal(OBJECTIVES.get("rwr").sft(phi, tau, mask), torch.zeros(1, 3))
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
