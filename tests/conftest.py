"""Shared pytest fixtures."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A throwaway Prefect home for the whole session, so no test touches ~/.prefect; no server (cheap)."""
    home = tmp_path_factory.mktemp("prefect_home")
    with pytest.MonkeyPatch.context() as mp:
        # The env reaches the harness's server subprocess; the settings reach an already-imported Prefect.
        mp.setenv("PREFECT_HOME", str(home))
        mp.setenv("PREFECT_LOGGING_LEVEL", "WARNING")
        mp.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry calls from a sandbox
        if "prefect.settings" not in sys.modules:  # a fast-tier run may never import Prefect
            yield
            return
        from prefect.settings import PREFECT_HOME, PREFECT_LOGGING_LEVEL, temporary_settings

        with temporary_settings(updates={PREFECT_HOME: home, PREFECT_LOGGING_LEVEL: "WARNING"}):
            yield


@pytest.fixture(autouse=True, scope="session")
def prefect_harness(request: pytest.FixtureRequest, prefect_home: None) -> Iterator[None]:
    """One throwaway Prefect server for the whole session when a selected test is marked `slow` (the opt-in:
    `make test-fast` selects none, so it starts no server). Session-wide and first, so that module fixtures
    that run flows (a whole pipeline) have it too."""
    if not any(item.get_closest_marker("slow") for item in request.session.items):
        yield
        return
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):  # a busy 2-core machine needs more than 30 s
        yield


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "slow: needs a Prefect server, a subprocess or a training run; `make test-fast` leaves it out "
        "(-m 'not slow'); a session that selects none starts no Prefect server",
    )
    config.addinivalue_line(
        "markers",
        "integration: starts real Prefect/MLflow servers and workers (about a minute); "
        "leave out with -m 'not integration'",
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line on whether the Prefect/MLflow browser test ran or was skipped, and why: CI's log shows it."""
    for outcome in ("passed", "failed", "error", "skipped"):
        for rep in terminalreporter.stats.get(outcome, []):
            if "test_browser.py::test_a_custom_train_run" not in getattr(rep, "nodeid", ""):
                continue
            if outcome == "passed" and rep.when != "call":
                continue
            if outcome == "skipped":
                why = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
            else:
                why = f"{rep.when}, {rep.duration:.0f} s" + (" in Chromium" if outcome == "passed" else "")
            terminalreporter.write_line(f"synrank browser test: {outcome.upper()} {rep.nodeid} ({why})")


@pytest.fixture
def fresh_accelerate(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """accelerate keeps its state per process; start and leave it empty so other tests build their own."""
    from accelerate.state import AcceleratorState, GradientState

    def reset() -> None:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    reset()
    yield monkeypatch
    reset()
