"""The local services of `make up` / `make down` / `make status`, each started, watched and stopped through
synrank.supervisor (its own process group, pid file and log in $SYNRANK_RUN_DIR, default <repo>/run):

    python -m synrank.services up [prefect|mlflow|s3|ray ...] [--ray] [--ray-port N]
    python -m synrank.services down
    python -m synrank.services status

  prefect        Prefect server on 127.0.0.1:$PREFECT_PORT (default 4200), its database and settings in
                 $SYNRANK_PREFECT_HOME (default <repo>/.prefect, so ~/.prefect is never touched)
  worker-<pool>  one process worker per work pool in $SYNRANK_POOLS (default "cpu gpu"), with prefect
  mlflow         MLflow server on 127.0.0.1:$MLFLOW_PORT (default 5000), runs in $SYNRANK_MLFLOW_DIR/mlflow.db
                 (default <repo>/mlflow), artifacts in its artifacts/ folder
  s3             SeaweedFS S3 server on 127.0.0.1:$S3_PORT (default 8333), data and weed.log in run/s3,
                 bucket `synrank` (synrank.s3server)
  ray            single-node Ray head on 127.0.0.1:--ray-port (default $RAY_PORT, else 6379); only when named
                 or with --ray. run/ray.env then holds RAY_ADDRESS, which the Makefile exports.

`up` starts what is not running yet (prefect, mlflow and s3 when no name is given), waits until each is
ready, and with prefect creates the missing work pools and (re)deploys prefect.yaml with params.yaml as the
defaults (`synrank deploy $SYNRANK_DEPLOY_ARGS`). `down` stops every service with a pid file,
workers first (they deregister from the server). Binaries are those beside this interpreter (the
virtualenv that `make` runs).

Ports: `up` records the ports in use in run/ports.env (PREFECT_PORT, MLFLOW_PORT, S3_PORT), which the
Makefile reads, so every later `make` talks to these servers; `down` removes it. A running service keeps
its recorded port; one that is not takes $PREFECT_PORT / $MLFLOW_PORT / $S3_PORT, else the recorded port,
else the default. Timeouts: $SYNRANK_UP_TIMEOUT (180 s, for a busy 2-core machine) for each service to
become ready, $SYNRANK_STOP_TIMEOUT (30 s) between SIGTERM and SIGKILL.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from synrank import atomic, s3server, supervisor
from synrank.config import CODE_ROOT, ROOT
from synrank.supervisor import ServiceError, Supervised

HOST = "127.0.0.1"
S3_BUCKET = "synrank"
SERVICES = ("prefect", "mlflow", "s3", "ray")
DEFAULT_SERVICES = ("prefect", "mlflow", "s3")
PORTS = {"prefect": ("PREFECT_PORT", 4200), "mlflow": ("MLFLOW_PORT", 5000), "s3": ("S3_PORT", 8333)}
RAY_READY = "This command will now block forever"  # `ray start --block`'s line once the head is up


@dataclass(frozen=True)
class Setup:
    """Where the services live and how long they may take; from the environment (see the module docstring)."""

    root: Path
    run_dir: Path
    bin_dir: Path
    prefect_home: Path
    mlflow_dir: Path
    pools: tuple[str, ...]
    deploy_args: tuple[str, ...]
    up_timeout: float
    stop_timeout: float

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Setup:
        """The setup the SYNRANK_* variables in `environ` describe, relative paths from the current folder."""

        def folder(var: str, default: Path) -> Path:
            return Path(environ.get(var) or default).resolve()

        return cls(
            root=CODE_ROOT,  # the code checkout the workers run flows from (prefect.yaml pull step)
            run_dir=folder("SYNRANK_RUN_DIR", ROOT / "run"),
            bin_dir=Path(sys.executable).parent,
            prefect_home=folder("SYNRANK_PREFECT_HOME", ROOT / ".prefect"),
            mlflow_dir=folder("SYNRANK_MLFLOW_DIR", ROOT / "mlflow"),
            pools=tuple(environ.get("SYNRANK_POOLS", "cpu gpu").split()),
            deploy_args=tuple(shlex.split(environ.get("SYNRANK_DEPLOY_ARGS", ""))),
            up_timeout=float(environ.get("SYNRANK_UP_TIMEOUT") or 180),
            stop_timeout=float(environ.get("SYNRANK_STOP_TIMEOUT") or 30),
        )

    def pidfile(self, name: str) -> Path:
        """run/<name>.pid."""
        return self.run_dir / f"{name}.pid"

    def logfile(self, name: str) -> Path:
        """run/<name>.log."""
        return self.run_dir / f"{name}.log"

    def tool(self, name: str) -> str:
        """The path of a command of this virtualenv (prefect, mlflow, ray)."""
        return str(self.bin_dir / name)

    @property
    def programs(self) -> set[str]:
        """The programs a recorded pid must run to count as ours (supervisor.running_pid)."""
        found = {self.tool("prefect"), self.tool("mlflow"), self.tool("ray")}
        try:
            found.add(s3server.weed_binary())
        except s3server.S3ServerError:
            pass
        return found

    def running(self, name: str) -> int | None:
        """The pid of the service `name` if it runs (its pid file points at a live group of ours)."""
        return supervisor.running_pid(self.pidfile(name), self.programs)


def read_env_file(path: Path) -> dict[str, str]:
    """The KEY=VALUE lines of a file such as run/ports.env; {} when there is none."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    return dict(line.split("=", 1) for line in lines if "=" in line)


