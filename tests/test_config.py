"""One typed config: params.yaml validates, overrides apply, bad keys and values fail by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cli.main import main
from synrank.config import PARAMS_FILE, ConfigError, load_config, params_yaml


def test_committed_params_validate_and_round_trip(tmp_path: Path) -> None:
    cfg = load_config(PARAMS_FILE)
    assert [g.name for g in cfg.generate.generators] == [f"shapes-sd-{s}" for s in ("xs", "s", "m", "l")]
    assert all(Path(g.path).parent.name == "zoo" for g in cfg.generate.generators)
    assert cfg.train.objective == "rankdpo"
    again = tmp_path / "params.yaml"
    again.write_text(params_yaml(cfg))
    assert load_config(again) == cfg


def test_overrides_reach_nested_keys_and_list_items() -> None:
    cfg = load_config(
        PARAMS_FILE, ["train.beta=5000", "generate.generators.1.steps=3", "sample.seed=7", "evaluate.max_prompts=null"]
    )
    assert cfg.train.beta == 5000.0
    assert cfg.generate.generators[1].steps == 3
    assert cfg.sample.seed == 7
    assert cfg.evaluate.max_prompts is None


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.betaa=1", "unknown key 'train.betaa'"),
        ("trian.beta=1", "unknown key 'trian'"),
        ("train.beta=abc", "bad value for 'train.beta'"),
        ("train.steps=0", "bad value for 'train.steps'"),
        ("generate.generators.0.stepz=3", "unknown key 'generate.generators.0.stepz'"),
        ("generate.generators.9.steps=3", "unknown key 'generate.generators.9'"),
        ("train.beta", "not of the form key=value"),
    ],
)
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


def test_overrides_parse_as_the_field_expects() -> None:
    """String fields keep the text (YAML 1.1 would read `no` as False, `123` as an int); other fields
    are YAML: numbers, null, lists."""
    cfg = load_config(
        PARAMS_FILE,
        [
            "train.mixed_precision=no",
            "generate.generators.1.name=123",
            "train.base=123",
            "generate.generators.0.name=off",
            "train.beta=5000",
            "evaluate.max_prompts=null",
            "rank.rewards=[clip-p4, detector]",
            "evaluate.benchmarks=[geneval-shapes]",
            "score.rewards.0.arch='local-dir:zoo/shapes-clip-p4'",
        ],
    )
    assert cfg.train.mixed_precision == "no"
    assert cfg.train.base == "123" and cfg.generate.generators[1].name == "123"
    assert cfg.generate.generators[0].name == "off"
    assert cfg.train.beta == 5000.0 and isinstance(cfg.train.beta, float)
    assert cfg.evaluate.max_prompts is None
    assert cfg.rank.rewards == ["clip-p4", "detector"] and cfg.evaluate.benchmarks == ["geneval-shapes"]
    assert cfg.score.rewards[0].arch == "local-dir:zoo/shapes-clip-p4"


def test_override_values_by_field_type() -> None:
    from synrank.config import parse_override

    assert parse_override("train.mixed_precision=no") == (["train", "mixed_precision"], "no")
    assert parse_override("train.base=[") == (["train", "base"], "[")  # a string field takes any text
    assert parse_override("rank.rewards=[no, 1]")[1] == ["no", "1"]
    assert parse_override("evaluate.benchmarks=[no, 1]")[1] == ["no", "1"]  # plugin names are text too
    assert parse_override("train.objective=no")[1] == "no"
    assert parse_override("train.gradient_checkpointing=no")[1] is False  # a bool field: YAML's bool
    assert parse_override("sample.sources.0.limit=null")[1] is None
    assert parse_override("generate.generators.0.steps=3")[1] == 3
    assert parse_override("train.nosuchkey=no")[1] is False  # unknown: YAML, and validation names the key
    with pytest.raises(ConfigError, match=r"bad value for 'train.beta': '\[' is not valid YAML"):
        parse_override("train.beta=[")


def test_prefect_env_keeps_state_in_the_project_unless_told_otherwise() -> None:
    from cli.main import EPHEMERAL_TIMEOUT_ENV, prefect_env
    from synrank.config import ROOT

    offline = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    assert prefect_env({}) == {"PREFECT_HOME": str(ROOT / ".prefect"), EPHEMERAL_TIMEOUT_ENV: "120", **offline}
    assert prefect_env({"PREFECT_HOME": "/x", EPHEMERAL_TIMEOUT_ENV: "5", **offline}) == {}
    # With `make up` the server is elsewhere: Prefect's home is the user's business.
    assert prefect_env({"PREFECT_API_URL": "http://127.0.0.1:4200/api"}) == {EPHEMERAL_TIMEOUT_ENV: "120", **offline}
    # The env var is the one Prefect 3 reads for server.ephemeral.startup_timeout_seconds.
    from prefect.settings import Settings

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(EPHEMERAL_TIMEOUT_ENV, "120")
        assert Settings().server.ephemeral.startup_timeout_seconds == 120


def test_dvc_is_the_one_beside_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`.venv/bin/synrank data` without .venv/bin on PATH still finds the venv's dvc."""
    import sys

    from models.shapes.dataset import dvc_executable

    (tmp_path / "bin").mkdir()
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(RuntimeError, match="no dvc executable"):
        dvc_executable()
    (tmp_path / "bin" / "dvc").write_text("#!/bin/sh\n")
    assert dvc_executable() == str(tmp_path / "bin" / "dvc")
    (tmp_path / "bin" / "dvc").unlink()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "dvc").write_text("#!/bin/sh\n")
    (tmp_path / "other" / "dvc").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path / "other"))
    assert dvc_executable() == str(tmp_path / "other" / "dvc")
