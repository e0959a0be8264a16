"""The whole pipeline as a user runs it (`synrank pipeline` processes), on tiny random models:
- a second pipeline on the same outputs stops at once and names the running one;
- killed (SIGKILL at an exact point, tests/killpoint.py) in generate, then score, then train, then
  evaluate, and resumed each time, it ends with outputs identical to an uninterrupted run, and the
  killed runs are marked KILLED in MLflow and Crashed in Prefect by the runs that follow them;
- a bad config, or a training run whose loss turns non-finite, leaves the good result and its stamps
  untouched and registers no model version."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml

from synrank.config import ROOT, STAGE_OUTPUT, STAGES
from synrank.fingerprint import tree_files
from tests.test_pipeline import tiny_config

pytestmark = pytest.mark.slow  # needs a Prefect server, a subprocess or a training run

OUTS = [*(STAGE_OUTPUT[s] for s in STAGES), "metrics"]  # the pipeline's outputs (export is its own command)


def _env() -> dict[str, str]:
    from prefect.settings import get_current_settings

    # The test session's Prefect server; one torch thread so that every run computes alike.
    return {
        **os.environ,
        "PREFECT_API_URL": str(get_current_settings().api.url),
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("resume")
    data = tiny_config(root).model_dump(mode="json")
    data["train"].update(steps=3, checkpoint_every=1)
    data["rank"]["examples"] = 0
    return root, data


def _params(world: tuple[Path, dict], name: str) -> Path:
    root, data = world
    data = json.loads(json.dumps(data))
    data["paths"] = {k: str(root / name / k) for k in data["paths"] if k != "data"}
    data["tracking"] = {"tracking_uri": f"sqlite:///{root / name / 'mlflow.db'}", "experiment": name}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _pipeline(params: Path, *extra: str, kill: tuple[str, int] | None = None) -> subprocess.CompletedProcess:
    pre = ["-m", "tests.killpoint", kill[0], str(kill[1])] if kill else ["-m"]
    cmd = [sys.executable, *pre, "cli", "pipeline", "--params", str(params), *extra]
    return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True)


def _content(root: Path) -> dict[str, bytes]:
    files = {}
    for out in OUTS:
        for p in tree_files(root / out, exclude=["_stage.json"]) if (root / out).exists() else []:
            files[p.relative_to(root).as_posix()] = p.read_bytes()
    return files


def _stamps(root: Path) -> dict[str, bytes]:
    return {o: (root / o / "_stage.json").read_bytes() for o in OUTS[:-1]}  # metrics has no stamp


@pytest.fixture(scope="module")
def straight(world: tuple[Path, dict]) -> Path:
    """An uninterrupted run; while it runs, a second pipeline on the same outputs is refused."""
    params = _params(world, "straight")
    lock = world[0] / "straight" / ".synrank-locks" / "prompts.lock"
    first = subprocess.Popen(
        [sys.executable, "-m", "cli", "pipeline", "--params", str(params)],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while not (lock.exists() and '"running"' in lock.read_text()) and time.time() < deadline:
        assert first.poll() is None, first.communicate()
        time.sleep(0.5)
    t0 = time.time()
    second = _pipeline(params)
    assert second.returncode == 3, second.stderr[-3000:]
    assert f"is in use by another synrank run: pid {first.pid} on host" in second.stderr
    assert "synrank pipeline --params" in second.stderr and time.time() - t0 < 60
    out, err = first.communicate(timeout=900)
    assert first.returncode == 0, err[-3000:]
    return world[0] / "straight"


def test_killed_in_every_stage_and_resumed_equals_uninterrupted(world: tuple[Path, dict], straight: Path) -> None:
    params = _params(world, "resumed")
    resumed = world[0] / "resumed"
    kills = [
        ("tasks.generate:write_shard", 2),  # generate: after the 2nd shard's tar, before its piece
        ("tasks.score:write_scores", 2),  # score: after the 2nd (reward, shard) cache file
        ("models.trainer:save_checkpoint", 1),  # train: after the step-1 checkpoint
        ("tasks.generate:write_shard", 1),
    ]  # evaluate: generate is up to date, so its 1st eval shard
    for kill in kills:
        res = _pipeline(params, kill=kill)
        assert res.returncode == -signal.SIGKILL, (kill, res.stderr[-3000:])
    res = _pipeline(params)
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = _content(straight), _content(resumed)
    assert sorted(x.replace("straight/", "") for x in a) == sorted(x.replace("resumed/", "") for x in b)
    differ = [k for k in a if a[k] != b[k.replace("straight/", "resumed/")]]
    assert differ == []
    # Every killed run was marked by its successor: nothing is left running in MLflow or Prefect.
    client = mlflow.MlflowClient(f"sqlite:///{resumed / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("resumed").experiment_id])
    status = [r.info.status for r in runs]
    assert "RUNNING" not in status and status.count("KILLED") >= 2 * len(kills)
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as pc:  # the flow runs of this test's runs (their paths are params)
        states = [
            r.state.type.value
            for r in pc.read_flow_runs(limit=200)
            if str(resumed) in json.dumps(r.parameters, default=str)
        ]
    assert "RUNNING" not in states and states.count("CRASHED") >= 2 * len(kills)


def test_bad_config_and_nan_loss_leave_the_good_result(world: tuple[Path, dict], straight: Path) -> None:
    params = _params(world, "straight")
    before, stamps = _content(straight), _stamps(straight)
    res = _pipeline(params, "--set", "train.objective=rankdop")
    assert res.returncode == 2 and "train.objective" in res.stderr and "rankdpo" in res.stderr
    res = _pipeline(params, "--set", "train.learning_rate=1e12", "--set", "train.steps=4")
    assert res.returncode != 0 and "at step" in res.stderr
    assert _content(straight) == before and _stamps(straight) == stamps
    client = mlflow.MlflowClient(f"sqlite:///{straight / 'mlflow.db'}")
    assert [str(v.version) for v in client.search_model_versions("name = 'synrank-gen-a'")] == ["1"]
    # The good result is still current: every stamp vouches for its folder, so the command starts no flow
    # and no MLflow run, and rewrites metrics/evaluate.json to the same bytes.
    exp = client.get_experiment_by_name("straight").experiment_id
    n_runs = len(client.search_runs([exp]))
    res = _pipeline(params)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "nothing changed since the last run" in res.stdout
    assert len(client.search_runs([exp])) == n_runs
    assert _content(straight) == before and _stamps(straight) == stamps