def choose_ports(setup: Setup, environ: Mapping[str, str] = os.environ) -> dict[str, int]:
    """Service name -> port: the recorded port while the service runs (a running server does not move),
    else the variable from `environ`, else the recorded one, else the default. ServiceError for a value
    that is not a port number."""
    recorded = read_env_file(setup.run_dir / "ports.env")
    ports = {}
    for name, (var, default) in PORTS.items():
        saved = recorded.get(var, "")
        value = saved if saved.isdigit() and setup.running(name) else environ.get(var) or saved or str(default)
        if not value.isdigit():
            raise ServiceError(f"{var}={value} is not a port number")
        ports[name] = int(value)
    return ports


def service_env(setup: Setup, ports: Mapping[str, int]) -> dict[str, str]:
    """What the Prefect server, the workers, the MLflow server and the deploy see: this environment, plus
    their own Prefect home and servers and no telemetry (a nested run's parent id never leaks in)."""
    env = {k: v for k, v in os.environ.items() if k != "SYNRANK_PARENT_RUN_ID"}
    env.update(
        PREFECT_HOME=str(setup.prefect_home),
        PREFECT_API_URL=f"http://{HOST}:{ports['prefect']}/api",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        SYNRANK_ROOT=str(setup.root),
        MLFLOW_TRACKING_URI=f"http://{HOST}:{ports['mlflow']}",
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",  # the server's GenAI job runner: 7 idle processes here
    )
    return env


def ensure(setup: Setup, name: str, command: Sequence[str], env: Mapping[str, str], url: str = "") -> Supervised:
    """The service `name` if it runs, else `command` started as it (pid file and log in run/). `url`: the
    address it will answer on; something else answering there already is a ServiceError."""
    pidfile, log = setup.pidfile(name), setup.logfile(name)
    pid = setup.running(name)
    if pid is not None:
        print(f"{name} already running (pid {pid})", flush=True)
        return Supervised(name, pid, list(command), log, pidfile)
    if url and supervisor.http_ok(url):
        raise ServiceError(f"something else answers on {url}; stop it or set {PORTS[name][0]}")
    proc = supervisor.launch(name, command, log, cwd=setup.root, env=env, pidfile=pidfile)
    print(f"started {name} (pid {proc.pid}, log {log})", flush=True)
    return proc


def start_prefect(setup: Setup, env: Mapping[str, str], port: int) -> Supervised:
    """The Prefect server (started if missing), its state in setup.prefect_home."""
    setup.prefect_home.mkdir(parents=True, exist_ok=True)
    command = [setup.tool("prefect"), "server", "start", "--host", HOST, "--port", str(port), "--analytics-off"]
    return ensure(setup, "prefect", command, env, f"http://{HOST}:{port}/api/health")


