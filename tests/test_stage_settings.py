"""Each command reads its own settings: evaluate renders with generate's, online is checked with its own
objective and group size (the small bugs of issue 29)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from synrank.config import GenerateConfig


def test_evaluate_renders_with_the_generate_settings(monkeypatch, tmp_path: Path) -> None:
    """Issue 29's small bug: evaluate rendered with a fixed shard size of 256 on the score stage's device."""
    import pytest

    import flows.evaluate
    from synrank.cluster_config import ClusterConfig
    from synrank.config import EvaluateConfig, ScoreConfig

    seen = {}

    def record(*args, **kwargs):
        seen.update(kwargs)
        raise StopIteration

    monkeypatch.setattr(flows.evaluate, "generate_all", record)
    generate = GenerateConfig(shard_size=7, batch_size=3, device="cpu")
    rewards = ScoreConfig(device="cuda:1")
    with pytest.raises(StopIteration):
        flows.evaluate._images_and_scores(
            None, [], pd.DataFrame(), tmp_path, EvaluateConfig(), rewards, generate, ClusterConfig()
        )
    assert (seen["shard_size"], seen["batch_size"], seen["device"]) == (7, 3, "cpu")


def test_online_is_checked_with_its_own_objective_and_group_size() -> None:
    """One generator at one image per prompt cannot train RankDPO, but `synrank online` makes its own groups
    of online.images_per_prompt and trains with online.objective: the same config is valid for it."""
    import pytest

    from models.validate import load_checked_config
    from synrank.config import ConfigError

    one = [
        "generate.generators=[{name: g, path: zoo/shapes-sd-s, steps: 2, height: 32, width: 32}]",
        "generate.images_per_prompt=1",
        "train.base=g",
        "train.objective=rankdpo",
    ]
    assert load_checked_config(overrides=one, command="online").online.images_per_prompt == 4
    with pytest.raises(ConfigError, match="^bad value for 'train.objective': 'rankdpo' forms pairs"):
        load_checked_config(overrides=one, command="train")


def test_the_trainer_saves_the_denoiser_it_trained(tmp_path: Path, monkeypatch) -> None:
    """A pipeline with a `transformer` attribute that is None trains its unet; it must be saved as the unet's
    LoRA too (one test, models.trainer.denoiser_name, where there were two)."""
    from types import SimpleNamespace

    import models.trainer as trainer
    from synrank.config import GeneratorSpec, TrainConfig

    saved = {}

    class Pipe(SimpleNamespace):
        @classmethod
        def save_lora_weights(cls, out_dir, **layers):
            saved.update(layers)

    pipe = Pipe(transformer=None, unet="the unet")
    assert trainer.denoiser_name(pipe) == "unet" and trainer.denoiser_name(Pipe(transformer="t")) == "transformer"
    monkeypatch.setattr("peft.utils.get_peft_model_state_dict", lambda model: {})
    monkeypatch.setattr("diffusers.utils.convert_state_dict_to_diffusers", lambda layers: layers)
    spec = GeneratorSpec(name="g", path="zoo/shapes-sd-s", steps=2, height=32, width=32)
    trainer.save_tuned(object(), pipe, spec, TrainConfig(lora_rank=4), tmp_path)
    assert [k for k in saved if k.endswith("_lora_layers")] == ["unet_lora_layers"]
