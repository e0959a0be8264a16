"""A run of a deployment gets the deployment's defaults for every field its caller did not set.

Prefect merges a run's parameters into the deployment's only at the top level, so a run triggered with
`cfg={"steps": 5}` (the API, `run_deployment`, a script) would take every other field of `cfg` from the
pydantic model's defaults, not from params.yaml as deployed: `train.base` would become '' and the run
would tune another generator. Each stage flow passes its section through `with_deployment_defaults`.
Kept apart from synrank.deploy so that a stage's code (synrank.codehash) does not grow by the registries."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


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


def with_deployment_defaults(name: str, value: M) -> M:
    """In a flow run created from a deployment: parameter `name` with every field the caller did not set
    taken from the deployment's default (params.yaml when deployed) instead of the model's own default.
    Prefect merges a run's parameters into the deployment's only at the top level, so a run triggered
    with `cfg={"steps": 5}` (the API, `run_deployment`, a script) would otherwise reset every other field,
    `base` included. Anywhere else (the CLI, a subflow of the pipeline) `value` is returned as it is."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    deployment_id = getattr(getattr(ctx, "flow_run", None), "deployment_id", None)
    if deployment_id is None:
        return value
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        defaults = (client.read_deployment(deployment_id).parameters or {}).get(name)
    return value if defaults is None else type(value).model_validate(merge_set_fields(value, defaults))