def start_mlflow(setup: Setup, env: Mapping[str, str], port: int) -> Supervised:
    """The MLflow server (started if missing) over setup.mlflow_dir/mlflow.db.

    New experiments keep their artifacts as plain files under mlflow/artifacts, like the ones the sqlite
    client creates (file://.../mlflow/artifacts): every run works with or without the server. Proxied
    uploads (mlflow-artifacts:/ URIs) land in the same folder.
    """
    artifacts = (setup.mlflow_dir / "artifacts").as_uri()
    (setup.mlflow_dir / "artifacts").mkdir(parents=True, exist_ok=True)
    command = [setup.tool("mlflow"), "server", "--host", HOST, "--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{setup.mlflow_dir / 'mlflow.db'}"]
    command += ["--default-artifact-root", artifacts, "--serve-artifacts", "--artifacts-destination", artifacts]
    return ensure(setup, "mlflow", command, env, f"http://{HOST}:{port}/health")


def start_s3(setup: Setup, port: int) -> s3server.SeaweedServer:
    """The SeaweedFS server (started if missing), data in run/s3; it inherits this environment as it is."""
    pidfile = setup.pidfile("s3")
    pid = setup.running("s3")
    server = s3server.attach(pid, pidfile) if pid is not None else None
    if server is not None:
        print(f"s3 already running (pid {server.pid})", flush=True)
        return server
    server = s3server.launch(setup.run_dir / "s3", port, pidfile=pidfile)
    print(f"started s3 (pid {server.pid}, log {server.log_path})", flush=True)
    return server


def start_ray(setup: Setup, port: int) -> Supervised:
    """A single-node Ray head (started if missing); `ray start --block` stays in the foreground, so the head
    and every process it starts are one process group. It inherits this environment as it is."""
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    command = [setup.tool("ray"), "start", "--head", "--block", f"--node-ip-address={HOST}", f"--port={port}"]
    command += ["--include-dashboard=false", "--disable-usage-stats"]
    return ensure(setup, "ray", command, env)


def deploy_and_start_workers(setup: Setup, env: Mapping[str, str], server: Supervised, url: str) -> None:
    """Wait for the Prefect server, create the missing work pools and (re)register every deployment
    (defaults from params.yaml), then start a process worker per pool and wait until each has started."""
    server.wait_ready(lambda: supervisor.http_ok(f"{url}/api/health"), setup.up_timeout)
    print(f"prefect server ready at {url}", flush=True)
    deploy = [sys.executable, "-m", "cli", "deploy", *setup.deploy_args]
    if subprocess.run(deploy, cwd=setup.root, env=dict(env)).returncode != 0:
        raise ServiceError(f"deploying failed ({shlex.join(['python', *deploy[1:]])})")
    workers = []
    for pool in setup.pools:
        command = [setup.tool("prefect"), "worker", "start", "--pool", pool, "--type", "process"]
        workers.append(ensure(setup, f"worker-{pool}", [*command, "--name", f"synrank-{pool}"], env))
    for worker in workers:
        worker.wait_ready(lambda w=worker: supervisor.log_contains(w.log, "started!"), setup.up_timeout)
    print(f"workers ready for pools: {' '.join(setup.pools)}", flush=True)


def up(setup: Setup, names: Sequence[str], ray_port: int) -> None:
    """Start the named services that are not running, record the ports, wait for each (see the module
    docstring). ServiceError names the service that failed (it is stopped again; the others keep running)."""
    for tool in ("prefect", "mlflow", "ray"):
        if tool in names and not Path(setup.tool(tool)).exists():
            raise ServiceError(f"no {tool} in {setup.bin_dir} (run: make env, or make up RAY=1 for ray)")
    setup.run_dir.mkdir(parents=True, exist_ok=True)
    ports = choose_ports(setup)
    env = service_env(setup, ports)
    urls = {name: f"http://{HOST}:{ports[name]}" for name in PORTS}
    prefect = start_prefect(setup, env, ports["prefect"]) if "prefect" in names else None
    mlflow = start_mlflow(setup, env, ports["mlflow"]) if "mlflow" in names else None
    s3 = start_s3(setup, ports["s3"]) if "s3" in names else None
    ray_port = _ray_port(setup, ray_port)
    ray = start_ray(setup, ray_port) if "ray" in names else None
    atomic.write_text(setup.run_dir / "ports.env", "".join(f"{PORTS[n][0]}={p}\n" for n, p in ports.items()))
    if prefect is not None:
        deploy_and_start_workers(setup, env, prefect, urls["prefect"])
    if mlflow is not None:
        mlflow.wait_ready(lambda: supervisor.http_ok(f"{urls['mlflow']}/health"), setup.up_timeout)
        print(f"mlflow server ready at {urls['mlflow']}", flush=True)
    if s3 is not None:
        s3.wait_ready(setup.up_timeout, [S3_BUCKET])
        print(f"s3 server ready at {s3.endpoint_url} (bucket {S3_BUCKET})", flush=True)
    if ray is not None:
        ray.wait_ready(lambda: supervisor.log_contains(ray.log, RAY_READY), setup.up_timeout)
        atomic.write_text(setup.run_dir / "ray.env", f"RAY_ADDRESS={HOST}:{ray_port}\n")
        print(f"ray: head on {HOST}:{ray_port}", flush=True)
    urls["ray"] = f"{HOST}:{ray_port}"
    shown = ", ".join(f"{n} {urls[n]}" for n in SERVICES if n in names)
    print(f"up: {shown} (ports in {setup.run_dir / 'ports.env'}; stop with: make down)", flush=True)


