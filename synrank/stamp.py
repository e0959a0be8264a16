"""What a stage's result is keyed by, and whether its stamp still vouches for it: no Prefect, no MLflow.

A stage's identity is what its fingerprint hashes: its params (the content fields of its config sections),
the content of its input folders and files, and `extra` content ids (model weights that are not an input
folder); the fingerprint adds the stage's code (synrank.codehash). `synrank.stage.stage_run` skips a
stage whose stamp (`_stage.json`) holds this fingerprint and the output folder's current content id.

The identity functions below are the one definition of each stage's key: the flows pass them to
`stage_run`, the pipeline checks a remote train run with them, and `synrank pipeline` asks `up_to_date`
before it starts Prefect, so a rerun with nothing changed starts no server and opens no run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from synrank import scorer_weights
from synrank.codehash import stage_code_id
from synrank.config import (
    ROOT,
    STAGE_OUTPUT,
    Config,
    EvaluateConfig,
    ExportConfig,
    GenerateConfig,
    GeneratorSpec,
    IngestConfig,
    Paths,
    RankConfig,
    SampleConfig,
    ScoreConfig,
    TrainConfig,
    base_generator,
    flow_parameters,
)
from synrank.fingerprint import STAMP, cached_weights_id, generator_id, path_id, reward_id
from synrank.models_io import tuned_spec
from synrank.prompts import source_path

Params = BaseModel | dict[str, Any]  # sections, or JSON values such as the scorers' weights
# What stage_run and fingerprint take besides the stage name: {"params", "inputs", "extra"}.
Identity = dict[str, Any]


def section_dict(params: Params) -> dict[str, Any]:
    """`params` as JSON-ready dicts: one section's model_dump, or {key: model_dump} for a dict of sections."""
    if isinstance(params, BaseModel):
        return params.model_dump(mode="json")
    return {k: v.model_dump(mode="json") if isinstance(v, BaseModel) else v for k, v in params.items()}


def content_params(params: Any) -> Any:
    """`section_dict` without the fields that change where the work runs but not what it writes (a section's
    `CONTENT_EXCLUDED`, e.g. generate.engine): the part of the params a stage's fingerprint hashes."""
    if isinstance(params, dict):
        return {k: content_params(v) for k, v in params.items()}
    if isinstance(params, list):
        return [content_params(v) for v in params]
    if not isinstance(params, BaseModel):
        return params
    skip = getattr(params, "CONTENT_EXCLUDED", frozenset())
    dumped = params.model_dump(mode="json")
    return {
        k: content_params(getattr(params, k)) if isinstance(getattr(params, k), (BaseModel, list, dict)) else v
        for k, v in dumped.items()
        if k not in skip
    }


def code_hash(stage: str) -> str:
    """Content id of the code the stage runs (synrank.codehash: its flow's import closure); tests hold it still."""
    return stage_code_id(stage)


def fingerprint(name: str, params: Params, inputs: list[Path], extra: dict[str, str] | None = None) -> str:
    """sha256 (hex) of the stage name, its content params, the content ids of its inputs, `extra` content ids
    (model weights) and its code (synrank.codehash: the files its flow imports)."""
    h = hashlib.sha256(name.encode())
    h.update(json.dumps(content_params(params), sort_keys=True).encode())
    for p in inputs:
        h.update(path_id(Path(p)).encode())
    h.update(json.dumps(extra or {}, sort_keys=True).encode())
    h.update(code_hash(name).encode())
    return h.hexdigest()


def output_id(out: Path) -> str:
    """Content id of a stage's output folder, its stamp and hidden files (temporaries, lock) left out."""
    return path_id(out)


def read_stamp(out: Path) -> dict[str, Any] | None:
    """The stage stamp `out`/_stage.json (stage, fingerprint, outputs, metrics, report); None when it is
    missing or unreadable."""
    try:
        return json.loads((out / STAMP).read_text())
    except (OSError, ValueError):
        return None


def is_current(stamp: dict[str, Any] | None, fp: str, out: Path) -> bool:
    """Whether `stamp` vouches for `out`: it holds fingerprint `fp` and the folder's content is as it recorded."""
    return bool(stamp and stamp.get("fingerprint") == fp and stamp.get("outputs") == output_id(out))


# ---- each stage's identity, from its flow's keyword arguments (synrank.config.flow_parameters) ----


def sample_identity(cfg: SampleConfig, paths: Paths, **_: Any) -> Identity:
    """The sample config and the prompt source files (editing one makes the stamp stale)."""
    return {"params": cfg, "inputs": [source_path(s.path) for s in cfg.sources]}


def generate_identity(cfg: GenerateConfig, paths: Paths, **_: Any) -> Identity:
    """The generate config, the prompts folder and each generator's weights' content id (a model retrained
    under the same name is new)."""
    extra = {g.name: generator_id(g) for g in cfg.generators}
    return {"params": cfg, "inputs": [paths.resolve("prompts")], "extra": extra}


