"""Faults injected into Ray worker processes by tests/test_ray.py, through Ray's `worker_process_setup_hook`.

`arm` runs once in every new worker: it wraps the publishing and rendering functions of tasks.generate so that,
on each call, they read the test's control folder ($SYNRANK_RAY_FAULTS):
- `mode` = "kill-after-publish": the first shard tar published anywhere (a marker file created exclusively)
  is followed by SIGKILL of that worker, before its task returns;
- `mode` = "stall-first": the first shard rendered anywhere writes the worker's node id to `stalled` and
  sleeps, so the test can remove that node mid-shard;
and every render appends the worker's node id to `nodes` (where tasks ran).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def _first(control: Path, name: str) -> bool:
    """True for exactly one caller over all workers: whoever creates `name` first."""
    try:
        os.close(os.open(control / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def arm() -> None:
    import ray

    import synrank.shards as shards
    import tasks.generate as generate

    control = Path(os.environ["SYNRANK_RAY_FAULTS"])
    publish, render = generate.write_shard, generate.render_shard

    def mode() -> str:
        return (control / "mode").read_text().strip() if (control / "mode").exists() else ""

    def write_shard(*args, **kwargs):
        out = publish(*args, **kwargs)
        if mode() == "kill-after-publish" and _first(control, "killed"):
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    def render_shard(*args, **kwargs):
        node = ray.get_runtime_context().get_node_id()
        with open(control / "nodes", "a") as f:
            f.write(node + "\n")
        if mode() == "stall-first" and _first(control, "stall-claimed"):
            (control / "stalled").write_text(node)
            time.sleep(600)  # until the test removes this node
        return render(*args, **kwargs)

    # Both names: a task function shipped by value (cloudpickle) refers to synrank.shards.write_shard itself.
    shards.write_shard = generate.write_shard = write_shard
    generate.render_shard = render_shard
