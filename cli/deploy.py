"""Register the Prefect deployments declared in prefect.yaml, with params.yaml as their defaults.

    synrank deploy [--params FILE] [--set key=value ...] [--only NAME ...] [--file prefect.yaml]

talks to the Prefect server in $PREFECT_API_URL (`make up` runs it). prefect.yaml says which flows
are deployed, under which names, on which work pool, and where the code lives (its pull step);
params.yaml, validated as `synrank.config.Config`, gives each deployment its default parameters,
split by `synrank.config.flow_parameters` exactly as for `synrank <stage>` and the pipeline. A run
triggered with no parameters is therefore the run the CLI would do, and the UI shows the flows'
pydantic parameters as typed forms.

The defaults are a copy taken at deploy time: after editing params.yaml, deploy again (`make up`
always does). Missing work pools are created as process pools.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml

from models.validate import validate_config
from synrank.config import CODE_ROOT, PARAMS_FILE, STAGE_OUTPUT, Config, ConfigError, flow_parameters, load_config

DEPLOY_FILE = CODE_ROOT / "prefect.yaml"  # the code checkout: entrypoints are relative to it
ROOT_ENV = "SYNRANK_ROOT"
SET_WORKDIR = "prefect.deployments.steps.set_working_directory"

_ENV_PLACEHOLDER = re.compile(r"{{\s*\$(\w+)\s*}}")


class DeployError(RuntimeError):
    """prefect.yaml and the flows disagree, or a deployment cannot be built; one line."""


def deployment_parameters(flow: Any, cfg: Config) -> dict[str, Any]:
    """The JSON default parameters of a flow: `synrank.config.flow_parameters`, the one mapping that the
    CLI and the pipeline use too, checked against the flow's signature so a mismatch fails the deploy."""
    try:
        params = flow_parameters(flow.name, cfg)
    except KeyError:
        raise DeployError(f"synrank.config.flow_parameters knows no flow named '{flow.name}'") from None
    signature = inspect.signature(flow.fn).parameters
    required = {n for n, p in signature.items() if p.default is inspect.Parameter.empty}
    if not set(params) <= set(signature) or not required <= set(params):
        raise DeployError(f"flow '{flow.name}' takes {list(signature)} but flow_parameters gives {list(params)}")
    out = {name: value.model_dump(mode="json") for name, value in params.items()}
    if flow.name == "pipeline":  # the sections it never reads stay out of its defaults and its form
        out["cfg"] = {k: v for k, v in out["cfg"].items() if k not in PIPELINE_UNREAD}
    return out


PIPELINE_UNREAD = ("online", "study", "ingest")  # sections of `synrank online` / `study` / `ingest` only
# The pipeline form's fields: what a run from the UI usually changes (20 inputs, where the whole config is over
# a hundred). Every other setting keeps its deployed value from params.yaml (deployment_params.completed); the
# API still accepts them all, and the server still refuses a key that is not a setting.
PIPELINE_FORM = {
    "sample": ("eval_fraction", "seed"),
    "generate": ("images_per_prompt",),
    "rank": ("method", "rewards"),
    "train": (
        "base",
        "objective",
        "beta",
        "learning_rate",
        "steps",
        "prompts_per_step",
        "processes",
        "lora_rank",
        "mixed_precision",
        "seed",
    ),
    "evaluate": ("benchmarks", "max_prompts", "images_per_prompt"),
    "tracking": ("experiment", "register_model"),
}
EXPERIMENT_NOTE = (
    " A run whose settings differ from the deployed ones (params.yaml) is an experiment: it writes into "
    "a folder named after the flow run in paths.runs and leaves the workspace's outputs as dvc.lock records them."
)

# (schema definition, field) -> which list of choices the form offers; see form_schema.
SECTION_TITLES = {
    "sample": "Prompts",
    "generate": "Generation",
    "score": "Reward models",
    "rank": "Ranking",
    "train": "Training",
    "evaluate": "Evaluation",
    "export": "Dataset export",
    "ingest": "Existing preference data",
    "pipeline": "Pipeline config",
    "online": "Online loop config",
    "study": "Study config",
}


