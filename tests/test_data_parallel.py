"""Data-parallel training (issue 25): `train.processes: 2` launches two gloo processes with accelerate from the
train stage's own process, which alone holds the Prefect flow run, the MLflow run and the registry version.
The two-process run is the one-process run at the same global batch: the same groups, timesteps and noise
split between the processes, so its loss curve and LoRA match, and its logged `pairs` are the whole batch's."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load_file

from synrank.config import Config, ConfigError, load_config
from tests.test_pipeline import tiny_config

pytestmark = pytest.mark.slow  # needs a Prefect server, a subprocess or a training run


def _train(cfg: Config, processes: int, folder: str, **train: int) -> Path:
    from flows.train import train_flow

    paths = cfg.paths.model_copy(update={"model": str(Path(cfg.paths.model).parent / folder)})
    settings = {"processes": processes, "steps": 4, "prompts_per_step": 4, **train}
    train = cfg.train.model_copy(update=settings)
    return Path(train_flow(train, cfg.generate, paths, cfg.tracking))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Config, Path, Path]]:
    import torch

    from flows.generate import generate_flow
    from flows.rank import rank_flow
    from flows.sample import sample_flow
    from flows.score import score_flow

    root = tmp_path_factory.mktemp("dp")
    cfg = tiny_config(root)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each launched rank: the same kernels' summation order in both runs
    sample_flow(cfg.sample, cfg.paths, cfg.tracking)
    generate_flow(cfg.generate, paths=cfg.paths, tracking=cfg.tracking)
    score_flow(cfg.score, paths=cfg.paths, tracking=cfg.tracking)
    rank_flow(cfg.rank, cfg.paths, cfg.tracking)
    try:
        yield cfg, _train(cfg, 1, "model-1"), _train(cfg, 2, "model-2")
    finally:
        torch.set_num_threads(threads)


def test_two_processes_train_the_one_process_run(world: tuple[Config, Path, Path]) -> None:
    _, one, two = world
    c1, c2 = (pd.read_csv(m / "train_curve.csv") for m in (one, two))
    assert list(c1["step"]) == list(c2["step"]) == [1, 2, 3, 4]
    np.testing.assert_allclose(c2["loss"], c1["loss"], rtol=1e-4)
    assert list(c2["pairs"]) == list(c1["pairs"])  # the whole global batch's pairs, gathered from both
    w1, w2 = (load_file(str(m / "pytorch_lora_weights.safetensors")) for m in (one, two))
    assert sorted(w1) == sorted(w2)
    for key in w1:
        np.testing.assert_allclose(w2[key], w1[key], rtol=1e-4, atol=1e-6)
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in two.iterdir())
    # The work folders (checkpoints, job.json, curve.jsonl) are gone once the model is published.
    assert not list(two.parent.glob(".model-2-work/*"))


def test_one_flow_run_one_mlflow_run_one_version_and_its_own_stamp(world: tuple[Config, Path, Path]) -> None:
    cfg, one, two = world
    client = mlflow.MlflowClient(cfg.tracking.tracking_uri)
    exp = client.get_experiment_by_name("e2e").experiment_id
    runs = client.search_runs([exp], "tags.`synrank.stage` = 'train'")
    assert len(runs) == 2  # one per train flow, whatever its process count
    two_proc = [r for r in runs if r.data.params.get("train.processes") == "2"]
    assert len(two_proc) == 1 and len(client.get_metric_history(two_proc[0].info.run_id, "train/loss")) == 4
    # What accelerate really ran: two ranks of one job (MULTI_CPU), not two single-process jobs.
    assert {r.data.params["train.processes"]: r.data.params["effective_processes"] for r in runs} == {
        "1": "1",
        "2": "2",
    }
    assert len(client.search_model_versions("name = 'synrank-gen-a'")) == 2
    s1, s2 = (json.loads((m / "_stage.json").read_text())["fingerprint"] for m in (one, two))
    assert s1 != s2  # the process count is part of the run's identity
    assert not (Path.cwd() / "mlflow.db").exists()


def test_a_killed_rank_fails_the_stage_and_the_rerun_resumes_to_the_same_weights(
    world: tuple[Config, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import models.launch
    from models.launch import LaunchFailed

    cfg, _, uninterrupted = world
    real = models.launch.launch_command

    def rank1_dies_after_the_first_checkpoint(job_file: Path, *args: object, **kwargs: object) -> list[str]:
        cmd = real(job_file, *args, **kwargs)
        at = cmd.index("models.train_job")
        return [*cmd[:at], "tests.kill_rank", "1", "models.trainer:save_checkpoint", "1", *cmd[at:]]

    monkeypatch.setattr(models.launch, "launch_command", rank1_dies_after_the_first_checkpoint)
    with pytest.raises(LaunchFailed, match="a process of the 2-process launch exited with status"):
        _train(cfg, 2, "model-k", checkpoint_every=2)
    out = Path(cfg.paths.model).parent / "model-k"
    assert not (out / "_stage.json").exists() and not (out / "pytorch_lora_weights.safetensors").exists()
    assert len(list(out.parent.glob(".model-k-work/*/checkpoints/step-0000002"))) == 1
    monkeypatch.setattr(models.launch, "launch_command", real)
    resumed = _train(cfg, 2, "model-k", checkpoint_every=2)
    w0, w1 = (load_file(str(m / "pytorch_lora_weights.safetensors")) for m in (uninterrupted, resumed))
    for key in w0:
        np.testing.assert_allclose(w1[key], w0[key], rtol=1e-5, atol=1e-7)
    client = mlflow.MlflowClient(cfg.tracking.tracking_uri)
    exp = client.get_experiment_by_name("e2e").experiment_id
    statuses = sorted(r.info.status for r in client.search_runs([exp], "params.`train.checkpoint_every` = '2'"))
    assert statuses == ["FAILED", "FINISHED"]


def test_a_checkpoint_of_another_process_count_is_refused(tmp_path: Path) -> None:
    import torch

    from models.checkpoints import CheckpointMismatch, resume

    ckpt = tmp_path / "step-0000002"
    ckpt.mkdir()
    (ckpt / "trainer_state.json").write_text(json.dumps({"step": 2, "skipped_steps": 0, "processes": 2}))
    with pytest.raises(CheckpointMismatch) as err:
        resume(SimpleNamespace(num_processes=1, process_index=0), tmp_path, torch.Generator())
    assert str(err.value) == (
        f"train: checkpoint {ckpt} was written by 2 process(es) and this run has 1; resume with the same "
        f"train.processes, or delete {tmp_path} to start over"
    )


def test_processes_must_divide_the_batch_and_a_launcher_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from cli.main import main
    from models.validate import validate_config

    with pytest.raises(ConfigError, match=r"'train.processes': 3 does not divide train.prompts_per_step \(8\)"):
        validate_config(load_config(overrides=["train.processes=3"]), "train")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train"]) == 2
    assert capsys.readouterr().err.strip() == (
        "synrank: `synrank train` was started as one of 2 processes (accelerate launch / torchrun); run it once "
        "instead: `synrank train --set train.processes=2` launches the training processes itself"
    )


def _launch_cfg(**launch: object) -> object:
    from synrank.config import TrainConfig

    return TrainConfig(processes=4, prompts_per_step=8, launch=launch)


def test_the_launch_of_machine_1_of_2_is_the_command_accelerate_parses() -> None:
    from accelerate.commands.launch import launch_command_parser

    from models.launch import launch_command

    cfg = _launch_cfg(machines=2, main_address="10.0.0.1", main_port=29501)
    cmd = launch_command(Path("w/job.json"), cfg, "bf16", machine_rank=1)
    assert (
        cmd[1:]
        == (
            "-m accelerate.commands.launch --multi_gpu --num_processes 8 --num_machines 2 --machine_rank 1 "
            "--main_process_ip 10.0.0.1 --main_process_port 29501 --mixed_precision bf16 --dynamo_backend no "
            "-m models.train_job w/job.json"
        ).split()
    )
    args = launch_command_parser().parse_args(cmd[3:])
    assert (args.num_processes, args.num_machines, args.machine_rank, args.main_process_ip) == (8, 2, 1, "10.0.0.1")
    assert (args.main_process_port, args.mixed_precision, args.module, args.multi_gpu) == (29501, "bf16", True, True)


def test_a_launch_config_file_replaces_multi_gpu_and_keeps_its_precision() -> None:
    from models.launch import launch_command
    from synrank.config import ROOT

    cfg = _launch_cfg(config_file="configs/accelerate/8gpu.yaml")
    cmd = launch_command(Path("job.json"), cfg)
    assert cmd[3:9] == ["--config_file", str(ROOT / "configs/accelerate/8gpu.yaml"), "--num_processes", "4"] + [
        "--num_machines",
        "1",
    ]
    assert "--multi_gpu" not in cmd and "--mixed_precision" not in cmd and cfg.launched


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["train.processes=2", "train.prompts_per_step=4", "train.launch.machines=3", "train.launch.main_address=h"],
            "bad value for 'train.launch.machines': 3 machines x 2 processes do not divide train.prompts_per_step (4); "
            "each process takes an equal share of a step's groups",
        ),
        (
            ["train.processes=2", "train.prompts_per_step=4", "train.launch.machines=2"],
            "bad value for 'train.launch.main_address': '': 2 machines need the address of machine 0 (this one) "
            "that the others reach",
        ),
        (
            ["train.launch.config_file=configs/accelerate/none.yaml"],
            "bad value for 'train.launch.config_file': 'configs/accelerate/none.yaml': no such file (relative "
            "paths are from the project folder, e.g. configs/accelerate/8gpu.yaml)",
        ),
    ],
)
def test_a_launch_that_cannot_run_is_refused_in_one_line(overrides: list[str], message: str) -> None:
    from models.validate import validate_config

    with pytest.raises(ConfigError) as err:
        validate_config(load_config(overrides=overrides), "train")
    assert str(err.value) == message
