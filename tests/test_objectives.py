"""Objectives against hand-computed values: RankDPO's weights, its K = 2 reduction to DPO, ties."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from models.objectives import OBJECTIVES, implicit_scores, pair_stats, preference_loss


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