def form_schema(schema: dict[str, Any], stage: str, cfg: Config) -> dict[str, Any]:
    """The deployment's parameter form (its OpenAPI schema), shaped for a person:
    - the pipeline's form leaves out the online and study sections, which only their own flows read;
    - a stage deployment shows its own section only (`cfg`, titled e.g. "Training"); the shared sections
      (paths, tracking, the generators that train and evaluate read their models from) keep the values
      deployed from params.yaml and stay out of the form (the API still accepts them);
    - `train.base` is one of params.yaml's generators, so the server refuses a typo before the run (plugin
      names are choice lists already: their config types carry the enum, synrank.plugins).
    Returns a new dict; `schema` is Prefect's schema of the flow's signature."""
    out = json.loads(json.dumps(schema))
    if stage in STAGE_OUTPUT:  # a single stage (export too), not the pipeline, online or study
        out["properties"] = {"cfg": out["properties"]["cfg"]}
        out["required"] = [r for r in out.get("required", []) if r == "cfg"]
    if stage == "pipeline":
        trim_pipeline_form(out["definitions"])
    for name, prop in out["properties"].items():
        if name == "cfg":
            prop["title"] = SECTION_TITLES.get(stage, name)
            prop["description"] = ((prop.get("description") or "") + EXPERIMENT_NOTE).strip()
    base = out.get("definitions", {}).get("TrainConfig", {}).get("properties", {}).get("base")
    if base is not None:
        base["enum"] = ["", *(g.name for g in cfg.generate.generators)]
    return out


def shown_only(definition: dict[str, Any], shown: Iterable[str]) -> None:
    """Show only the `shown` properties of a schema definition; the others move to patternProperties, which
    the Prefect form does not render and the server's check still accepts (so a hidden setting keeps its
    deployed value, and an unknown key is still refused)."""
    props = definition["properties"]
    hidden = [k for k in props if k not in shown]
    definition["properties"] = {k: v for k, v in props.items() if k in shown}
    definition["required"] = [r for r in definition.get("required", []) if r in shown]
    if hidden:
        definition["patternProperties"] = {f"^({'|'.join(hidden)})$": {}}


def trim_pipeline_form(definitions: dict[str, Any]) -> None:
    """The pipeline's form: the sections and fields of PIPELINE_FORM; online and study (which a run of it
    never reads) are neither shown nor accepted."""
    whole = definitions["Config"]
    for name in PIPELINE_UNREAD:
        whole["properties"].pop(name, None)
    for section, prop in whole["properties"].items():
        if section in PIPELINE_FORM:
            ref = prop.get("$ref") or prop["allOf"][0]["$ref"]
            shown_only(definitions[ref.split("/")[-1]], PIPELINE_FORM[section])
    shown_only(whole, PIPELINE_FORM)
    whole["description"] = "The settings a run usually changes; every other one keeps its deployed value."


def fill_env(value: Any, env: Mapping[str, str]) -> Any:
    """Replace `{{ $NAME }}` in every string of `value`; an unset variable is an error."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            if m[1] not in env:
                raise DeployError(f"prefect.yaml uses ${m[1]}, which is not set")
            return env[m[1]]

        return _ENV_PLACEHOLDER.sub(sub, value)
    if isinstance(value, dict):
        return {k: fill_env(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [fill_env(v, env) for v in value]
    return value


def read_spec(path: str | Path = DEPLOY_FILE) -> list[dict[str, Any]]:
    """The deployments of prefect.yaml, each with its effective pull steps."""
    spec = yaml.safe_load(Path(path).read_text()) or {}
    deployments = spec.get("deployments") or []
    if not deployments:
        raise DeployError(f"{path} declares no deployments")
    out = []
    for d in deployments:
        d = dict(d)
        for key in ("name", "entrypoint"):
            if not d.get(key):
                raise DeployError(f"{path}: a deployment has no '{key}'")
        if not (d.get("work_pool") or {}).get("name"):
            raise DeployError(f"{path}: deployment '{d['name']}' has no work_pool.name")
        d["pull"] = d.get("pull", spec.get("pull")) or []
        out.append(d)
    return out


def code_directory(pull: list[dict[str, Any]], env: Mapping[str, str]) -> Path:
    """The directory of the (single) set_working_directory pull step, env placeholders filled in."""
    if len(pull) != 1 or SET_WORKDIR not in pull[0]:
        raise DeployError(f"synrank deploy supports exactly one '{SET_WORKDIR}' pull step, got {pull}")
    directory = Path(fill_env(pull[0][SET_WORKDIR]["directory"], env)).expanduser()
    if not directory.is_absolute():
        raise DeployError(f"pull step directory '{directory}' must be absolute")
    return directory


def ensure_work_pools(names: list[str], pool_type: str = "process") -> list[str]:
    """Create the work pools that do not exist yet; returns the names created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    created = []
    with get_client(sync_client=True) as client:
        for name in dict.fromkeys(names):
            try:
                client.read_work_pool(name)
                continue
            except ObjectNotFound:
                pass
            template = ProcessWorker.get_default_base_job_template() if pool_type == "process" else {}
            try:
                client.create_work_pool(WorkPoolCreate(name=name, type=pool_type, base_job_template=template))
                created.append(name)
            except ObjectAlreadyExists:  # created meanwhile by another deploy or a worker
                pass
    return created


