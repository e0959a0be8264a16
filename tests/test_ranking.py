"""Algorithm 1 on hand-made examples, ties and non-finite rewards included."""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.ranking import algorithm1, phi_scores, ranks


def test_phi_by_hand_with_ties() -> None:
    # 3 images x 2 rewards. Reward 0: [1, 2, 2]; img1 and img2 each beat img0, tie between them.
    # Reward 1: [5, 5, 1]; img0 and img1 each beat img2, tie between them.
    # Wins: img0 = 1, img1 = 2, img2 = 1; n (k - 1) = 2 * 2 = 4.
    r = np.array([[1.0, 5.0], [2.0, 5.0], [2.0, 1.0]])
    np.testing.assert_allclose(phi_scores(r), [0.25, 0.5, 0.25])
    np.testing.assert_array_equal(ranks(phi_scores(r)), [2, 1, 2])  # equal phi share a rank


def test_all_tied_and_single_image() -> None:
    np.testing.assert_array_equal(phi_scores(np.ones((4, 3))), np.zeros(4))
    np.testing.assert_array_equal(ranks(np.zeros(4)), [1, 1, 1, 1])
    np.testing.assert_array_equal(phi_scores(np.ones((1, 2))), [0.0])


def test_algorithm1_table_and_non_finite_rewards() -> None:
    scores = pd.DataFrame({
        "image_id": ["a0", "a1", "a2", "b0", "b1"] * 2,
        "reward": ["r1"] * 5 + ["r2"] * 5,
        "score": [3.0, 2.0, 1.0, 0.5, np.nan, 1.0, 3.0, 2.0, 0.1, 0.2],
    })
    prompt_of = pd.Series({"a0": "A", "a1": "A", "a2": "A", "b0": "B", "b1": "B"})
    out, report = algorithm1(scores, prompt_of)
    out = out.set_index("image_id")
    # Prompt A: r1 order a0 > a1 > a2 (wins 2, 1, 0); r2 order a1 > a2 > a0 (wins 0, 2, 1).
    # C = [2, 3, 1] over n (k - 1) = 4.
    np.testing.assert_allclose(out.loc[["a0", "a1", "a2"], "phi"], [0.5, 0.75, 0.25])
    assert list(out.loc[["a0", "a1", "a2"], "tau"]) == [2, 1, 3]
    # b1 has a NaN reward: left out and counted; b0 is alone, phi 0.
    assert "b1" not in out.index and out.loc["b0", "phi"] == 0.0 and out.loc["b0", "k"] == 1
    assert report["non_finite_left_out"] == 1 and report["prompts_single_image"] == 1
