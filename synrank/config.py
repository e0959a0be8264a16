"""The one typed configuration of synrank: loading params.yaml, `--set` overrides, the flows' parameters.

`params.yaml` is validated against `Config`; the CLI's `--set a.b=v` overrides and the Prefect flows'
parameters are the same pydantic models, so the Prefect UI renders them as typed forms. Every model
forbids unknown keys, so a typo is an error that names the key instead of a silently ignored setting.
The section models themselves are in synrank.config_sections and re-exported here: import them from
either module.
"""

from __future__ import annotations

import types
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from synrank.config_sections import (
    CODE_ROOT,
    ROOT,
    WORKSPACE,
    Config,
    EvaluateConfig,
    ExportConfig,
    GenerateConfig,
    GeneratorSpec,
    IngestConfig,
    OnlineConfig,
    Paths,
    PromptSource,
    RankConfig,
    RewardSpec,
    SampleConfig,
    ScoreConfig,
    Strict,
    StudyArm,
    StudyConfig,
    TrackingConfig,
    TrainConfig,
)
from synrank.stages import PIPELINE, STAGE_OUTPUT
from synrank.stages import STAGES as STAGE_SPECS

__all__ = [  # the sections (re-exported) and this module's own names
    "CODE_ROOT",
    "ROOT",
    "WORKSPACE",
    "Config",
    "EvaluateConfig",
    "ExportConfig",
    "GenerateConfig",
    "GeneratorSpec",
    "IngestConfig",
    "OnlineConfig",
    "Paths",
    "PromptSource",
    "RankConfig",
    "RewardSpec",
    "SampleConfig",
    "ScoreConfig",
    "Strict",
    "StudyArm",
    "StudyConfig",
    "TrackingConfig",
    "TrainConfig",
    "PARAMS_FILE",
    "STAGES",
    "STAGE_OUTPUT",
    "ConfigError",
    "apply_overrides",
    "base_generator",
    "field_type",
    "flow_parameters",
    "load_config",
    "params_yaml",
    "parse_override",
    "parse_value",
    "stage_outputs",
    "validate",
]

PARAMS_FILE = ROOT / "params.yaml"


class ConfigError(ValueError):
    """A bad key or value; the message is one line and names the key."""


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"unknown key '{key}'"
    if first["type"] == "missing":
        return f"missing key '{key}'"
    if first["type"] == "plugin_name":  # synrank.plugins.plugin_key: "'x' is not a reward kind; allowed: ..."
        return f"bad value for '{key}': {first.get('input')!r} {first['msg']}"
    return f"bad value for '{key}': {first['msg']} (got {first.get('input')!r})"


def field_type(keys: list[str], model: type[BaseModel] = Config) -> Any:
    """The annotation of the Config field at `keys` (list items by index), or None for an unknown key
    (left for validation to report by name)."""
    tp: Any = model
    for k in keys:
        if isinstance(tp, type) and issubclass(tp, BaseModel) and k in tp.model_fields:
            tp = tp.model_fields[k].annotation
        elif get_origin(tp) is list and k.isdigit():
            tp = get_args(tp)[0]
        else:
            return None
    return tp


def _members(tp: Any) -> tuple[list[Any], bool]:
    """(the non-None members of a union, whether None is one of them); a plain type is its own member."""
    if get_origin(tp) in (Union, types.UnionType):
        args = get_args(tp)
        return [a for a in args if a is not type(None)], type(None) in args
    return [tp], False


def _string_typed(tp: Any) -> bool:
    """True for str, a Literal of strings, and lists of those (optionally `| None`); `Annotated[str, ...]` (a
    plugin name, synrank.plugins) is a str."""
    members, _ = _members(tp)
    for m in members:
        if get_origin(m) is Annotated:
            m = get_args(m)[0]
        if get_origin(m) is Literal:
            ok = all(isinstance(a, str) for a in get_args(m))
        elif get_origin(m) is list:
            ok = _string_typed(get_args(m)[0])
        else:
            ok = m is str
        if not ok:
            return False
    return bool(members)


