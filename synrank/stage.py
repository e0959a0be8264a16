"""What every stage flow shares: a lock, an MLflow run, an up-to-date check, and a stamp written last.

A stage writes into its output folder and, only when it has finished, `_stage.json`: the stage's
fingerprint (its config, the content ids of its inputs and of the code it runs) and the content id
of what it wrote, plus its metrics. A later run skips the work only when both still match: the same
inputs, config and code, and outputs nobody has touched since. A failed or killed run never writes
a stamp and never removes the previous one, so the last good result stays recorded; whatever it left
in the folder changes the output id, so the old stamp no longer vouches for it.
`dvc repro` removes a stage's outs before running it, so the two ways of running never disagree.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from pydantic import BaseModel

from synrank import runlock, tracking
from synrank.atomic import write_json
from synrank.config import TrackingConfig
from synrank.fingerprint import STAMP, save_cache
from synrank.stamp import Params, fingerprint, is_current, output_id, read_stamp, section_dict


def log_results(name: str, st: Stage) -> None:
    """The stage's metrics under MLflow-valid names (tracking.metric_key; a renamed one is listed in the
    report's `metric_names`) and its report as `<name>_report.json`."""
    keys = {k: tracking.metric_key(k) for k in st.metrics}
    if renamed := {k: v for k, v in keys.items() if k != v}:
        st.report["metric_names"] = renamed
    if st.metrics:
        mlflow.log_metrics({keys[k]: v for k, v in st.metrics.items()})
    if st.report:
        mlflow.log_dict(st.report, f"{name}_report.json")


def run_params(name: str, params: Params) -> dict[str, str]:
    """A stage run's MLflow params, named as the pipeline's parent run names them (params.yaml's keys):
    its own section under the stage's name (`train.steps`), any other part of `params` under its key
    (`base.name`, `rewards.rewards.0.name`), so a column means one setting in every run."""
    if isinstance(params, BaseModel):
        return tracking.flatten(name, section_dict(params))
    dumped = section_dict(params)
    return {k: v for key, part in dumped.items() for k, v in tracking.flatten(key, part).items()}


@dataclass
class Stage:
    """One stage run as its body sees it: whether the stamp makes it up to date, its fingerprint, and the
    metrics and report it fills in (stamped and logged to its MLflow run `run_id` at the end)."""

    name: str
    out: Path
    fingerprint: str
    up_to_date: bool
    metrics: dict[str, float] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    run_id: str = ""
    run_url: str | None = None  # the run's MLflow UI page with a tracking server, else None

    def log(self, **metrics: float) -> None:
        """Add `metrics` (cast to float) to the stage's metrics, replacing same-named ones."""
        self.metrics.update({k: float(v) for k, v in metrics.items()})


def note_runs(run_id: str) -> None:
    """Record this stage's MLflow run and Prefect flow run in the lock, for `runlock.mark_crashed`."""
    runlock.note("mlflow", {"uri": mlflow.get_tracking_uri(), "run_id": run_id})
    from prefect.runtime import flow_run

    if flow_run.id:
        runlock.note("prefect", {"id": str(flow_run.id)})


def finished(st: Stage, out: Path | str) -> Any:
    """What a stage's flow returns: its output folder, and, for a stage found up to date, that folder in a
    Completed state named Cached with the reason, so that the Prefect UI tells the runs that did no work
    apart from the ones that did (a caller of the flow gets the folder either way)."""
    if not st.up_to_date:
        return str(out)
    from prefect.states import Completed

    return Completed(name="Cached", message=f"{st.name} up to date: its stamp matches, nothing ran", data=str(out))


@contextmanager
def stage_run(
    name: str,
    params: Params,
    inputs: list[Path],
    out: Path,
    tracking_cfg: TrackingConfig,
    force: bool = False,
    extra: dict[str, str] | None = None,
) -> Iterator[Stage]:
    """Run a stage body inside an MLflow run, holding the output folder's lock; skip the body
    (`stage.up_to_date`) if the stamp matches the fingerprint and the folder's content.
    `extra`: content ids of inputs that are not paths (model weights). Raises runlock.LockHeld at once
    if another run holds the folder."""
    if os.environ.get("RANK", "0") != "0":  # a non-main process of `accelerate launch`: compute only
        fp = fingerprint(name, params, inputs, extra)
        yield Stage(name, out, fp, up_to_date=is_current(read_stamp(out), fp, out) and not force)
        return
    with runlock.hold([out]):
        fp = fingerprint(name, params, inputs, extra)
        old = read_stamp(out)
        st = Stage(name, out, fp, up_to_date=is_current(old, fp, out) and not force)
        if st.up_to_date and old:
            st.metrics, st.report = dict(old.get("metrics", {})), dict(old.get("report", {}))
        tracking.setup(tracking_cfg)
        if marked := runlock.mark_crashed(runlock.pop_killed()):
            print(f"[{name}] the previous run on {out} was killed; marked " + ", ".join(marked))
        parent = os.environ.get(tracking.PARENT_ENV) or None
        ident = tracking.run_identity(name)
        ident["tags"]["synrank.up_to_date"] = str(st.up_to_date)
        ident["tags"]["synrank.output"] = str(out)  # the workspace's folder, or an experiment's own
        with mlflow.start_run(nested=parent is not None, parent_run_id=parent, **ident) as run:
            st.run_id = run.info.run_id
            note_runs(st.run_id)
            st.run_url = tracking.run_url(st.run_id, run.info.experiment_id)
            tracking.link_from_prefect(name, st.run_id, run.info.experiment_id)
            mlflow.log_params(run_params(name, params))
            mlflow.log_param(f"{name}.fingerprint", fp[:16])
            t0 = time.time()
            out.mkdir(parents=True, exist_ok=True)
            yield st
            if not st.up_to_date:
                st.metrics.setdefault("seconds", time.time() - t0)
            # Tracked first: a run whose metrics MLflow refused leaves no stamp, so a rerun does the work
            # again instead of calling a run with no numbers up to date.
            log_results(name, st)
            if not st.up_to_date:
                # Written last: only a run that got here vouches for the folder's content.
                write_json(
                    out / STAMP,
                    {
                        "stage": name,
                        "fingerprint": fp,
                        "outputs": output_id(out),
                        "metrics": st.metrics,
                        "report": st.report,
                    },
                )
            save_cache()
    print(f"[{name}] {'up to date, skipped' if st.up_to_date else 'done'} -> {out}")