def score_identity(cfg: ScoreConfig, paths: Paths, **_: Any) -> Identity:
    """The score config, the images folder and each reward's weights' content id (new weights under the same
    reward name score again)."""
    extra = {r.name: reward_id(r) for r in cfg.rewards}
    return {"params": cfg, "inputs": [paths.resolve("images")], "extra": extra}


def rank_identity(cfg: RankConfig, paths: Paths, **_: Any) -> Identity:
    """The rank config and the scores' and images' folders."""
    return {"params": cfg, "inputs": [paths.resolve("scores"), paths.resolve("images")]}


def train_identity(cfg: TrainConfig, generate: GenerateConfig, paths: Paths, **_: Any) -> Identity:
    """The train config, the base generator, the rankings' and images' content (and the prompts' with
    balance_tasks), the base weights' content.
    ConfigError when `cfg.base` names no generator."""
    spec = base_generator(cfg, generate)
    # balance_tasks reads each prompt's category from the prompts folder; otherwise training never opens it.
    extra_inputs = [paths.resolve("prompts")] if cfg.balance_tasks else []
    if cfg.launch.config_file:  # what the launch reads from it (distributed type, plugins) shapes the run
        extra_inputs.append(ROOT / cfg.launch.config_file)
    return {
        "params": {"train": cfg, "base": spec},
        "inputs": [paths.resolve("rankings"), paths.resolve("images"), *extra_inputs],
        "extra": {"base_weights": generator_id(spec)},
    }


def evaluate_models(
    cfg: EvaluateConfig, generate: GenerateConfig, model_dir: Path
) -> tuple[GeneratorSpec, GeneratorSpec, list[GeneratorSpec]]:
    """(base, tuned, others) that evaluate compares: the train stage's model (tuned.json in `model_dir`), its
    base and, with `cfg.all_generators`, every other generator. FileNotFoundError without tuned.json."""
    base, tuned = tuned_spec(model_dir)
    others = [g for g in generate.generators if g.name != base.name] if cfg.all_generators else []
    return base, tuned, others


def evaluate_identity(
    cfg: EvaluateConfig, rewards: ScoreConfig, generate: GenerateConfig, paths: Paths, **_: Any
) -> Identity:
    """The evaluate and reward settings, the tuned model and prompts folders, and the weights' content ids of
    the base, the other generators and the rewards (a model retrained under the same name is evaluated again)."""
    model_dir = paths.resolve("model")
    base, _tuned, others = evaluate_models(cfg, generate, model_dir)
    scorers = scorer_weights.chosen(cfg.benchmarks)  # where each benchmark's scorer weights are (MLflow params)
    weights = {
        **{f"generator:{g.name}": generator_id(g) for g in [base, *others]},
        **{f"reward:{r.name}": reward_id(r) for r in rewards.rewards},
        **{f"scorer:{key}": cached_weights_id(location) for key, location in scorers.items()},  # their content
    }
    params = {"evaluate": cfg, "rewards": rewards, "scorers": scorers, **{f"generator_{g.name}": g for g in others}}
    return {"params": params, "inputs": [model_dir, paths.resolve("prompts")], "extra": weights}


def export_identity(
    cfg: ExportConfig, generate: GenerateConfig, score: ScoreConfig, rank: RankConfig, paths: Paths, **_: Any
) -> Identity:
    """The export config and, since the dataset card names the generators, rewards and aggregation, the
    generate, score and rank settings; the images', scores' and rankings' folders."""
    params = {"export": cfg, "generate": generate, "score": score, "rank": rank}
    return {"params": params, "inputs": [paths.resolve(k) for k in ("images", "scores", "rankings")]}


def ingest_identity(cfg: IngestConfig, paths: Paths, **_: Any) -> Identity:
    """The ingest settings and the source dataset's content."""
    return {"params": cfg, "inputs": [cfg.resolved_source()]}


IDENTITIES: dict[str, Callable[..., Identity]] = {
    "sample": sample_identity,
    "generate": generate_identity,
    "score": score_identity,
    "rank": rank_identity,
    "train": train_identity,
    "evaluate": evaluate_identity,
    "export": export_identity,
    "ingest": ingest_identity,
}


def up_to_date(stage: str, cfg: Config) -> bool:
    """Whether the stamp of `stage`'s output folder vouches for what `cfg` would make of the inputs on disk now
    (False when an input it needs to name its identity, such as the train stage's tuned.json, is missing)."""
    kwargs = flow_parameters(stage, cfg)
    try:
        fp = fingerprint(stage, **IDENTITIES[stage](**kwargs))
    except FileNotFoundError:
        return False
    out = cfg.paths.resolve(STAGE_OUTPUT[stage])
    return is_current(read_stamp(out), fp, out)
