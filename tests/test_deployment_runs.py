"""A run from the Prefect UI or API whose settings differ from its deployment's (params.yaml as deployed) is an
experiment: its outputs go to paths.runs/<flow run name>/, the workspace's DVC outputs are left alone
(synrank.deployment_params). The browser test does it through the UI; these check the rule itself."""

from __future__ import annotations

from typing import Any

import pytest

import synrank.deployment_params as dp
from synrank.config import Config, Paths, flow_parameters

CFG = Config()


def deployed(stage: str, cfg: Config = CFG) -> dict[str, Any]:
    """A deployment's default parameters as cli.deploy makes them (JSON)."""
    return {k: v.model_dump(mode="json") for k, v in flow_parameters(stage, cfg).items()}


@pytest.fixture
def in_deployment_run(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Stands in for the Prefect lookup: this process is flow run 'calm-otter' of a deployment whose
    defaults are `holder["params"]`."""
    holder: dict[str, Any] = {}
    monkeypatch.setattr(dp, "deployment_of_this_run", lambda: (holder["params"], "calm-otter"))
    return holder


def test_changed_settings_are_named_by_their_dotted_keys() -> None:
    run = {"train": {"steps": 8, "beta": 5.0, "timestep_range": [0, 1]}, "generate": {"seed": 1}}
    dep = {"train": {"steps": 12, "beta": 5.0, "timestep_range": [0, 0.5]}, "generate": {"seed": 1}}
    assert dp.changed_settings(run, dep) == ["train.steps", "train.timestep_range"]
    assert dp.changed_settings(dep, dep) == []


def test_a_train_run_with_other_steps_writes_its_own_folder(
    in_deployment_run: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    in_deployment_run["params"] = deployed("train")
    cfg = CFG.train.model_copy(update={"steps": CFG.train.steps + 4})
    cfg, paths = dp.stage_deployment_run("train", cfg, CFG.paths, generate=CFG.generate)
    assert paths.model == "outputs/runs/calm-otter/model"
    assert paths.model_dump(exclude={"model"}) == CFG.paths.model_dump(exclude={"model"})  # inputs as deployed
    said = capsys.readouterr().out
    assert "differ from the deployment's (params.yaml): train.steps. This run is an experiment" in said
    assert str(paths.resolve("model")) in said


def test_a_run_with_the_deployed_settings_writes_the_workspace(in_deployment_run: dict[str, Any]) -> None:
    in_deployment_run["params"] = deployed("evaluate")
    other_experiment = {**in_deployment_run["params"]["tracking"], "experiment": "elsewhere"}
    in_deployment_run["params"]["tracking"] = other_experiment  # where runs are logged is not a setting
    _, paths = dp.stage_deployment_run("evaluate", CFG.evaluate, CFG.paths, rewards=CFG.score, generate=CFG.generate)
    assert paths == CFG.paths


def test_a_run_that_names_its_own_output_folder_keeps_it(in_deployment_run: dict[str, Any]) -> None:
    in_deployment_run["params"] = deployed("rank")
    mine = CFG.paths.model_copy(update={"rankings": "/tmp/my-rankings"})
    _, paths = dp.stage_deployment_run("rank", CFG.rank.model_copy(update={"examples": 7}), mine)
    assert paths == mine


def test_a_partial_parameter_is_completed_before_it_is_compared(in_deployment_run: dict[str, Any]) -> None:
    in_deployment_run["params"] = deployed(
        "sample", CFG.model_copy(update={"sample": CFG.sample.model_copy(update={"seed": 9})})
    )
    partial = type(CFG.sample).model_validate({"eval_fraction": CFG.sample.eval_fraction})  # the same value
    cfg, paths = dp.stage_deployment_run("sample", partial, CFG.paths)
    assert cfg.seed == 9 and paths == CFG.paths  # seed from the deployment, nothing changed


def test_a_pipeline_run_moves_the_first_changed_stage_and_all_after_it(in_deployment_run: dict[str, Any]) -> None:
    in_deployment_run["params"] = deployed("pipeline")
    cfg = CFG.model_copy(update={"rank": CFG.rank.model_copy(update={"method": "zscore"})})
    got = dp.pipeline_deployment_run(cfg, ["sample", "generate", "score", "rank", "train", "evaluate"]).paths
    moved = {f: f"outputs/runs/calm-otter/{f}" for f in ("rankings", "model", "eval", "metrics")}
    assert got == Paths(**{**CFG.paths.model_dump(), **moved})  # prompts, images, scores: the workspace's


def test_outside_a_deployment_run_nothing_changes() -> None:
    cfg = CFG.train.model_copy(update={"steps": 1})
    assert dp.stage_deployment_run("train", cfg, CFG.paths, generate=CFG.generate) == (cfg, CFG.paths)
