"""Every reward through its real loading path, on tiny random models of the real architectures saved
in the real checkpoint formats, with one hand-checkable property each."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.rewards import REWARDS, load_reward
from models.rewards.preprocess import OPENAI_MEAN, OPENAI_STD, ClipPreprocess, from_open_clip
from synrank.config import RewardSpec
from tests.fixtures.tiny_rewards import (
    HPS_ARCH,
    IR_WORDS,
    aesthetic_layers,
    build_aesthetic,
    build_hps,
    build_imagereward,
    build_pickscore,
)

PROMPTS = ["a red cube on a table", "a photo of a cat", "a red cube on a table", "two blue spheres"]


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """Overrides conftest's autouse Prefect server for this module only: rewards never touch Prefect,
    and starting its server costs more than all of these tests together."""
    yield


def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    sizes = [(48, 32), (32, 56), (40, 40), (70, 37)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


def check_scores(scores: np.ndarray, n: int) -> None:
    assert isinstance(scores, np.ndarray) and scores.shape == (n,) and np.isfinite(scores).all()


def test_all_kinds_registered() -> None:
    from synrank.registry import import_all

    import_all("models.rewards")
    assert {"clipscore", "hpsv2", "hpsv2.1", "pickscore", "aesthetic", "imagereward", "mps", "vqascore"} <= set(
        REWARDS.names()
    )


# -- shared preprocessing ----------------------------------------------------------------------


def test_crop_pipeline_equals_open_clip_transform(tmp_path: Path) -> None:
    import open_clip

    from tests.fixtures.tiny_models import build_tiny_clip

    model, _, transform = open_clip.create_model_and_transforms(f"local-dir:{build_tiny_clip(tmp_path / 'c')}")
    ours = from_open_clip(model)(images())
    theirs = torch.stack([transform(im) for im in images()])
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_pad_pipeline_centres_the_whole_image() -> None:
    pre = ClipPreprocess(size=28, fit="pad")
    wide = pre.fit_image(Image.new("RGB", (60, 20), (200, 100, 50)))  # -> 28 x round(9.33) = 9 rows
    rows = np.asarray(wide)[:, 14, 0]
    assert (rows[:9] == 0).all() and (rows[9:18] == 200).all() and (rows[18:] == 0).all()  # 19 = 9 + 10
    tall = np.asarray(pre.fit_image(Image.new("RGB", (10, 40), (255, 255, 255))))[14, :, 1]
    assert (tall[:10] == 0).all() and (tall[10:17] == 255).all() and (tall[17:] == 0).all()  # 7 wide, 21 = 10 + 11
    pixels = pre([Image.new("RGB", (60, 20), (200, 100, 50))])[0]
    pad = [(0 - m) / s for m, s in zip(OPENAI_MEAN, OPENAI_STD)]
    torch.testing.assert_close(pixels[:, 0, 0], torch.tensor(pad))
    torch.testing.assert_close(pixels[0, 12, 5], torch.tensor((200 / 255 - OPENAI_MEAN[0]) / OPENAI_STD[0]))


# -- HPS v2 / v2.1 -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hps_specs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, RewardSpec]:
    root = tmp_path_factory.mktemp("hps")
    return {
        "hpsv2.1": build_hps(root, "hpsv2.1", wrapped=True),  # the released {'state_dict': ...}
        "hpsv2": build_hps(root, "hpsv2", wrapped=False),
    }  # a bare state_dict, same weights


@pytest.mark.parametrize("kind", ["hpsv2.1", "hpsv2"])
def test_hps_loads_checkpoint_and_scores_plain_cosine(hps_specs, kind: str) -> None:
    import open_clip

    reward = load_reward(hps_specs[kind])
    torch.manual_seed(1)
    for key, value in open_clip.CLIP(**HPS_ARCH).state_dict().items():  # the weights build_hps saved
        assert torch.equal(reward.model.state_dict()[key], value), key
    assert reward.preprocess.fit == "pad" and reward.preprocess.size == 28
    scores = reward.score(images(), PROMPTS)
    check_scores(scores, 4)
    with torch.no_grad():
        img = reward.model.encode_image(reward.preprocess(images()))
        txt = reward.model.encode_text(reward.tokenizer(PROMPTS))
    cos = torch.nn.functional.cosine_similarity(img, txt).numpy()
    np.testing.assert_allclose(scores, cos, rtol=1e-5, atol=1e-6)  # no logit scale, no x100
    one_by_one = np.concatenate([reward.score([im], [p]) for im, p in zip(images(), PROMPTS)])
    np.testing.assert_allclose(scores, one_by_one, rtol=1e-5, atol=1e-6)


def test_hps_wrong_architecture_names_the_real_one(hps_specs, tmp_path: Path) -> None:
    from tests.fixtures.tiny_models import build_tiny_clip

    spec = hps_specs["hpsv2"].model_copy(update={"arch": f"local-dir:{build_tiny_clip(tmp_path / 'c')}"})
    with pytest.raises(ValueError, match="ViT-H-14"):
        load_reward(spec)


# -- PickScore ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pickscore(tmp_path_factory: pytest.TempPathFactory):
    from transformers import AutoProcessor

    spec = build_pickscore(tmp_path_factory.mktemp("pick"), logit_scale=100.0)
    return load_reward(spec), AutoProcessor.from_pretrained(spec.pretrained)


def test_pickscore_is_logit_scale_times_cosine(pickscore) -> None:
    reward, processor = pickscore
    scores = reward.score(images(), PROMPTS)
    check_scores(scores, 4)
    with torch.no_grad():
        img = reward.model.get_image_features(pixel_values=reward.preprocess(images())).pooler_output
        txt = reward.model.get_text_features(
            **processor.tokenizer(PROMPTS, padding=True, return_tensors="pt")
        ).pooler_output
    expected = 100.0 * torch.nn.functional.cosine_similarity(img, txt).numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)


def test_pickscore_pixels_match_the_clip_image_processor(pickscore) -> None:
    reward, processor = pickscore
    ours = reward.preprocess(images())
    theirs = processor(images=images(), return_tensors="pt")["pixel_values"]
    assert ours.shape == theirs.shape
    diff = (ours - theirs).abs()
    assert diff.mean() < 1e-3 and diff.max() < 0.05  # at most one uint8 level of resampling round-off


# -- LAION aesthetic predictor ------------------------------------------------------------------


def test_aesthetic_equals_manual_mlp_on_normalized_embedding(tmp_path: Path) -> None:
    spec = build_aesthetic(tmp_path)  # CLIP embed_dim 32
    state = torch.load(spec.pretrained, weights_only=True)
    assert sorted(state) == sorted(f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias"))
    reward = load_reward(spec)
    scores = reward.score(images(), PROMPTS)
    check_scores(scores, 4)
    with torch.no_grad():
        x = torch.nn.functional.normalize(reward.clip.encode_image(reward.preprocess(images())), dim=-1)
        for i in (0, 2, 4, 6, 7):  # affine layers, no activations
            x = x @ state[f"layers.{i}.weight"].T + state[f"layers.{i}.bias"]
    np.testing.assert_allclose(scores, x.squeeze(-1).numpy(), rtol=1e-5, atol=1e-6)

    torch.save(aesthetic_layers(768).state_dict(), tmp_path / "real-width.pth")
    with pytest.raises(ValueError, match="768"):
        load_reward(spec.model_copy(update={"pretrained": str(tmp_path / "real-width.pth")}))


# -- ImageReward --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def imagereward(tmp_path_factory: pytest.TempPathFactory):
    spec = build_imagereward(tmp_path_factory.mktemp("imagereward"))
    return load_reward(spec), torch.load(Path(spec.arch) / "ImageReward.pt", weights_only=True)


def test_imagereward_consumes_every_checkpoint_key(imagereward) -> None:
    from models.rewards.imagereward import remap_imagereward

    reward, state = imagereward
    assert sorted(reward.skipped) == [
        "blip.text_encoder.embeddings.position_ids",
        "blip.text_proj.bias",
        "blip.text_proj.weight",
        "blip.vision_proj.bias",
        "blip.vision_proj.weight",
    ]
    mapped, _ = remap_imagereward(state)
    loaded = reward.model.state_dict()
    assert set(mapped) == set(loaded)  # nothing missing, nothing left over
    for key, value in mapped.items():
        assert torch.equal(loaded[key], value), key
    assert reward.preprocess.size == 32 and reward.preprocess.fit == "crop"


def test_imagereward_normalization_truncation_and_padding(imagereward) -> None:
    from models.rewards.imagereward import MAX_TOKENS, MEAN, STD

    reward, _ = imagereward
    assert (MEAN, STD, MAX_TOKENS) == (0.16717362830052426, 1.0333394966054072, 35)
    scores = reward.score(images(), PROMPTS)
    check_scores(scores, 4)
    # A constant head isolates the normalization: every score is (b - mean) / std.
    constant = copy.deepcopy(reward)
    with torch.no_grad():
        for p in constant.model.mlp.parameters():
            p.zero_()
        constant.model.mlp.layers[7].bias.fill_(1.5)
    np.testing.assert_allclose(constant.score(images(), PROMPTS), (1.5 - MEAN) / STD, rtol=1e-6)
    # 35 tokens = [CLS] + 33 words + [SEP]: a difference after word 33 is cut off, one before is not
    # (which also shows [CLS] attends to later tokens: the text encoder runs bidirectionally).
    base, pair = ["cat"] * 33, [images()[0]] * 2
    same = reward.score(pair, [" ".join(base + ["dog"] * 5), " ".join(base + ["red"] * 9)])
    assert same[0] == pytest.approx(same[1], abs=1e-6)
    differ = reward.score(pair, [" ".join(["dog"] + base), " ".join(["red"] + base)])
    assert abs(differ[0] - differ[1]) > 1e-6
    # Padding a short prompt (batched with a long one) leaves its score unchanged.
    alone = reward.score(images()[:1], ["a cat"])
    padded = reward.score(images()[:2], ["a cat", " ".join(IR_WORDS)])
    assert alone[0] == pytest.approx(padded[0], abs=1e-5)


# -- optional packages -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind,extra", [("mps", "Kwai-Kolors/MPS repository"), ("vqascore", "pip install t2v-metrics")])
def test_optional_reward_names_what_to_install(kind: str, extra: str) -> None:
    from models.rewards.optional import MissingRewardPackage

    with pytest.raises(MissingRewardPackage, match=rf"reward kind '{kind}' needs .*{re.escape(extra)}"):
        load_reward(RewardSpec(name=kind, kind=kind))


LONG = " ".join(["a"] * 90)  # 90 words of one token each under CLIP's BPE: 15 past the 75 CLIP reads


def test_text_windows_count_content_tokens_against_each_encoder(pickscore, imagereward, tmp_path: Path) -> None:
    from models.rewards import text_window
    from tests.fixtures.tiny_models import build_tiny_clip

    clip = load_reward(RewardSpec(name="clip", arch=f"local-dir:{build_tiny_clip(tmp_path / 'clip', seed=3)}"))
    assert text_window(clip, ["a red circle", LONG]) == ([3, 90], 75)
    # The transformers tokenizers: content tokens = the full encoding minus its two special tokens.
    for reward, limit in ((pickscore[0], 77), (imagereward[0], 35)):
        counts, budget = text_window(reward, ["a red circle", LONG])
        assert budget == limit - 2
        assert counts == [len(reward.tokenizer(p)["input_ids"]) - 2 for p in ("a red circle", LONG)]
    assert text_window(load_reward(RewardSpec(name="det", kind="shapes-detector")), [LONG]) is None


def test_score_stage_counts_the_prompts_each_reward_cuts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import pandas as pd

    import models.rewards
    from flows.score import report_cuts
    from synrank.stage import Stage
    from tasks.score import prompt_cuts
    from tests.fixtures.tiny_models import build_tiny_clip

    clip = RewardSpec(name="clip", arch=f"local-dir:{build_tiny_clip(tmp_path / 'clip', seed=3)}")
    det = RewardSpec(name="det", kind="shapes-detector")
    manifest = pd.DataFrame({"prompt": ["a red circle", LONG, "a red circle", LONG]})
    cuts = {s.name: prompt_cuts(s, manifest, str(tmp_path / "scores")) for s in (clip, det)}
    assert cuts == {
        "clip": {"max_tokens": 75, "n_prompts": 2, "n_cut": 1, "tokens_cut": 15, "longest": 90},
        "det": {"max_tokens": None, "n_prompts": 2, "n_cut": 0, "tokens_cut": 0, "longest": 0},
    }
    monkeypatch.setattr(models.rewards, "load_reward", lambda *a, **k: pytest.fail("the count is cached"))
    assert prompt_cuts(clip, manifest, str(tmp_path / "scores")) == cuts["clip"]
    st = Stage("score", tmp_path, "fp", up_to_date=False)
    report_cuts(st, cuts)
    assert st.report["prompt_cuts"] == cuts
    assert (st.metrics["cut_prompts_clip"], st.metrics["cut_tokens_clip"], st.metrics["cut_prompts_det"]) == (1, 15, 0)
    assert capsys.readouterr().out == (
        "prompts cut by the rewards' text encoders (scored without their end): "
        "clip: 1 of 2 over 75 tokens, 15 tokens cut\n"
    )
