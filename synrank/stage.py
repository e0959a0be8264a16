"""What every stage flow shares: an MLflow run, an up-to-date check, and a stamp written last.

A stage writes into its output folder and, only when it has finished, `_stage.json`: the stage's
fingerprint (its config, the fingerprints of its inputs, the code) and its metrics. A second run with
the same fingerprint skips the work and logs the stored metrics, which is what makes a second
`make run` cheap; a missing stamp means the work is incomplete (resumable stages keep their shards).
`dvc repro` removes a stage's outs before running it, so the two ways of running never disagree.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from pydantic import BaseModel

from synrank import tracking
from synrank.config import ROOT, TrackingConfig

STAMP = "_stage.json"
CODE_DIRS = ("synrank", "flows", "tasks", "models")


def _hash_path(path: Path, h: Any) -> None:
    stamp = path / STAMP
    if stamp.exists():  # an upstream stage: its fingerprint stands for its whole folder
        h.update(json.loads(stamp.read_text())["fingerprint"].encode())
    elif path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts:
                h.update(str(p.relative_to(path)).encode())
                h.update(p.read_bytes())
    elif path.exists():
        h.update(path.read_bytes())
    else:
        h.update(b"<missing>")


def code_hash() -> str:
    h = hashlib.sha256()
    for d in CODE_DIRS:
        _hash_path(ROOT / d, h)
    return h.hexdigest()


Params = BaseModel | dict[str, BaseModel]


def dump_params(params: Params) -> dict[str, Any]:
    if isinstance(params, BaseModel):
        return params.model_dump(mode="json")
    return {k: v.model_dump(mode="json") for k, v in params.items()}


def fingerprint(name: str, params: Params, inputs: list[Path]) -> str:
    h = hashlib.sha256(name.encode())
    h.update(json.dumps(dump_params(params), sort_keys=True).encode())
    for p in inputs:
        _hash_path(Path(p), h)
    h.update(code_hash().encode())
    return h.hexdigest()


def read_stamp(out: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out / STAMP).read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically: a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


@dataclass
class Stage:
    name: str
    out: Path
    fingerprint: str
    up_to_date: bool
    metrics: dict[str, float] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    run_id: str = ""

    def log(self, **metrics: float) -> None:
        self.metrics.update({k: float(v) for k, v in metrics.items()})


@contextmanager
def stage_run(name: str, params: Params, inputs: list[Path], out: Path,
              tracking_cfg: TrackingConfig, force: bool = False) -> Iterator[Stage]:
    """Run a stage body inside an MLflow run; skip it (`stage.up_to_date`) if its stamp matches."""
    fp = fingerprint(name, params, inputs)
    old = read_stamp(out)
    st = Stage(name, out, fp, up_to_date=bool(old and old.get("fingerprint") == fp and not force))
    if st.up_to_date:
        st.metrics, st.report = dict(old.get("metrics", {})), dict(old.get("report", {}))
    if os.environ.get("RANK", "0") != "0":  # a non-main process of `accelerate launch`: compute only
        yield st
        return
    tracking.setup(tracking_cfg)
    parent = os.environ.get(tracking.PARENT_ENV) or None
    with mlflow.start_run(run_name=name, nested=parent is not None, parent_run_id=parent,
                          tags={"synrank.stage": name, "synrank.up_to_date": str(st.up_to_date)}) as run:
        st.run_id = run.info.run_id
        mlflow.log_params(tracking.flatten(name, dump_params(params)))
        mlflow.log_param(f"{name}.fingerprint", fp[:16])
        t0 = time.time()
        if not st.up_to_date:
            out.mkdir(parents=True, exist_ok=True)
            (out / STAMP).unlink(missing_ok=True)
        yield st
        if not st.up_to_date:
            st.metrics.setdefault("seconds", time.time() - t0)
            write_json(out / STAMP, {"stage": name, "fingerprint": fp, "metrics": st.metrics,
                                     "report": st.report})
        if st.metrics:
            mlflow.log_metrics({tracking.metric_key(k): v for k, v in st.metrics.items()})
        if st.report:
            mlflow.log_dict(st.report, f"{name}_report.json")
    print(f"[{name}] {'up to date, skipped' if st.up_to_date else 'done'} -> {out}")
