"""`synrank repro` (`make repro`): `dvc repro` with one Prefect API for all the stages it runs.

Each DVC stage is a `synrank <stage>` process. Without a Prefect server (`make up`) every one of them would
start Prefect's temporary server, about 7 s each on 2 cores (docs/benchmarks.md); here one is started for
the whole `dvc repro` and its address handed to every stage through PREFECT_API_URL. It is started only when
a stage it will run computes: a stage whose stamp is current returns before it imports Prefect
(cli.main), so a `dvc repro` with nothing to do, or one after `make run` whose dvc.lock entries are stale
but whose stamps are current, starts no server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from synrank.config import STAGE_OUTPUT, Config
from synrank.stamp import up_to_date


def with_venv_path(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with this interpreter's bin first on PATH: dvc and the stages' `synrank` from this environment,
    as `uv run` would find them."""
    return {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"}


def temporary_server(timeout: int) -> Any:
    """Prefect's own temporary server (what each stage process would start: prefect.server.api.server's
    SubprocessASGIServer), started and healthy within `timeout` s; `.api_url`, `.stop()`."""
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start(timeout=timeout)
    return server


def stale_stages(dvc_args: list[str], env: Mapping[str, str]) -> list[str]:
    """The stages (and .dvc files) `dvc status` reports as changed for `dvc_args`' targets; [] when none.
    RuntimeError with dvc's message when `dvc status` fails (an unknown target, a broken dvc.yaml)."""
    targets = [a for a in dvc_args if not a.startswith("-")]
    proc = subprocess.run(
        ["dvc", "status", "--json", *targets], env=with_venv_path(env), capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"`dvc status {' '.join(targets)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return sorted(json.loads(proc.stdout or "{}"))


def will_compute(dvc_stages: list[str], cfg: Config) -> bool:
    """Whether any of `dvc_stages` (names from `dvc status`) will run a flow: a synrank stage whose stamp is
    stale under `cfg`, or anything else (data.dvc, the zoo). A stage whose stamp is current returns before
    it imports Prefect (cli.main), so a `dvc repro` of only such stages needs no server."""
    return any(s not in STAGE_OUTPUT or not up_to_date(s, cfg) for s in dvc_stages)


def run_repro(dvc_args: list[str], env: Mapping[str, str], cfg: Config) -> int:
    """`dvc repro *dvc_args` in `env` (the caller's environment plus cli.main.prefect_env) for the params
    `cfg` was loaded from; returns its exit status. With PREFECT_API_URL set (`make up`) its stages use that
    server; otherwise one temporary server is started for all of them, and stopped when `dvc repro` ends, if
    `--force` is given or a stage `dvc status` names will compute (`will_compute`)."""
    env = with_venv_path(env)
    forced = any(a in ("-f", "--force") for a in dvc_args)
    if env.get("PREFECT_API_URL") or not (forced or will_compute(stale_stages(dvc_args, env), cfg)):
        return subprocess.call(["dvc", "repro", *dvc_args], env=env)
    os.environ.update({k: v for k, v in env.items() if k.startswith("PREFECT_")})  # before Prefect's import
    # prefect_env's start-up timeout: the 20 s default is too little on a busy 2-core machine.
    server = temporary_server(int(env.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")))
    print(f"synrank repro: one Prefect API for every stage: {server.api_url}", file=sys.stderr)
    try:
        return subprocess.call(["dvc", "repro", *dvc_args], env={**env, "PREFECT_API_URL": server.api_url})
    finally:
        server.stop()
