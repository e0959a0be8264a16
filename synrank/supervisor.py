"""One way to run a local service in the background, used by every service of `make up` (synrank.services)
and by synrank.s3server: start it as its own process group with a pid file and a log, wait until it is
ready, tell whether a recorded pid is still ours, and stop the whole group (SIGTERM, wait, SIGKILL).

Each service runs in a new session (setsid), so its pid is also its process-group id and a stop reaches
every process it forked (uvicorn and gunicorn workers, Ray's raylet and workers, flow-run subprocesses).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from synrank import atomic

TAIL_LINES = 20  # log lines quoted in an error
KILL_WAIT = 10.0  # seconds a SIGKILLed group may take to disappear before it counts as a failure
# Local servers only: a proxy from the environment (http_proxy) must never see these requests.
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServiceError(RuntimeError):
    """A service could not be started, did not become ready in time, or survived SIGKILL. The message
    names the service, its command and its log, and ends with the log's last lines."""


class NotReady(Exception):
    """Raised by a readiness check to say why it is not ready yet; the reason of the last one is quoted
    when the wait times out."""


def log_tail(log: Path, lines: int = TAIL_LINES) -> str:
    """The last `lines` lines of `log`, each indented by 4 spaces; "" when it cannot be read."""
    try:
        text = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n".join("    " + line for line in text)


def read_pid(pidfile: Path) -> int | None:
    """The pid recorded in `pidfile`, or None when there is no file or it holds no number."""
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _reap(pid: int) -> None:
    # A child of this process that exited stays a zombie, and so a member of its group, until waited for.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child: init reaps it


def group_alive(pid: int) -> bool:
    """Whether process group `pid` still has a member (reaping it first if it is our exited child)."""
    _reap(pid)
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, but not ours to signal
    return True


def leader_args(pid: int) -> list[str] | None:
    """The command line of process `pid` (from /proc), or None when it is gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    args = raw.decode(errors="replace").split("\0")
    return args[:-1] if args and args[-1] == "" else (args or None)


def running_pid(pidfile: Path, programs: Collection[str]) -> int | None:
    """The pid in `pidfile` if that process group still exists and is ours, else None.

    Ours: the leader is gone (a pid is not reused while its group lives) or one of its first two
    arguments (the program, or the script a Python interpreter runs) is in `programs`; a recycled pid
    that now belongs to someone else is left alone.
    """
    pid = read_pid(pidfile)
    if pid is None or not group_alive(pid):
        return None
    args = leader_args(pid)
    if args and not set(args[:2]) & set(programs):
        return None
    return pid


def stop_groups(pids: Iterable[int], timeout: float) -> list[int]:
    """SIGTERM to each process group, SIGKILL to those left after `timeout` seconds; returns once all are
    gone. Returns the pids that needed SIGKILL; raises ServiceError if one outlives SIGKILL by KILL_WAIT s."""
    pids = list(pids)
    for pid in pids:
        _signal_group(pid, signal.SIGTERM)
    left = _wait_gone(pids, timeout)
    for pid in left:
        _signal_group(pid, signal.SIGKILL)
    survivors = _wait_gone(left, KILL_WAIT)
    if survivors:
        raise ServiceError(f"process groups {survivors} survived SIGKILL")
    return left


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        left = [pid for pid in pids if group_alive(pid)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.1)


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """Whether a GET of `url` answers with a 2xx status within `timeout` seconds (no proxy)."""
    try:
        with _LOCAL.open(url, timeout=timeout) as answer:
            return 200 <= answer.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def log_contains(log: Path, text: str) -> bool:
    """Whether the log file holds `text` (False while it does not exist)."""
    try:
        return text in log.read_text(errors="replace")
    except OSError:
        return False


@dataclass
class Supervised:
    """A service started by `launch` (or found running: `process` None). `pid` is also its process-group
    and session id; `pidfile`, when set, is removed when it is stopped."""

    name: str
    pid: int
    command: Sequence[str]
    log: Path
    pidfile: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def alive(self) -> bool:
        """Whether its process group still has a member."""
        if self.process is not None:
            self.process.poll()  # keeps the exit status for `failure`
        return group_alive(self.pid)

    def failure(self, what: str) -> ServiceError:
        """An error that names the service, says `what` happened, and quotes its command and log tail."""
        code = self.process.returncode if self.process is not None else None
        status = f" (exit status {code})" if code is not None else ""
        return ServiceError(
            f"{self.name} {what}{status}\n  command: {shlex.join(self.command)}\n  log: {self.log}\n"
            f"{log_tail(self.log)}"
        )

    def wait_ready(self, ready: Callable[[], bool], timeout: float, interval: float = 0.5) -> None:
        """Poll `ready()` every `interval` s until it is true. When the group dies first or `timeout` seconds
        pass, stop the group and raise ServiceError (`failure`); `ready` may raise NotReady with a reason."""
        deadline = time.monotonic() + timeout
        reason = ""
        while True:
            try:
                if ready():
                    return
            except NotReady as err:
                reason = str(err)
            if not self.alive():
                self.stop(5.0)
                raise self.failure("exited while starting")
            if time.monotonic() >= deadline:
                self.stop(5.0)
                last = f" (last: {reason})" if reason else ""
                raise self.failure(f"did not become ready within {timeout:g}s{last}")
            time.sleep(interval)

    def stop(self, timeout: float) -> bool:
        """Stop the process group (`stop_groups`) and remove the pid file; True if SIGKILL was needed."""
        if self.process is not None:
            self.process.poll()
        killed = bool(stop_groups([self.pid], timeout))
        if self.pidfile is not None:
            self.pidfile.unlink(missing_ok=True)
        return killed


def launch(
    name: str,
    command: Sequence[str],
    log: Path,
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    pidfile: Path | None = None,
) -> Supervised:
    """Start `command` in a new session in `cwd`, stdin from /dev/null, stdout and stderr to `log` (the
    previous log is kept as `<log>.1`), and record its pid in `pidfile`. Returns at once, not ready yet.
    `env`: the whole environment (None: this process's). Raises ServiceError when it cannot be executed."""
    log.parent.mkdir(parents=True, exist_ok=True)
    if log.exists():
        log.replace(log.with_name(log.name + ".1"))  # one previous run for a post-mortem
    with open(log, "wb") as out:
        try:
            process = subprocess.Popen(
                list(command),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                env=None if env is None else dict(env),
                start_new_session=True,
            )
        except OSError as err:
            raise ServiceError(f"{name} could not be started: {err}\n  command: {shlex.join(command)}") from err
    if pidfile is not None:
        pidfile.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(pidfile, f"{process.pid}\n")
    return Supervised(name, process.pid, list(command), log, pidfile, process)
