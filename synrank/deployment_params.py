"""A run of a deployment: the deployment's defaults for every field its caller did not set, and, when its
settings differ from the deployment's, its own run folder (an experiment).

Defaults. Prefect merges a run's parameters into the deployment's only at the top level, so a run triggered
with `cfg={"steps": 5}` (the API, `run_deployment`, a script, the pipeline form, which shows a subset of the
fields) would take every other field of `cfg` from the pydantic model's defaults, not from params.yaml as
deployed: `train.base` would become '' and the run would tune another generator.

Experiments. The workspace's output folders are DVC's (dvc.yaml outs, recorded in dvc.lock with params.yaml),
so they change only through params.yaml: `synrank <stage>`, `dvc repro`, `dvc exp run`. A run from the Prefect
UI or the API whose settings differ from its deployment's (params.yaml as `make up` deployed it) writes the
outputs of its stage, or for the pipeline of the first changed stage and every stage after it, into
`paths.runs`/<flow run name>/ instead, and says so in its log; its MLflow runs record the folder. Where a
run's outputs go (`paths`), where it logs (`tracking`) and where it computes (`cluster`) are not settings
that make it an experiment. A run that names its own output folders keeps them.

Kept apart from cli.deploy so that a stage's code (synrank.codehash) does not grow by the registries."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from synrank.config import STAGE_OUTPUT, Config, Paths, flow_parameters

M = TypeVar("M", bound=BaseModel)
NOT_SETTINGS = ("paths", "tracking", "cluster")  # where outputs go, runs are logged, work runs
OUTPUT_FIELDS = {**{stage: (field,) for stage, field in STAGE_OUTPUT.items()}, "evaluate": ("eval", "metrics")}


def merge_set_fields(value: BaseModel, defaults: Any) -> Any:
    """`value`'s explicitly set fields (pydantic's model_fields_set) over `defaults` (a JSON dict),
    recursing into nested models; the other fields keep `defaults`' values."""
    if not isinstance(defaults, dict):
        return value.model_dump(mode="json")
    out = dict(defaults)
    for name in value.model_fields_set:
        field = getattr(value, name)
        out[name] = (
            merge_set_fields(field, defaults.get(name))
            if isinstance(field, BaseModel)
            else value.model_dump(mode="json", include={name})[name]
        )
    return out


def deployment_of_this_run() -> tuple[dict[str, Any], str] | None:
    """(the deployment's default parameters, this flow run's name) in a flow run created from a deployment;
    None anywhere else (the CLI, a sub-flow of the pipeline)."""
    from prefect.context import FlowRunContext

    run = getattr(FlowRunContext.get(), "flow_run", None)
    if getattr(run, "deployment_id", None) is None:
        return None
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_deployment(run.deployment_id).parameters or {}, run.name


def completed(value: M, defaults: Any) -> M:
    """`value` with every field its caller did not set taken from `defaults` (a deployment's JSON)."""
    return value if defaults is None else type(value).model_validate(merge_set_fields(value, defaults))


def with_deployment_defaults(name: str, value: M) -> M:
    """In a flow run created from a deployment: parameter `name` completed from the deployment's default
    (params.yaml when deployed); anywhere else `value` as it is."""
    found = deployment_of_this_run()
    return value if found is None else completed(value, found[0].get(name))


def changed_settings(run: Any, deployed: Any, prefix: str = "") -> list[str]:
    """The dotted names (`cfg.steps`) at which two JSON values differ, lists compared whole."""
    if not (isinstance(run, dict) and isinstance(deployed, dict)):
        return [] if run == deployed else [prefix.rstrip(".")]
    keys = sorted(set(run) | set(deployed))
    return [n for k in keys for n in changed_settings(run.get(k), deployed.get(k), f"{prefix}{k}.")]


def experiment_paths(paths: Paths, stages: list[str], run_name: str) -> Paths:
    """`paths` with the output folders of `stages` moved into `paths.runs`/<run_name>/ (same field names)."""
    folder = Path(paths.runs) / run_name
    return paths.model_copy(update={f: str(folder / f) for s in stages for f in OUTPUT_FIELDS[s]})


def settings_of(params: dict[str, Any], stage: str) -> dict[str, Any]:
    """A flow's parameters as JSON, without the ones that are not settings (NOT_SETTINGS) and with its own
    section (`cfg`) under the stage's name, as params.yaml names it (`train.steps`)."""
    dump = {k: v.model_dump(mode="json") if isinstance(v, BaseModel) else v for k, v in params.items()}
    return {stage if k == "cfg" else k: v for k, v in dump.items() if k not in NOT_SETTINGS}


def moved(paths: Any, deployed_paths: Any, stages: list[str]) -> bool:
    """Whether the run names other output folders for `stages` than the deployment does."""
    run, dep = (p.model_dump() if isinstance(p, BaseModel) else dict(p or {}) for p in (paths, deployed_paths))
    return any(run.get(f) != dep.get(f, run.get(f)) for s in stages for f in OUTPUT_FIELDS[s])


def announce(stages: list[str], changed: list[str], paths: Paths) -> None:
    """The flow run's log line that says this run is an experiment and where it writes."""
    where = ", ".join(str(paths.resolve(f)) for s in stages for f in OUTPUT_FIELDS[s])
    print(
        f"settings differ from the deployment's (params.yaml): {', '.join(changed)}. This run is an "
        f"experiment: it writes {where}; the workspace's outputs stay as dvc.lock records them."
    )


def stage_deployment_run(stage: str, cfg: M, paths: Paths, **others: BaseModel) -> tuple[M, Paths]:
    """A stage flow's `cfg` completed from its deployment's defaults and, for a run whose settings differ
    from the deployment's, `paths` with the stage's outputs in the run's own folder (see the module
    docstring). Outside a deployment run both come back as they are."""
    found = deployment_of_this_run()
    if found is None:
        return cfg, paths
    deployed, run_name = found
    cfg = completed(cfg, deployed.get("cfg"))
    changed = changed_settings(settings_of({"cfg": cfg, **others}, stage), settings_of(deployed, stage))
    if not changed or moved(paths, deployed.get("paths"), [stage]):
        return cfg, paths
    paths = experiment_paths(paths, [stage], run_name)
    announce([stage], changed, paths)
    return cfg, paths


def pipeline_deployment_run(cfg: Config, stages: list[str]) -> Config:
    """The pipeline's `cfg` completed from its deployment's defaults; in a run whose settings differ, the
    first stage they change and every stage after it write into the run's own folder."""
    found = deployment_of_this_run()
    if found is None:
        return cfg
    deployed, run_name = found
    cfg = completed(cfg, deployed.get("cfg"))
    base = Config.model_validate(deployed.get("cfg") or {})
    for i, stage in enumerate(stages):
        run, dep = (settings_of(flow_parameters(stage, c), stage) for c in (cfg, base))
        changed = changed_settings(run, dep)
        if changed and not moved(cfg.paths, base.paths, stages[i:]):
            cfg = cfg.model_copy(update={"paths": experiment_paths(cfg.paths, stages[i:], run_name)})
            announce(stages[i:], changed, cfg.paths)
            break
    return cfg
