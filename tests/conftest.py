"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One throwaway Prefect server and home for the whole session, so tests never touch ~/.prefect."""
    from prefect.settings import PREFECT_HOME, PREFECT_LOGGING_LEVEL, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect_home")
    with pytest.MonkeyPatch.context() as mp:
        # The env reaches the harness's server subprocess; the settings reach this already-imported Prefect.
        mp.setenv("PREFECT_HOME", str(home))
        mp.setenv("PREFECT_LOGGING_LEVEL", "WARNING")
        mp.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry calls from a sandbox
        with temporary_settings(updates={PREFECT_HOME: home, PREFECT_LOGGING_LEVEL: "WARNING"}):
            with prefect_test_harness(server_startup_timeout=180):  # a busy 2-core machine needs more than 30 s
                yield


def pytest_configure(config: pytest.Config) -> None:
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
