"""`engine: ray`: prefect-ray's RayTaskRunner on a temporary local Ray or on an existing cluster.

Imported only when a stage section says `engine: ray` (the `ray` extra: `uv sync --extra ray`). What this adds
to prefect-ray, each for a failure seen with Ray 2.60:
- the cluster: `cluster.address`, else $RAY_ADDRESS, else a temporary local Ray bound to 127.0.0.1 (Ray
  otherwise swaps 127.0.0.1 for the host's address; RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is its switch, read
  when Ray is imported) with no dashboard, and `cluster.num_gpus` fake GPUs if asked;
- the Prefect API: Ray workers report their task runs to the API themselves, so every task gets the driver's
  PREFECT_API_URL (or `cluster.api_url`) in its runtime environment; without it each worker process would
  start an ephemeral Prefect server of its own;
- `max_calls=0`: Ray ends a GPU task's worker process after each task by default, and the loaded pipeline
  with it (synrank.fanout.keep_loaded);
- resources no node offers fail at once with the numbers, instead of tasks that wait forever;
- no `uv run` hook (UV_HOOK_ENV below): workers start with this environment's Python.
Token authentication (on by default for clusters Ray 2.60 starts) is Ray's own: `ray.init` finds the token
that `ray start` wrote (~/.ray/auth_token) or $RAY_AUTH_TOKEN.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from synrank.cluster_config import ClusterConfig, FanOut

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": a local Ray keeps 127.0.0.1 as its node address
# "0": no `uv run` hook. Under `uv run` (make run, make test) Ray would otherwise zip the working directory as
# every job's working_dir and start each worker through `uv run`, which with our --frozen --no-sync never
# registers (the raylet retries every 60 s, forever). The workers use this environment's Python instead.
UV_HOOK_ENV = "RAY_ENABLE_UV_RUN_RUNTIME_ENV"


class RayEngineError(RuntimeError):
    """The Ray engine cannot run: the extra is missing, or the cluster lacks what the tasks need."""


def cluster_address(cluster: ClusterConfig) -> str:
    """host:port of the cluster to join, '' for a temporary local one."""
    return cluster.address or os.environ.get("RAY_ADDRESS", "")


def init_kwargs(cluster: ClusterConfig) -> dict[str, Any]:
    """ray.init's arguments besides the address: a temporary local Ray gets its CPUs, GPUs and no dashboard."""
    if cluster_address(cluster):
        return {}
    kwargs: dict[str, Any] = {"include_dashboard": False}
    if cluster.num_cpus is not None:
        kwargs["num_cpus"] = cluster.num_cpus
    if cluster.num_gpus is not None:
        kwargs["num_gpus"] = cluster.num_gpus
    return kwargs


@contextmanager
def task_runner(cluster: ClusterConfig) -> Iterator[Any]:
    """A started RayTaskRunner (connected to the cluster, or owning a temporary local Ray until the block ends)."""
    address = cluster_address(cluster)
    os.environ.setdefault(UV_HOOK_ENV, "0")  # both read when Ray is first imported
    if not address:
        os.environ.setdefault(LOOPBACK_ENV, "0")
    try:
        from prefect_ray import RayTaskRunner
    except ImportError as err:
        raise RayEngineError(
            f"engine: ray needs the ray extra: `uv sync --extra ray` (prefect-ray and ray, pinned in uv.lock); {err}"
        ) from None
    with RayTaskRunner(address=address or None, init_kwargs=init_kwargs(cluster)) as runner:
        yield runner


def api_url(cluster: ClusterConfig) -> str:
    """The Prefect API the workers report to: cluster.api_url, else the driver's (its ephemeral server's too)."""
    if cluster.api_url:
        return cluster.api_url
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return str(client.api_url)


def task_options(fan: FanOut, cluster: ClusterConfig) -> dict[str, Any]:
    """ray.remote options of every task of a stage section, checked against the running cluster."""
    import ray

    gpus = fan.gpus_per_task
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    need = {"CPU": fan.cpus_per_task, "GPU": gpus, **fan.resources}
    check_feasible({k: v for k, v in need.items() if v > 0}, [n["Resources"] for n in ray.nodes() if n["Alive"]])
    env = {"PREFECT_API_URL": api_url(cluster)}
    if key := os.environ.get("PREFECT_API_KEY"):
        env["PREFECT_API_KEY"] = key
    return {
        "num_cpus": fan.cpus_per_task,
        "num_gpus": gpus,
        "resources": dict(fan.resources),
        "max_calls": 0,
        "max_retries": fan.max_retries,
        "runtime_env": {"env_vars": env},
    }


def check_feasible(need: dict[str, float], nodes: list[dict[str, float]]) -> None:
    """Raise RayEngineError unless one node offers all of `need` ({resource: amount per task}): Ray would
    otherwise queue the tasks forever."""
    if any(all(node.get(k, 0) >= v for k, v in need.items()) for node in nodes):
        return
    have = "; ".join(_listing(n) for n in nodes) or "no live nodes"
    raise RayEngineError(
        f"no node of the Ray cluster offers what each task needs ({_listing(need)}); its nodes "
        f"have: {have}. Set gpus_per_task: 0 to run on CPUs, or start nodes with those resources "
        "(`ray start --address ... --num-gpus N --resources '{...}'`)."
    )


def _listing(resources: dict[str, float]) -> str:
    """'CPU 1, GPU 2' (Ray's per-node bookkeeping entries, node:<ip>, memory, object_store_memory, left out)."""
    bookkeeping = ("node:", "memory", "object_store")
    return ", ".join(f"{k} {v:g}" for k, v in sorted(resources.items()) if not k.startswith(bookkeeping))
