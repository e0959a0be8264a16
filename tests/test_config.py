"""One typed config: params.yaml validates, overrides apply, bad keys and values fail by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from synrank.cli import main
from synrank.config import PARAMS_FILE, ConfigError, dump_params, load_config


def test_committed_params_validate_and_round_trip(tmp_path: Path) -> None:
    cfg = load_config(PARAMS_FILE)
    assert [g.name for g in cfg.generate.generators] == [f"shapes-sd-{s}" for s in ("xs", "s", "m", "l")]
    assert all(Path(g.path).parent.name == "zoo" for g in cfg.generate.generators)
    assert cfg.train.objective == "rankdpo"
    again = tmp_path / "params.yaml"
    again.write_text(dump_params(cfg))
    assert load_config(again) == cfg


def test_overrides_reach_nested_keys_and_list_items() -> None:
    cfg = load_config(PARAMS_FILE, ["train.beta=5000", "generate.generators.1.steps=3", "sample.seed=7",
                                    "evaluate.max_prompts=null"])
    assert cfg.train.beta == 5000.0
    assert cfg.generate.generators[1].steps == 3
    assert cfg.sample.seed == 7
    assert cfg.evaluate.max_prompts is None


@pytest.mark.parametrize("override, message", [
    ("train.betaa=1", "unknown key 'train.betaa'"),
    ("trian.beta=1", "unknown key 'trian'"),
    ("train.beta=abc", "bad value for 'train.beta'"),
    ("train.steps=0", "bad value for 'train.steps'"),
    ("generate.generators.0.stepz=3", "unknown key 'generate.generators.0.stepz'"),
    ("generate.generators.9.steps=3", "unknown key 'generate.generators.9'"),
    ("train.beta", "not of the form key=value"),
])
def test_bad_overrides_are_rejected_by_name(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(PARAMS_FILE, [override])


def test_bad_params_file(tmp_path: Path) -> None:
    bad = tmp_path / "params.yaml"
    data = yaml.safe_load(PARAMS_FILE.read_text())
    data["score"]["rewards"][0]["archh"] = "x"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="unknown key 'score.rewards.0.archh'"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_cli_rejects_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Exit code 2, one line naming the key, and nothing written (outputs pointed into tmp_path)."""
    code = main(["train", "--set", f"paths.model={tmp_path}/model", "--set", "train.lora_rank=-1"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "train.lora_rank" in err
    assert list(tmp_path.iterdir()) == []
