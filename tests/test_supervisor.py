"""synrank.supervisor on small shell commands (seconds, no servers): a stop ends the whole process group, and
a service that never gets ready (or exits) fails with an error that names it, its command and its log."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from synrank import supervisor
from synrank.supervisor import NotReady, ServiceError


def group_members(pgid: int) -> list[int]:
    """Every live process in process group `pgid` (from /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    members.append(int(entry.name))
            except ProcessLookupError:
                pass
    return members


def wait_for_log(log: Path, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not supervisor.log_contains(log, text):
        assert time.monotonic() < deadline, f"{text!r} never reached {log}"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("ignore_term", [False, True], ids=["plain", "ignores-sigterm"])
def test_stop_ends_the_whole_process_group(tmp_path: Path, ignore_term: bool) -> None:
    """A shell with two background children: all three go, by SIGTERM, or by SIGKILL when they ignore it."""
    trap = "trap '' TERM; " if ignore_term else ""
    command = ["sh", "-c", f"{trap}sleep 300 & sleep 300 & echo forked; wait"]
    pidfile = tmp_path / "sleepers.pid"
    proc = supervisor.launch("sleepers", command, tmp_path / "sleepers.log", cwd=tmp_path, pidfile=pidfile)
    wait_for_log(proc.log, "forked")
    members = group_members(proc.pid)
    assert proc.pid in members and len(members) == 3
    assert supervisor.running_pid(pidfile, {"sh"}) == proc.pid
    assert supervisor.running_pid(pidfile, {"/not/our/program"}) is None  # a recycled pid is not ours

    assert proc.stop(timeout=1 if ignore_term else 30) is ignore_term  # SIGKILL only when needed
    assert not supervisor.group_alive(proc.pid) and not group_members(proc.pid)
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)
    assert not pidfile.exists()


@pytest.mark.slow
def test_readiness_timeout_names_the_service_its_command_and_the_log_tail(tmp_path: Path) -> None:
    command = ["sh", "-c", "echo booting; echo last-words-42; exec sleep 300"]
    pidfile = tmp_path / "slowpoke.pid"
    proc = supervisor.launch("slowpoke", command, tmp_path / "slowpoke.log", cwd=tmp_path, pidfile=pidfile)
    wait_for_log(proc.log, "last-words-42")  # so the tail is there even on a busy machine

    def never() -> bool:
        raise NotReady("nobody answers on port 1")

    with pytest.raises(ServiceError) as caught:
        proc.wait_ready(never, timeout=0.5, interval=0.1)
    message = str(caught.value)
    assert message.startswith("slowpoke did not become ready within 0.5s (last: nobody answers on port 1)")
    assert "command: sh -c 'echo booting; echo last-words-42; exec sleep 300'" in message
    assert str(proc.log) in message and "    last-words-42" in message  # the log's tail, indented
    assert not supervisor.group_alive(proc.pid) and not pidfile.exists()  # stopped again


@pytest.mark.slow
def test_a_service_that_exits_while_starting_fails_with_its_status(tmp_path: Path) -> None:
    proc = supervisor.launch("quitter", ["sh", "-c", "echo cannot bind; exit 3"], tmp_path / "q.log", cwd=tmp_path)
    with pytest.raises(ServiceError, match=r"(?s)^quitter exited while starting \(exit status 3\).*cannot bind"):
        proc.wait_ready(lambda: False, timeout=60, interval=0.05)
