"""Weights load from safetensors unless a model's spec sets `allow_pickle`: a pickled file (.bin/.pt/.pth/
.ckpt) can run code when it is loaded. Generators (pipeline folders, LoRA, the trainer's load), open_clip
rewards (local-dir:, checkpoint files), PickScore's transformers folder and the state_dict rewards (HPS,
ImageReward) are refused with a message naming the file and `allow_pickle`, and load with it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from models.generators import load_generator
from models.generators.base import PickleWeightsError, pickle_weight_files
from models.rewards import load_reward
from synrank.config import GeneratorSpec, RewardSpec, TrainConfig
from tests.fixtures.tiny_models import build_tiny_clip, build_tiny_sd

# The names the loaders look for when a folder has no safetensors file.
PICKLE_NAMES = {"model.safetensors": "pytorch_model.bin", "open_clip_model.safetensors": "open_clip_pytorch_model.bin"}


def pickle_weights(folder: Path) -> Path:
    """Every .safetensors file under `folder` replaced by the torch.save'd (pickle) file of the same tensors."""
    for file in sorted(folder.rglob("*.safetensors")):
        target = file.with_name(PICKLE_NAMES.get(file.name, file.with_suffix(".bin").name))
        torch.save(load_file(file), target)
        file.unlink()
    return folder


def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(2)]


def test_pickle_weight_files_lists_only_the_pickles_a_loader_could_read(tmp_path: Path) -> None:
    for name in (
        "unet/w.bin",
        "unet/w.safetensors",
        "vae/w.bin",
        "model.ckpt",
        "scheduler/config.json",
        "x.pt",
        "cache/groups.pt",
        "checkpoints/optimizer.bin",
    ):  # no loader reads the last two
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert pickle_weight_files(tmp_path) == [tmp_path / "model.ckpt", tmp_path / "x.pt"]  # not a pipeline
    (tmp_path / "model_index.json").write_text(
        '{"_class_name": "P", "unet": ["diffusers", "U"], "vae": ["diffusers", "V"], "scheduler": ["diffusers", "S"]}'
    )
    assert pickle_weight_files(tmp_path) == [tmp_path / "model.ckpt", tmp_path / "x.pt", tmp_path / "vae" / "w.bin"]
    assert pickle_weight_files(tmp_path / "x.pt") == [tmp_path / "x.pt"]
    assert pickle_weight_files(tmp_path / "unet" / "w.safetensors") == []
    assert pickle_weight_files("org/hub-model") == []  # not local: use_safetensors=True covers it


# -- generators ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(safetensors pipeline, the same pipeline with pickled weights)."""
    safe = build_tiny_sd(tmp_path_factory.mktemp("sd") / "sd", seed=5, channels=(16, 32))
    pickled = tmp_path_factory.mktemp("sd-pickle") / "sd"
    shutil.copytree(safe, pickled)
    return safe, pickle_weights(pickled)


def test_a_generator_with_pickled_weights_is_refused_unless_allowed(tiny_sd: tuple[Path, Path]) -> None:
    safe, pickled = tiny_sd
    spec = GeneratorSpec(name="tiny", path=str(pickled), steps=2, height=32, width=32)
    with pytest.raises(
        PickleWeightsError,
        match=r"generator 'tiny': '.*text_encoder/pytorch_model\.bin' is a "
        r"pickle file.*set allow_pickle: true on this generator",
    ):
        load_generator(spec)
    allowed = load_generator(spec.model_copy(update={"allow_pickle": True})).generate(["a red circle"], [3])
    reference = load_generator(spec.model_copy(update={"path": str(safe)})).generate(["a red circle"], [3])
    assert np.array_equal(np.asarray(allowed[0]), np.asarray(reference[0]))  # the same weights, loaded


def test_the_trainer_refuses_pickled_weights_too(tiny_sd: tuple[Path, Path]) -> None:
    from models.trainer import load_for_training

    spec = GeneratorSpec(name="tiny", steps=20, path=str(tiny_sd[1]), height=32, width=32)
    with pytest.raises(PickleWeightsError, match="allow_pickle"):
        load_for_training(spec, TrainConfig(lora_rank=2), "cpu")
    _, model, _ = load_for_training(spec.model_copy(update={"allow_pickle": True}), TrainConfig(lora_rank=2), "cpu")
    assert any(p.requires_grad for p in model.parameters())


