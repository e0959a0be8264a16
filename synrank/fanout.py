"""Run a stage's shard tasks on its engine and collect them: one code path for `engine: local` and `engine: ray`.

The driver (a stage flow) opens an engine, submits one Prefect task per unit of work (an image shard, or a
reward x image shard), and hands every result to a callback as soon as it completes, so the manifest piece or
score file of a finished shard is written at once and a killed driver loses only what was still running.
Results are taken with `.result()`, never `wait()` plus `.state`, which can hide a failure. A unit that fails
does not stop the others: after the last one, ShardTasksFailed names every failed unit, and a rerun does only
those (the finished ones are on disk, keyed by content).

- local: Prefect's ThreadPoolTaskRunner with one worker: the units run one after another in this process,
  as task runs of the flow; Ray is never imported.
- ray: prefect-ray's RayTaskRunner (synrank.ray_engine): a Ray task per unit with the section's resources,
  retried by Ray when its worker or node dies. A task run whose retries ran out never reports an end state
  (its process is gone), so `collect` marks it Crashed on the Prefect server.

A worker keeps the last model it loaded (`keep_loaded`), so a pipeline is loaded once per worker process and
generator, not once per shard; Ray keeps its GPU workers alive for that (`max_calls=0`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from prefect.futures import PrefectFuture, as_completed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from synrank.cluster_config import ClusterConfig, FanOut
from synrank.progress import progress

log = logging.getLogger(__name__)

T = TypeVar("T")
_LOADED: dict[str, Any] = {}  # this process's one loaded model: {key: model}


def keep_loaded(key: str, load: Callable[[], T]) -> T:
    """The model under `key` (a content id plus device), loaded by `load()` only when this process does not hold
    it already. One model is kept: loading another drops the previous one, so memory stays one model's."""
    if key not in _LOADED:
        _LOADED.clear()  # drop the old model before the new one is in memory
        _LOADED[key] = load()
    return _LOADED[key]


def drop_loaded() -> None:
    """Free the kept model (the local engine does this when its stage ends)."""
    _LOADED.clear()


class ShardTasksFailed(RuntimeError):
    """Some units of a stage failed; the others are written. The message names them and the first error."""


@dataclass
class Engine:
    """A started task runner plus the Ray options every task gets ({} locally)."""

    kind: str
    runner: TaskRunner
    options: dict[str, Any] = field(default_factory=dict)
    pending: dict[PrefectFuture, str] = field(default_factory=dict)  # submitted units not yet collected -> name

    def submit(self, task: Any, name: str = "", **params: Any) -> PrefectFuture:
        """Submit one task run; a `name` makes it a unit that `collect` hands to its callback."""
        if self.options:
            from prefect_ray.context import remote_options

            with remote_options(**self.options):
                future = self.runner.submit(task, params)
        else:
            future = self.runner.submit(task, params)
        if name:
            self.pending[future] = name
        return future


@contextmanager
def open_engine(fan: FanOut, cluster: ClusterConfig) -> Iterator[Engine]:
    """The engine of a stage section (generate or score), started for the `with` block and stopped after it."""
    if fan.engine == "local":
        try:
            with ThreadPoolTaskRunner(max_workers=1) as runner:
                yield Engine("local", runner)
        finally:
            drop_loaded()
        return
    from synrank import ray_engine  # imports Ray: only here

    with ray_engine.task_runner(cluster) as runner:
        yield Engine("ray", runner, ray_engine.task_options(fan, cluster))


@dataclass
class Collector:
    """Hands each finished unit of an engine to `on_result(name, value)` and remembers the failures."""

    engine: Engine
    on_result: Callable[[str, Any], None]
    desc: str
    failed: dict[str, BaseException] = field(default_factory=dict)
    done: int = 0

    def wait_for(self, future: PrefectFuture) -> Any:
        """`future.result()`, handling the units that finish meanwhile (a driver waiting on one task keeps
        writing the others' results)."""
        for finished in as_completed([future, *self.engine.pending]):
            if finished is future:
                return future.result()
            self._take(finished)
        return future.result()

    def finish(self) -> None:
        """Collect every pending unit; raise ShardTasksFailed if any failed."""
        total = self.done + len(self.failed) + len(self.engine.pending)
        waiting = list(self.engine.pending)
        for finished in progress(as_completed(waiting), self.desc, unit="tasks", total=len(waiting)):
            self._take(finished)
        if self.failed:
            name, err = next(iter(self.failed.items()))
            raise ShardTasksFailed(
                f"{self.desc}: {len(self.failed)} of {total} tasks failed ({', '.join(self.failed)}); the other "
                f"{total - len(self.failed)} are written and a rerun does only these. First error, {name}: "
                f"{type(err).__name__}: {err}"
            ) from err

    def _take(self, future: PrefectFuture) -> None:
        name = self.engine.pending.pop(future, None)
        if name is None:
            return
        try:
            value = future.result()
        except Exception as err:  # noqa: BLE001 - every failure is reported together in finish()
            self.failed[name] = err
            mark_crashed(future, err)
            return
        self.on_result(name, value)
        self.done += 1


def mark_crashed(future: PrefectFuture, err: BaseException, attempts: int = 5, delay: float = 0.5) -> None:
    """Set a failed unit's task run Crashed if the server still has it in a non-final state (a process killed
    by Ray or the OS reports nothing); a run that ended Failed by itself is left as it is. Prefect records task
    runs asynchronously (PrefectHQ/prefect#15153), so a run not found yet is read again, `attempts` times
    `delay` seconds apart; whatever goes wrong here is logged and never replaces the unit's own failure."""
    try:
        _mark_crashed(future.task_run_id, err, attempts, delay)
    except Exception as mark_err:  # noqa: BLE001 - bookkeeping; the caller reports the unit's failure
        log.warning(f"could not mark task run {future.task_run_id} Crashed: {type(mark_err).__name__}: {mark_err}")


def _mark_crashed(task_run_id: Any, err: BaseException, attempts: int, delay: float) -> None:
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Crashed

    with get_client(sync_client=True) as client:
        for attempt in range(attempts):
            try:
                run = client.read_task_run(task_run_id)
                break
            except ObjectNotFound:
                if attempt == attempts - 1:
                    raise
                time.sleep(delay)
        if run.state is None or not run.state.is_final():
            client.set_task_run_state(task_run_id, Crashed(message=f"{type(err).__name__}: {err}"[:500]), force=True)