def parse_value(keys: list[str], raw: str) -> Any:
    """The override's text as the target field expects it. Numbers, lists, null... are read as YAML,
    except for string fields: YAML 1.1 reads `no` as False and `123` as an int, so `train.mixed_precision=no`
    or a generator named `123` would fail as "got False"; there every scalar stays the text written."""
    key = ".".join(keys)
    if not raw.strip():
        return ""
    tp = field_type(keys)
    strings = tp is not None and _string_typed(tp)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        if strings:
            return raw
        raise ConfigError(f"bad value for '{key}': {raw!r} is not valid YAML ({str(err).splitlines()[0]})") from None
    if not strings or (value is None and _members(tp)[1]):  # null stays null where the field allows it
        return value
    text = yaml.load(raw, Loader=yaml.BaseLoader)  # the same YAML with every scalar a string
    return text if isinstance(text, (str, list)) else raw


def parse_override(item: str) -> tuple[list[str], Any]:
    """`train.beta=5000` -> (['train', 'beta'], 5000): see `parse_value` for how the text is read."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' is not of the form key=value")
    key, raw = item.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override '{item}' has an empty key")
    keys = key.strip().split(".")
    return keys, parse_value(keys, raw)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each `key=value` of `overrides` (parse_override) in the raw params mapping `data`, in place, and
    return it; list items are addressed by index. ConfigError for a key whose parent is not a mapping or an
    existing list item."""
    for item in overrides:
        keys, value = parse_override(item)
        node = data
        for i, k in enumerate(keys[:-1]):
            if isinstance(node, list) and k.isdigit() and int(k) < len(node):
                node = node[int(k)]
            elif isinstance(node, dict) and isinstance(node.setdefault(k, {}), (dict, list)):
                node = node[k]
            else:
                raise ConfigError(f"unknown key '{'.'.join(keys[: i + 1])}'")
        last = keys[-1]
        if isinstance(node, list):
            if not (last.isdigit() and int(last) < len(node)):
                raise ConfigError(f"unknown key '{'.'.join(keys)}'")
            node[int(last)] = value
        else:
            node[last] = value
    return data


def validate(data: dict[str, Any]) -> Config:
    """`data` (a raw params mapping) as a Config; ConfigError with one line naming the first bad key."""
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_describe(err)) from None


def load_config(path: str | Path = PARAMS_FILE, overrides: list[str] | None = None) -> Config:
    """The params file at `path` with `overrides` (`key=value`) applied, validated. ConfigError for a missing
    file, invalid YAML, a top level that is not a mapping, or a bad key or value."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"params file '{path}' does not exist") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"params file '{path}' is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"params file '{path}' must hold a mapping at the top level")
    return validate(apply_overrides(data, overrides or []))


def params_yaml(cfg: Config) -> str:
    """params.yaml text for a config (used to write the committed default and by tests)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


STAGES = PIPELINE  # the six stages `synrank pipeline` runs, in order (synrank.stages)


def stage_outputs(paths: Paths, stages: Iterable[str] = STAGES) -> list[Path]:
    """The output folders of these stages."""
    return [paths.resolve(STAGE_OUTPUT[s]) for s in stages]


def flow_parameters(stage: str, cfg: Config) -> dict[str, BaseModel]:
    """The keyword arguments of `flows.<stage>.<stage>_flow` taken from one Config: the CLI, the parent
    pipeline and the Prefect deployments all call the flows through this one mapping."""
    spec = STAGE_SPECS[stage]
    if not spec.output:  # a composite flow (pipeline, online, study) takes the whole config
        return {"cfg": cfg}
    own = {arg: getattr(cfg, section) for arg, section in spec.args.items()}
    return {**own, "paths": cfg.paths, "tracking": cfg.tracking}


def base_generator(cfg: TrainConfig, generate: GenerateConfig) -> GeneratorSpec:
    """The generator `train.base` names (empty = the first of generate.generators); ConfigError naming the
    generators otherwise. The one lookup: the train stage, the online loop and validation all use it."""
    names = [g.name for g in generate.generators]
    if not cfg.base:
        return generate.generators[0]
    if cfg.base not in names:
        raise ConfigError(
            f"bad value for 'train.base': {cfg.base!r} is not a generator in generate.generators; "
            f"allowed: {', '.join(names)}"
        )
    return generate.generators[names.index(cfg.base)]