def test_a_pickled_lora_is_refused_unless_allowed(tiny_sd: tuple[Path, Path], tmp_path: Path) -> None:
    from tests.fixtures.tiny_pipelines import build_tiny_lora

    lora = pickle_weights(build_tiny_lora(tiny_sd[0], tmp_path / "lora"))
    spec = GeneratorSpec(name="tiny", path=str(tiny_sd[0]), steps=2, height=32, width=32, lora=str(lora))
    with pytest.raises(PickleWeightsError, match=r"'.*pytorch_lora_weights\.bin' is a pickle file.*allow_pickle"):
        load_generator(spec)
    assert load_generator(spec.model_copy(update={"allow_pickle": True})).generate(["a star"], [1])[0].size == (32, 32)


# -- rewards ---------------------------------------------------------------------------------------------


def test_an_open_clip_folder_with_a_pickled_checkpoint_is_refused_unless_allowed(tmp_path: Path) -> None:
    import open_clip.factory

    reader = open_clip.factory.load_state_dict
    folder = pickle_weights(build_tiny_clip(tmp_path / "clip"))
    spec = RewardSpec(name="clip", kind="clipscore", arch=f"local-dir:{folder}")
    with pytest.raises(
        PickleWeightsError,
        match=r"reward 'clip': '.*open_clip_pytorch_model\.bin' is a pickle file"
        r".*allow_pickle: true on this reward",
    ):
        load_reward(spec)
    assert open_clip.factory.load_state_dict is reader  # the guard is lifted again
    scores = load_reward(spec.model_copy(update={"allow_pickle": True})).score(images(), ["a red circle"] * 2)
    assert np.isfinite(scores).all()


def test_hps_loads_a_pickle_only_when_allowed_and_a_safetensors_file_always(tmp_path: Path) -> None:
    from models.rewards.loading import load_state_dict_file
    from tests.fixtures.tiny_rewards import build_hps

    spec = build_hps(tmp_path / "hps")  # the released format, a torch.save'd {'state_dict': ...}
    assert spec.allow_pickle
    with pytest.raises(PickleWeightsError, match=r"reward 'hpsv2': '.*HPS_compressed\.pt' is a pickle.*allow_pickle"):
        load_reward(spec.model_copy(update={"allow_pickle": False}))
    expected = load_reward(spec).score(images(), ["a cat", "a dog"])
    converted = tmp_path / "HPS.safetensors"
    save_file(load_state_dict_file(spec.pretrained, "hps", allow_pickle=True), str(converted))
    safe = spec.model_copy(update={"allow_pickle": False, "pretrained": str(converted)})
    np.testing.assert_allclose(load_reward(safe).score(images(), ["a cat", "a dog"]), expected, rtol=1e-6)


def test_pickscore_with_a_pickled_model_folder_is_refused_unless_allowed(tmp_path: Path) -> None:
    from tests.fixtures.tiny_rewards import build_pickscore

    spec = build_pickscore(tmp_path / "pick")
    pickle_weights(Path(spec.arch))
    with pytest.raises(PickleWeightsError, match=r"'.*model/pytorch_model\.bin' is a pickle.*allow_pickle"):
        load_reward(spec)
    assert np.isfinite(load_reward(spec.model_copy(update={"allow_pickle": True})).score(images(), ["a", "b"])).all()


def test_imagereward_prefers_a_safetensors_checkpoint_in_its_folder(tmp_path: Path) -> None:
    from models.rewards.loading import load_state_dict_file
    from tests.fixtures.tiny_rewards import build_imagereward

    spec = build_imagereward(tmp_path / "ir")
    refused = spec.model_copy(update={"allow_pickle": False})
    with pytest.raises(PickleWeightsError, match=r"'.*ImageReward\.pt' is a pickle.*allow_pickle"):
        load_reward(refused)
    state = load_state_dict_file(str(tmp_path / "ir" / "ImageReward.pt"), "ir", allow_pickle=True)
    save_file(state, str(tmp_path / "ir" / "ImageReward.safetensors"))
    assert np.isfinite(load_reward(refused).score(images(), ["a red cube", "a cat"])).all()