def check_deployments(cfg: Config, names: list[str]) -> None:
    """Validate `cfg` once per deployment, for the sections that deployment's flow reads (models.validate.READS,
    a deployment is named after its command); ConfigError naming every deployment it is bad for, before any
    is deployed."""
    refused = []
    for name in names:
        try:
            validate_config(cfg, name)
        except ConfigError as err:
            refused.append(f"deployment '{name}': {err}")
    if refused:
        raise ConfigError("; ".join(refused))


def deploy(
    params: str | Path = PARAMS_FILE,
    overrides: list[str] | None = None,
    only: list[str] | None = None,
    spec_file: str | Path = DEPLOY_FILE,
    env: Mapping[str, str] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, UUID]:
    """Create or update the deployments of `spec_file` (all, or those named in `only`); returns their ids."""
    from prefect import Flow
    from prefect.runner.storage import LocalStorage
    from prefect.settings import PREFECT_API_URL

    cfg = load_config(params, overrides)
    specs = read_spec(spec_file)
    if only:
        unknown = sorted(set(only) - {d["name"] for d in specs})
        if unknown:
            raise DeployError(f"no deployment named {unknown} in {spec_file}")
        specs = [d for d in specs if d["name"] in only]
    check_deployments(cfg, [d["name"] for d in specs])
    if not PREFECT_API_URL.value():  # else Prefect would deploy into a throwaway ephemeral server
        raise DeployError("PREFECT_API_URL is not set: start the server (make up) or point it at one")
    env = {ROOT_ENV: str(CODE_ROOT), **(os.environ if env is None else env)}

    for name in ensure_work_pools([d["work_pool"]["name"] for d in specs]):
        log(f"created work pool '{name}' (process)")
    ids: dict[str, UUID] = {}
    for d in specs:
        directory = code_directory(d["pull"], env)
        pool = fill_env(d["work_pool"], env)
        # The flow is loaded from the code directory, exactly as a worker will load it.
        flow = Flow.from_source(LocalStorage(str(directory)), d["entrypoint"])
        deployment = flow.to_deployment(
            name=d["name"],
            parameters=deployment_parameters(flow, cfg),
            description=d.get("description"),
            tags=d.get("tags"),
            version=d.get("version"),
            work_pool_name=pool["name"],
            work_queue_name=pool.get("work_queue_name"),
            job_variables=pool.get("job_variables") or {},
        )
        # Prefect builds the schema from the signature; the form a person sees is shaped here (form_schema).
        shaped = form_schema(deployment._parameter_openapi_schema.model_dump(), flow.name, cfg)
        deployment._parameter_openapi_schema = type(deployment._parameter_openapi_schema)(**shaped)
        ids[d["name"]] = deployment.apply()
        log(f"deployed '{flow.name}/{d['name']}' on pool '{pool['name']}' ({ids[d['name']]}) from {directory}")
    return ids


def run_deploy(
    params: str | Path = PARAMS_FILE,
    overrides: list[str] | None = None,
    only: list[str] | None = None,
    spec_file: str | Path = DEPLOY_FILE,
) -> int:
    """`deploy` for a command line: a bad config or prefect.yaml is one line on stderr and exit code 2."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    try:
        deploy(params, overrides, only or None, spec_file)
    except (ConfigError, DeployError) as err:
        print(f"synrank deploy: {err}", file=sys.stderr)
        return 2
    except httpx.TransportError as err:
        print(f"synrank deploy: no Prefect server at {PREFECT_API_URL.value()} ({err})", file=sys.stderr)
        return 1
    return 0
