"""Data-parallel training on several processes: `accelerate launch` of models.train_job as a child process.

The train stage's own process stays the only one that holds the output lock, the Prefect flow run and the
MLflow run; the launched processes know nothing of them (models.train_job). This process follows the main
rank's curve.jsonl while they train, passing each new row to `log`, and returns the final metrics only when
every process exited 0; otherwise it raises LaunchFailed and nothing is published.

On a machine with GPUs accelerate puts one process on each; without, the processes train on the CPU over gloo,
one thread each unless OMP_NUM_THREADS says otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from models.train_job import CURVE, FINAL, TrainJob
from models.train_result import TrainResult
from synrank.config import ROOT, TrainConfig

POLL_S = 1.0


class LaunchFailed(RuntimeError):
    """A launched training process exited non-zero (accelerate then stops the others); nothing was published."""


def launch_command(job_file: Path, cfg: TrainConfig, mixed_precision: str = "", machine_rank: int = 0) -> list[str]:
    """`accelerate launch` of models.train_job for machine `machine_rank` of cfg.launch.machines, with
    cfg.processes processes on it: accelerate's `--multi_gpu` (torchrun's launcher: one process per GPU, or, on
    a machine without CUDA, gloo processes on the CPU that the trainer's Accelerator(cpu=True) makes one
    MULTI_CPU job), or cfg.launch.config_file's distributed type instead. `mixed_precision` ("" = none given) is
    passed on, since accelerate launch would otherwise put its own default over ACCELERATE_MIXED_PRECISION;
    without one and without a config file, "no"."""
    launch = cfg.launch
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    cmd += ["--config_file", str(ROOT / launch.config_file)] if launch.config_file else ["--multi_gpu"]
    cmd += ["--num_processes", str(cfg.world_size), "--num_machines", str(launch.machines)]
    if launch.machines > 1:
        cmd += ["--machine_rank", str(machine_rank), "--main_process_ip", launch.main_address]
        cmd += ["--main_process_port", str(launch.main_port)]
    if mixed_precision or not launch.config_file:
        cmd += ["--mixed_precision", mixed_precision or "no"]
    return [*cmd, "--dynamo_backend", "no", "-m", "models.train_job", str(job_file)]


class CurveFollower:
    """Reads the rows appended to a curve.jsonl since the follower was made, one complete line at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0  # rows of an earlier attempt were logged then

    def new_rows(self) -> list[dict]:
        """The complete lines written since the last call, parsed."""
        if not self.path.exists():
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        return [json.loads(line) for line in complete.decode().splitlines() if line.strip()]


def launch(job: TrainJob, log: Callable[[dict[str, float], int], None] = lambda m, s: None) -> TrainResult:
    """Train `job` on job.cfg.processes processes here (module docstring), and print the command each other
    machine of job.cfg.launch runs; returns the main rank's TrainResult. Raises LaunchFailed naming the exit
    status when any process fails."""
    import torch

    work = Path(job.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    (work / FINAL).unlink(missing_ok=True)
    follower = CurveFollower(work / CURVE)
    precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "")
    job_file = job.save(work / "job.json")
    cmd = launch_command(job_file, job.cfg, precision)
    env = {**os.environ}
    if not torch.cuda.is_available():
        env.setdefault("OMP_NUM_THREADS", "1")  # one thread per CPU rank: spinning OpenMP threads fight otherwise
    print(f"train: launching {job.cfg.processes} processes: {' '.join(cmd[2:])}")
    for rank in range(1, job.cfg.launch.machines):  # the same job on the others, from the shared work folder
        print(f"train: on machine {rank}, run: {' '.join(launch_command(job_file, job.cfg, precision, rank)[2:])}")
    proc = subprocess.Popen(cmd, env=env)
    while proc.poll() is None:
        _follow(follower, log)
        time.sleep(POLL_S)
    _follow(follower, log)
    if proc.returncode != 0:
        raise LaunchFailed(
            f"train: a process of the {job.cfg.world_size}-process launch exited with status {proc.returncode}; "
            "no model was published (the log above has its error; a rerun resumes from the last checkpoint)"
        )
    return TrainResult.from_json((work / FINAL).read_text())


def _follow(follower: CurveFollower, log: Callable[[dict[str, float], int], None]) -> None:
    for row in follower.new_rows():
        step = int(row.pop("step"))
        log(row, step)
