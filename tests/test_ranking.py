"""Algorithm 1 on hand-made examples, ties and non-finite rewards included."""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.ranking import bradley_terry, kendall_tau, phi_scores, rank_groups, ranks, reward_agreement, zscore


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


def test_rank_groups_table_and_non_finite_rewards() -> None:
    scores = pd.DataFrame(
        {
            "image_id": ["a0", "a1", "a2", "b0", "b1"] * 2,
            "reward": ["r1"] * 5 + ["r2"] * 5,
            "score": [3.0, 2.0, 1.0, 0.5, np.nan, 1.0, 3.0, 2.0, 0.1, 0.2],
        }
    )
    prompt_of = pd.Series({"a0": "A", "a1": "A", "a2": "A", "b0": "B", "b1": "B"})
    out, report = rank_groups(scores, prompt_of)
    out = out.set_index("image_id")
    # Prompt A: r1 order a0 > a1 > a2 (wins 2, 1, 0); r2 order a1 > a2 > a0 (wins 0, 2, 1).
    # C = [2, 3, 1] over n (k - 1) = 4.
    np.testing.assert_allclose(out.loc[["a0", "a1", "a2"], "phi"], [0.5, 0.75, 0.25])
    assert list(out.loc[["a0", "a1", "a2"], "tau"]) == [2, 1, 3]
    # b1 has a NaN reward: left out and counted; b0 is alone, phi 0.
    assert "b1" not in out.index and out.loc["b0", "phi"] == 0.0 and out.loc["b0", "k"] == 1
    assert report["non_finite_left_out"] == 1 and report["prompts_single_image"] == 1


def test_an_image_without_a_score_is_counted_and_its_prompt_named() -> None:
    """Rows of a2 are missing from scores.parquet (both rewards), b1's for r2 only: neither vanishes unseen."""
    scores = pd.DataFrame(
        {
            "image_id": ["a0", "a1", "b0", "b1", "a0", "a1", "b0"],
            "reward": ["r1", "r1", "r1", "r1", "r2", "r2", "r2"],
            "score": [3.0, 2.0, 0.5, 0.4, 1.0, 3.0, 0.1],
        }
    )
    prompt_of = pd.Series({"a0": "A", "a1": "A", "a2": "A", "b0": "B", "b1": "B", "c0": "C", "c1": "C"})
    scores = pd.concat([scores, pd.DataFrame({"image_id": ["c0", "c1"] * 2, "reward": ["r1", "r1", "r2", "r2"],
                                              "score": [1.0, 2.0, 1.0, 2.0]})])  # fmt: skip
    out, report = rank_groups(scores, prompt_of)
    assert sorted(out["image_id"]) == ["a0", "a1", "b0", "c0", "c1"]  # A ranked with 2 of 3, B with 1 of 2
    assert (report["images"], report["unscored_left_out"], report["non_finite_left_out"]) == (7, 2, 0)
    assert report["missing_score"] == {"r1": 1, "r2": 2}  # a2 under both, b1 under r2
    assert (report["prompts_lost_images"], report["prompts_lost_images_first"]) == (2, ["A", "B"])
    complete, report = rank_groups(scores, prompt_of, complete_groups=True)
    assert sorted(complete["image_id"]) == ["c0", "c1"] and report["incomplete_groups_left_out"] == 2


def test_aggregation_variants_by_hand() -> None:
    r = np.array([[1.0, 0.0], [0.0, 0.0]])
    # Bradley-Terry: image 0 vs 1 is sigma(1) under reward 0 and sigma(0) = 0.5 under reward 1.
    s1 = 1 / (1 + np.exp(-1.0))
    np.testing.assert_allclose(bradley_terry(r), [(s1 + 0.5) / 2, (1 - s1 + 0.5) / 2])
    # z-scores: reward 0 standardizes to (+1, -1), reward 1 is constant -> 0; averaged over 2 rewards.
    np.testing.assert_allclose(zscore(r), [0.5, -0.5])


def test_kendall_tau_between_rewards() -> None:
    assert kendall_tau(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])) == -1.0
    assert kendall_tau(np.array([1.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0])) == 1 / 3
    scores = pd.DataFrame(
        {"image_id": ["a", "b", "c"] * 2, "reward": ["x"] * 3 + ["y"] * 3, "score": [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]}
    )
    assert reward_agreement(scores, pd.Series({"a": "P", "b": "P", "c": "P"})) == {"x_vs_y": 1.0}
