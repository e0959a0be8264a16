"""The shapes-world zoo: a tiny retrain through every real loading path, the detector reward and the
prompt parser."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.rewards.shapes_detector import ShapesDetectorReward, detector_score
from models.shapes import PALETTE, make_specs, render, render_wrong
from models.shapes.draw import raster
from models.shapes.render import _rebuild
from models.shapes.specs import heldout_prompts
from models.shapes_zoo.data import applicable_kinds, build_pool, to_tensor
from models.shapes_zoo.prompt_parser import parse_prompt
from synrank.config import GeneratorSpec, RewardSpec

# --- data and parser ---------------------------------------------------------------------------


def _miscounts(spec: dict) -> list[str]:
    """Every prompt a count negative of spec can have: one item's count one up or down, within 1..4."""
    out = []
    for k, item in enumerate(spec["include"]):
        for n in (item["count"] - 1, item["count"] + 1):
            if 1 <= n <= 4:
                new = copy.deepcopy(spec)
                new["include"][k]["count"] = n
                out.append(_rebuild(new)["prompt"])
    return out


def test_pool_is_seeded_and_carries_valid_negatives() -> None:
    a, b = build_pool(24, 5, ("count", "relation")), build_pool(24, 5, ("count", "relation"))
    assert a is b  # memoised
    c = build_pool.__wrapped__(24, 5, ("count", "relation"))
    assert np.array_equal(a.images, c.images) and a.captions == c.captions
    assert a.images.shape == (24, 32, 32, 3) and a.neg_images.shape == (24, 2, 32, 32, 3)
    # A spec can be miscounted unless every miscount is a held-out benchmark prompt.
    for spec, ok in zip(a.specs, a.neg_valid[:, 0]):
        assert ok != all(p in heldout_prompts() for p in _miscounts(spec)), spec["prompt"]
    assert a.neg_valid[:, 0].mean() > 0.8
    assert not {cap for caps in a.neg_captions for cap in caps} & heldout_prompts()
    positions = np.array([s["tag"] == "position" for s in a.specs])
    assert not (a.neg_valid[:, 1] & ~positions).any() and a.neg_valid[positions, 1].mean() > 0.5
    assert all((cap != "") == ok for caps, oks in zip(a.neg_captions, a.neg_valid) for cap, ok in zip(caps, oks))
    x = to_tensor(a.images[:2])
    assert x.shape == (2, 3, 32, 32) and -1.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_parser_inverts_the_grammar() -> None:
    rng = np.random.default_rng(0)
    for spec in make_specs(60, 3, "train") + make_specs(60, 3, "eval") + make_specs(20, 3, "probe"):
        parsed = parse_prompt(spec["prompt"])
        assert parsed == spec if spec["tag"] != "novel_binding" else parsed["include"] == spec["include"]
        for kind in applicable_kinds(spec):
            _, wrong = render_wrong(spec, kind, 32, rng, avoid_reserved=False)
            assert parse_prompt(wrong["prompt"])["include"] == wrong["include"]
    assert parse_prompt("a photo of a dog") is None
    assert parse_prompt("two red circles") is None


# --- detector reward ---------------------------------------------------------------------------


def _scene(*objects: tuple[str, str, float, float]) -> np.ndarray:
    """Gray 32x32 image with (shape, color, cx, cy) objects of side 12, drawn by the renderer's rasterizer."""
    img = np.full((32, 32, 3), 60, np.uint8)
    for shape, color, cx, cy in objects:
        img[raster(shape, cx, cy, 12, 32, 32)] = PALETTE[color]
    return img


def test_detector_exact_values_on_a_hand_drawn_scene() -> None:
    red_circle = _scene(("circle", "red", 10, 16))
    assert detector_score(red_circle, "a photo of a red circle") == 1.0  # count 1/1, red present
    assert detector_score(red_circle, "a photo of a circle") == 1.0
    assert detector_score(red_circle, "a photo of two circles") == 0.5  # 1 of 2: half the count
    assert detector_score(red_circle, "a photo of a blue circle") == 0.0  # no blue circle, no blue
    assert detector_score(red_circle, "not a grammar prompt") == 0.0
    pair = _scene(("circle", "red", 8, 16), ("square", "blue", 24, 16))
    assert detector_score(pair, "a photo of a red circle left of a blue square") == 1.0
    # count, count, both colors present, relation wrong: 4 of 5 requirements
    assert detector_score(pair, "a photo of a red circle right of a blue square") == pytest.approx(0.8)


def test_detector_prefers_correct_renders_through_the_registry() -> None:
    from models.rewards import load_reward

    reward = load_reward(RewardSpec(name="det", kind="shapes-detector"))
    assert isinstance(reward, ShapesDetectorReward)
    rng = np.random.default_rng(7)
    wins = []
    for spec in make_specs(24, 11, "eval"):
        good = render(spec, 32, rng)
        bads = [render_wrong(spec, k, 32, rng, avoid_reserved=False)[0] for k in applicable_kinds(spec)]
        from PIL import Image

        s = reward.score([Image.fromarray(im) for im in [good, *bads]], [spec["prompt"]] * (1 + len(bads)))
        wins += list(s[0] > s[1:])
    assert np.mean(wins) > 0.75


