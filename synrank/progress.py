"""Progress a user can watch: a long loop reports to the terminal (tqdm), and inside a Prefect run also
to the run's log and a progress artifact, at most once every `every` seconds and at the end.

    for shard in progress(pending, f"generate {spec.name}", unit="shard"):
        ...

Outside a Prefect run (a notebook, a test) it is tqdm alone. Prefect's API being unreachable never
stops the loop: progress is a report, not part of the work."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")
log = logging.getLogger(__name__)


class Reporter:
    """Throttled progress of one loop to the Prefect run log and a progress artifact (0-100 %)."""

    def __init__(self, desc: str, total: int, unit: str, every: float) -> None:
        self.desc, self.total, self.unit, self.every = desc, total, unit, every
        self.last: float | None = None  # the first step always reports
        self.artifact, self.logger = None, None
        try:
            from prefect.context import get_run_context
            from prefect.logging import get_run_logger

            get_run_context()  # raises outside a flow or task run
            self.logger = get_run_logger()
        except Exception:  # noqa: BLE001 - no Prefect run here: tqdm alone
            return
        try:
            from prefect.artifacts import create_progress_artifact

            key = re.sub(r"[^a-z0-9-]+", "-", desc.lower()).strip("-")
            self.artifact = create_progress_artifact(0.0, key=f"progress-{key}"[:80], description=desc)
        except Exception as err:  # noqa: BLE001
            log.debug("no progress artifact for %s: %s", desc, err)

    def __call__(self, done: int, extra: str = "", force: bool = False) -> None:
        """Report `done` of `total` units (log line + artifact %), `extra` appended to the line; skipped outside a
        Prefect run and, unless `force`, within `every` seconds of the last report. Never raises for Prefect."""
        if self.logger is None:
            return
        if not force and self.last is not None and time.monotonic() - self.last < self.every:
            return
        self.last = time.monotonic()
        pct = 100.0 * done / self.total if self.total else 100.0
        self.logger.info(f"{self.desc}: {done}/{self.total} {self.unit} ({pct:.0f}%){extra}")
        if self.artifact is not None:
            try:
                from prefect.artifacts import update_progress_artifact

                update_progress_artifact(self.artifact, pct)
            except Exception as err:  # noqa: BLE001
                log.debug("progress artifact update failed: %s", err)


def progress(
    items: Iterable[T], desc: str, unit: str = "it", total: int | None = None, every: float = 30.0, **tqdm_kwargs: Any
) -> Iterator[T]:
    """Yield `items` while reporting progress (tqdm; in a Prefect run also the log and an artifact,
    at most every `every` seconds, always at the end). `total` defaults to len(items)."""
    if total is None:
        total = len(items) if hasattr(items, "__len__") else 0  # type: ignore[arg-type]
    report = Reporter(desc, total, unit, every)
    done = 0
    for item in tqdm(items, desc=desc, unit=unit, total=total or None, **tqdm_kwargs):
        yield item
        done += 1
        report(done)
    report(done, force=True)
