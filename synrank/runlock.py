"""One run at a time per output folder, and a killed run marked as such by the next one.

Each stage holds an exclusive `flock` on `<parent>/.synrank-locks/<out name>.lock` while it runs (the
pipeline takes all six at its start). The lock lives beside the output folder, not in it: the folder is a
DVC output, and a lock inside it would make every run, even one with nothing to do, change what DVC
tracks (`dvc status` dirty, lock files in the DVC cache). The lock file also holds a record of the
holder: pid, host, command, and the MLflow runs and Prefect flow runs it opened. The kernel drops a
`flock` when its process dies, even by SIGKILL, so:
- a second run on the same outputs finds the lock taken and stops at once, naming the holder;
- a run that finds the lock free but the record still "running" knows the previous holder was killed
  (it never wrote "released") and marks that holder's MLflow runs KILLED and its Prefect flow runs
  Crashed, which nothing else would do: a SIGKILLed process reports nothing.
Locks are re-entrant within one process (the pipeline's stages run inside its own lock).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

LOCK_DIR = ".synrank-locks"


def lock_path(out: Path) -> Path:
    """The lock file of the output folder `out`: in its parent's LOCK_DIR, named after it."""
    return out.parent / LOCK_DIR / f"{out.name}.lock"


class LockHeld(RuntimeError):
    """Another live run holds the outputs; the message names it."""


_held: dict[Path, tuple[int, int]] = {}  # lock file -> (fd, depth)
_record: dict[str, Any] = {}
_killed: list[dict[str, Any]] = []  # killed holders' records found on acquiring, not yet marked


def _describe(out: Path, rec: dict[str, Any]) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rec.get("started", 0)))
    return (
        f"'{out}' is in use by another synrank run: pid {rec.get('pid', '?')} on host "
        f"{rec.get('host', '?')} ({rec.get('command', '?')}, since {since}); wait for it to finish or stop it"
    )


def _read(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = b""
    while chunk := os.read(fd, 65536):
        raw += chunk
    try:
        return json.loads(raw.decode()) if raw.strip() else {}
    except ValueError:
        return {}


def _write(fd: int, rec: dict[str, Any]) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(rec, sort_keys=True).encode())


def _new_record() -> dict[str, Any]:
    if not _record:
        _record.update(
            pid=os.getpid(),
            host=socket.gethostname(),
            started=time.time(),
            state="running",
            command=" ".join(["synrank", *sys.argv[1:]]) or "python",
            mlflow=[],
            prefect=[],
        )
    return _record


def _acquire(path: Path, out: Path) -> dict[str, Any]:
    """Take the lock `path` of folder `out`; returns the previous holder's record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        rec = _read(fd)
        os.close(fd)
        raise LockHeld(_describe(out, rec)) from None
    previous = _read(fd)
    _write(fd, _new_record())
    _held[path] = (fd, 1)
    return previous


def _release(path: Path) -> None:
    fd, depth = _held[path]
    if depth > 1:
        _held[path] = (fd, depth - 1)
        return
    del _held[path]
    _write(fd, {**_record, "state": "released", "ended": time.time()})
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    if not _held:
        _record.clear()


@contextmanager
def hold(outs: list[Path]) -> Iterator[None]:
    """Hold the locks of these output folders (re-entrant within the process); raises LockHeld at once
    if one is taken. Records of holders that were killed (state still "running") wait in `pop_killed`
    for whoever can reach their MLflow store and Prefect API (the CLI locks before Prefect starts)."""
    taken: list[Path] = []
    killed = _killed
    try:
        for out in sorted({Path(o) for o in outs}):
            path = lock_path(out)
            if path in _held:
                fd, depth = _held[path]
                _held[path] = (fd, depth + 1)
            else:
                previous = _acquire(path, out)
                if previous.get("state") == "running" and previous not in killed:
                    killed.append(previous)
            taken.append(path)
        yield
    finally:
        for path in reversed(taken):
            _release(path)


def pop_killed() -> list[dict[str, Any]]:
    """The killed holders' records found so far, each handed out once."""
    found = list(_killed)
    _killed.clear()
    return found


def note(kind: str, entry: dict[str, str]) -> None:
    """Add an MLflow run (kind 'mlflow': uri, run_id) or a Prefect flow run ('prefect': id) to the
    record of every lock this process holds, so that a successor can mark them if we are killed."""
    if not _held:
        return
    rec = _new_record()
    if entry not in rec[kind]:
        rec[kind].append(entry)
    for fd, _ in _held.values():
        _write(fd, rec)


def mark_crashed(records: list[dict[str, Any]]) -> list[str]:
    """Mark the MLflow runs KILLED and the Prefect flow runs Crashed of killed holders, where they are
    still open; returns what was marked (for the stage's log)."""
    marked = []
    for rec in records:
        why = f"synrank: pid {rec.get('pid')} on {rec.get('host')} was killed before it finished"
        for run in rec.get("mlflow", []):
            if _mark_mlflow(run["uri"], run["run_id"]):
                marked.append(f"MLflow run {run['run_id']}")
        for fr in rec.get("prefect", []):
            if _mark_prefect(fr["id"], why):
                marked.append(f"Prefect flow run {fr['id']}")
    return marked


def _mark_mlflow(uri: str, run_id: str) -> bool:
    import mlflow

    client = mlflow.MlflowClient(uri)
    try:
        if client.get_run(run_id).info.status != "RUNNING":
            return False
        client.set_terminated(run_id, status="KILLED")
        return True
    except Exception:  # a store we cannot reach any more: nothing to mark there
        return False


def _mark_prefect(flow_run_id: str, message: str) -> bool:
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(flow_run_id))
            if run.state is None or run.state.is_final():
                return False
            client.set_flow_run_state(run.id, Crashed(message=message), force=True)
            return True
    except Exception:  # another Prefect API than the one this run talks to
        return False