# --- tiny retrain through the real loading paths ------------------------------------------------


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from models.shapes_zoo.build import build_zoo

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("zoo")
        return out, build_zoo(out, scale=0.003, seed=0, eval_per_task=1, images_per_prompt=1)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_tiny_zoo_summary_and_cards(tiny_zoo: tuple[Path, dict]) -> None:
    out, summary = tiny_zoo
    assert [g["name"] for g in summary["generators"]] == ["shapes-sd-xs", "shapes-sd-s", "shapes-sd-m", "shapes-sd-l"]
    assert len([r for r in summary["rewards"] if "bytes" in r]) == 3
    assert json.loads((out / "zoo.json").read_text())["bytes"] == summary["bytes"]
    for entry in summary["generators"]:
        s = entry["geneval"]["overall"]
        assert 0.0 <= s["accuracy"] <= 1.0 and s["n"] == 6
        assert "GenEval-shapes" in (out / entry["name"] / "MODEL_CARD.md").read_text()
    for entry in summary["rewards"]:
        assert 0.0 <= entry["agreement"]["rendered"]["agreement"] <= 1.0
    assert summary["bytes"] < 30e6


@pytest.mark.slow
def test_tiny_zoo_generators_load_through_diffusers_and_the_backend(tiny_zoo: tuple[Path, dict]) -> None:
    from diffusers import DiffusionPipeline, StableDiffusionPipeline
    from safetensors import safe_open

    from models.generators import load_generator

    out, summary = tiny_zoo
    folder = out / summary["generators"][0]["name"]
    with safe_open(str(folder / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.float16  # stored small
    pipe = DiffusionPipeline.from_pretrained(str(folder))  # no dtype: every module must still agree
    assert isinstance(pipe, StableDiffusionPipeline)
    assert {m.dtype for m in (pipe.unet, pipe.vae, pipe.text_encoder)} == {torch.float32}
    for entry in summary["generators"]:
        gen = load_generator(
            GeneratorSpec(name=entry["name"], path=str(out / entry["name"]), steps=2, height=32, width=32)
        )
        prompts = ["a photo of a red circle", "a photo of two stars"]
        images = gen.generate(prompts, [0, 1])
        assert [im.size for im in images] == [(32, 32)] * 2
        assert np.array_equal(np.asarray(gen.generate(prompts, [0, 1])[0]), np.asarray(images[0]))  # seeded
        alone = np.asarray(gen.generate(prompts[:1], [0])[0]).astype(int)
        # Seeded per image: batch mates change only float rounding (batched matmuls), not the image.
        assert np.abs(alone - np.asarray(images[0]).astype(int)).max() <= 2


@pytest.mark.slow
def test_tiny_zoo_rewards_load_through_open_clip_and_the_registry(tiny_zoo: tuple[Path, dict]) -> None:
    import open_clip
    from PIL import Image

    from models.rewards import load_reward

    out, summary = tiny_zoo
    spec = make_specs(1, 0, "eval")[0]
    image = Image.fromarray(render(spec, 32, np.random.default_rng(0)))
    for entry in [r for r in summary["rewards"] if "bytes" in r]:
        folder = out / entry["name"]
        model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
        assert next(model.parameters()).dtype == torch.float32
        assert preprocess(image).shape == (3, 32, 32)
        reward = load_reward(RewardSpec(name=entry["name"], kind="clipscore", arch=f"local-dir:{folder}"))
        s = reward.score([image, image], [spec["prompt"], "a photo of four rings"])
        assert s.shape == (2,) and np.isfinite(s).all()


def test_shapes_tokenizer_splits_every_word_as_clip_does() -> None:
    from models.shapes_zoo.tokenizer import shapes_tokenizer, shapes_words
    from tests.fixtures.tiny_models import clip_tokenizer

    small, full = shapes_tokenizer(), clip_tokenizer()
    assert len(small) < 256
    for word in shapes_words():
        assert small.tokenize(word) == full.tokenize(word), word
    ids = small("a photo of two red triangles").input_ids
    assert small.convert_ids_to_tokens(ids) == full.convert_ids_to_tokens(
        full("a photo of two red triangles").input_ids
    )
    assert ids[0] == small.bos_token_id and ids[-1] == small.eos_token_id


# --- the committed zoo, as the default run uses it ---------------------------------------------


def test_committed_zoo_loads_through_the_real_model_paths() -> None:
    from PIL import Image

    from models.generators import load_generator
    from models.rewards import load_reward
    from models.shapes_zoo.train_utils import folder_bytes
    from synrank.config import ROOT, load_config

    cfg = load_config()
    summary = json.loads((ROOT / "zoo" / "zoo.json").read_text())
    assert summary["bytes"] == folder_bytes(ROOT / "zoo") <= 30e6
    prompt = "a photo of a red circle left of a blue square"
    for spec in cfg.generate.generators:
        assert (ROOT / spec.path / "MODEL_CARD.md").exists()
        gen = load_generator(spec.model_copy(update={"path": str(ROOT / spec.path), "steps": 2}))
        tok = gen.pipe.tokenizer(prompt).input_ids
        assert gen.pipe.text_encoder.config.vocab_size == len(gen.pipe.tokenizer) and max(tok) < len(gen.pipe.tokenizer)
        assert gen.pipe.tokenizer.unk_token_id not in tok[1:-1]  # every shapes word is in the vocabulary
        assert [im.size for im in gen.generate([prompt], [0])] == [(32, 32)]
    image = Image.fromarray(render(make_specs(1, 0, "eval")[0], 32, np.random.default_rng(0)))
    for spec in cfg.score.rewards:
        arch = (
            spec.arch.replace("local-dir:", f"local-dir:{ROOT}/") if spec.arch.startswith("local-dir:") else spec.arch
        )
        scores = load_reward(spec.model_copy(update={"arch": arch})).score([image], [prompt])
        assert scores.shape == (1,) and np.isfinite(scores).all()