def _ray_port(setup: Setup, wanted: int) -> int:
    # A running head keeps the port in run/ray.env.
    address = read_env_file(setup.run_dir / "ray.env").get("RAY_ADDRESS", "")
    recorded = address.rpartition(":")[2]
    return int(recorded) if recorded.isdigit() and setup.running("ray") else wanted


def stop(setup: Setup, names: Sequence[str]) -> None:
    """Stop the named services together (supervisor.stop_groups) and remove their pid files, stale or not."""
    pids = {}
    for name in names:
        pid = setup.running(name)
        if pid is not None:
            print(f"stopping {name} (pid {pid})", flush=True)
            pids[pid] = name
    for pid in supervisor.stop_groups(pids, setup.stop_timeout):
        print(f"killed {pids[pid]} (process group {pid} still there after {setup.stop_timeout:g}s)", flush=True)
    for name in names:
        setup.pidfile(name).unlink(missing_ok=True)


def down(setup: Setup) -> None:
    """Stop everything that has a pid file in run/, workers first, and remove ports.env and ray.env."""
    if not setup.run_dir.is_dir():
        print("nothing running")
        return
    names = sorted(p.stem for p in setup.run_dir.glob("*.pid"))
    s3_pid = setup.running("s3")
    s3 = s3server.attach(s3_pid) if s3_pid is not None else None
    stop(setup, [n for n in names if n.startswith("worker-")])
    stop(setup, [n for n in names if not n.startswith("worker-")])
    if s3 is not None:
        s3server.remove_stale_sockets(s3.ports)
    for name in ("ports.env", "ray.env"):
        (setup.run_dir / name).unlink(missing_ok=True)
    print("down")


def status(setup: Setup) -> None:
    """Print, per pid file in run/, whether that service runs, and the recorded ports."""
    pidfiles = sorted(setup.run_dir.glob("*.pid"))
    for f in pidfiles:
        pid = setup.running(f.stem)
        print(f"{f.stem}: running (pid {pid})" if pid is not None else f"{f.stem}: not running (stale pid file)")
    ports = read_env_file(setup.run_dir / "ports.env")
    if ports:
        print("ports: " + " ".join(f"{k}={v}" for k, v in ports.items()))
    if not pidfiles:
        print("nothing running")


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m synrank.services up|down|status`; 1 with the error on stderr when a service fails."""
    parser = argparse.ArgumentParser(prog="python -m synrank.services", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start what is not running, wait until ready, (re)deploy")
    p_up.add_argument(
        "services", nargs="*", metavar="NAME", help=f"of {', '.join(SERVICES)}; default: prefect mlflow s3"
    )
    p_up.add_argument("--ray", action="store_true", help="also a Ray head")
    p_up.add_argument("--ray-port", type=int, default=int(os.environ.get("RAY_PORT") or 6379))
    sub.add_parser("down", help="stop everything that has a pid file")
    sub.add_parser("status", help="what is running")
    args = parser.parse_args(argv)
    if args.command == "up" and set(args.services) - set(SERVICES):
        parser.error(f"unknown service(s) {sorted(set(args.services) - set(SERVICES))}; known: {', '.join(SERVICES)}")
    setup = Setup.from_env()
    try:
        if args.command == "up":
            names = args.services or [*DEFAULT_SERVICES, *(["ray"] if args.ray else [])]
            up(setup, names, args.ray_port)
        elif args.command == "down":
            down(setup)
        else:
            status(setup)
    except ServiceError as err:
        print(f"services: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
