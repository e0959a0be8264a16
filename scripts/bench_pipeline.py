"""The default pipeline's wall time against its stages' own compute, and what a run with nothing to do costs.

    .venv/bin/python scripts/bench_pipeline.py [--full] [--repeats 3] [--json out.json]

Run it in a clone of the project (make env done). It measures, one command at a time:
1. `--full`: `make run` from nothing (`make clean` first: outputs, metrics and the MLflow store go), timed.
   Its pipeline run's stage runs are then read from the MLflow store: each stage's compute is its MLflow
   run's duration (the stage's own work: loading, rendering, scoring, training, evaluating). The
   orchestration overhead is the rest of the wall time: `make`'s own steps (uv, `synrank data`), Python
   and Prefect start-up, the temporary Prefect server, flow and task bookkeeping, and `synrank table`.
   Without --full the newest pipeline run in the store is read and only its own span is known.
2. A no-op `make run` (everything current), `--repeats` times (not with --no-make-run).
3. `make repro` once after `make run` (dvc.lock entries stale, stamps current), then a no-op `dvc repro` and
   a no-op `make repro`, `--repeats` times each.
4. The per-call cost of a stage command: `synrank sample` with nothing to do (its stamp current), and
   `synrank sample` running its flow into a scratch folder with Prefect's temporary server and with a
   running one (`make up`, then `make down`), `--repeats` times each.
Not a test: the numbers depend on the machine and its load; record both with the output.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOG = ROOT / "run" / "bench-pipeline.log"  # every command's output (run/ is ignored by git)
STAGES = ("sample", "generate", "score", "rank", "train", "evaluate")


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    """Wall seconds of `cmd` run in the project root; its output goes to LOG."""
    t0 = time.perf_counter()
    LOG.parent.mkdir(exist_ok=True)
    with LOG.open("a") as log:
        log.write(f"\n$ {' '.join(cmd)}  ({datetime.now():%H:%M:%S})\n")
        log.flush()
        done = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}); see {LOG}")
    return time.perf_counter() - t0


def stage_runs() -> dict[str, float]:
    """{'pipeline': s, <stage>: s}: the MLflow run durations of the longest pipeline run in the store (the
    full run; a no-op run takes seconds) and of its stage runs."""
    sys.path.insert(0, str(ROOT))
    import mlflow

    from synrank.config import load_config
    from synrank.tracking import tracking_uri

    cfg = load_config()
    client = mlflow.MlflowClient(tracking_uri(cfg.tracking))
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=500)
    pipelines = [r for r in runs if r.info.run_name.startswith("pipeline") and r.info.end_time]
    parent = max(pipelines, key=lambda r: r.info.end_time - r.info.start_time)  # the full run, not a no-op
    out = {"pipeline": (parent.info.end_time - parent.info.start_time) / 1000}
    for r in runs:
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id:
            stage = r.info.run_name.split(" ")[0]
            out[stage] = (r.info.end_time - r.info.start_time) / 1000
    return out


def flow_call(synrank: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one `synrank sample` that runs its flow (Prefect flow run, MLflow run, 0.4 s of work)
    into a scratch folder emptied first, so that the outputs the other measurements rely on stay current."""
    scratch = ROOT / "run" / "bench-prompts"
    shutil.rmtree(scratch, ignore_errors=True)
    return timed([*synrank, "sample", "--set", f"paths.prompts={scratch}"], env)


def median_range(values: list[float]) -> str:
    """'m [lo, hi]' in seconds."""
    return f"{statistics.median(values):.1f} [{min(values):.1f}, {max(values):.1f}]"


def measure(args: argparse.Namespace) -> dict:
    """All four measurements, in order; returns them as a dict (seconds)."""
    make, synrank = ["make", "--no-print-directory"], [str(ROOT / ".venv" / "bin" / "synrank")]
    # dvc runs each stage's `synrank <stage>` through the shell: the venv's bin first, as `uv run` does.
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    res: dict = {}
    if args.full:
        timed([*make, "clean"])
        res["full_make_run_s"] = timed([*make, "run"])
    res["mlflow_runs_s"] = stage_runs()
    if not args.no_make_run:
        res["noop_make_run_s"] = [timed([*make, "run"]) for _ in range(args.repeats)]
    # The first `make repro` (synrank repro) after `make run` runs every stage whose dvc.lock entry is stale:
    # each a `synrank <stage>` that finds its stamp current and returns before Prefect. Later ones are no-ops.
    res["repro_after_run_s"] = timed([*make, "repro"])
    res["dvc_repro_s"] = [timed(["dvc", "repro"], env) for _ in range(args.repeats)]
    res["make_repro_s"] = [timed([*make, "repro"]) for _ in range(args.repeats)]
    res["noop_call_s"] = [timed([*synrank, "sample"], env) for _ in range(args.repeats)]
    res["call_temporary_server_s"] = [flow_call(synrank, env) for _ in range(args.repeats)]
    timed([*make, "up"])
    try:
        ports = dict(line.split("=", 1) for line in (ROOT / "run" / "ports.env").read_text().split())
        served = {**env, "PREFECT_API_URL": f"http://127.0.0.1:{ports['PREFECT_PORT']}/api"}
        res["call_running_server_s"] = [flow_call(synrank, served) for _ in range(args.repeats)]
    finally:
        timed([*make, "down"])
    return res


def report(res: dict) -> str:
    """A markdown table of the measurements."""
    runs = res["mlflow_runs_s"]
    compute = sum(runs.get(s, 0.0) for s in STAGES)
    rows = [
        "| measurement | seconds |",
        "|---|---:|",
        *(f"| stage {s} (MLflow run) | {runs[s]:.1f} |" for s in STAGES if s in runs),
        f"| sum of the stages | {compute:.1f} |",
        f"| pipeline flow (MLflow run) | {runs['pipeline']:.1f} |",
    ]
    if "full_make_run_s" in res:
        wall = res["full_make_run_s"]
        rows += [
            f"| `make run` from nothing | {wall:.1f} |",
            f"| orchestration = wall - stages | {wall - compute:.1f} ({(wall - compute) / wall:.1%}) |",
        ]
    rows += [
        *([f"| no-op `make run` | {median_range(res['noop_make_run_s'])} |"] if "noop_make_run_s" in res else []),
        f"| first `make repro` after `make run` (stale dvc.lock entries, stamps current) | "
        f"{res['repro_after_run_s']:.1f} |",
        f"| no-op `dvc repro` | {median_range(res['dvc_repro_s'])} |",
        f"| no-op `make repro` (`synrank data`, then `synrank repro`) | {median_range(res['make_repro_s'])} |",
        f"| no-op `synrank sample` (stamp current: no Prefect) | {median_range(res['noop_call_s'])} |",
        f"| `synrank sample` running its flow, temporary Prefect server | "
        f"{median_range(res['call_temporary_server_s'])} |",
        f"| `synrank sample` running its flow, running server (`make up`) | "
        f"{median_range(res['call_running_server_s'])} |",
    ]
    return "\n".join(rows)


def main() -> None:
    """Parse the flags, measure, print the table (and write the JSON)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", action="store_true", help="time a whole `make run` from nothing first")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-make-run", action="store_true", help="leave out the no-op `make run`")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    res = measure(args)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    print(report(res))


if __name__ == "__main__":
    main()
