"""One pass over the whole config for what pydantic's types cannot see: names that refer to other entries,
duplicate names, group sizes, weights on disk. (Plugin names are types: synrank.plugins.plugin_key.)

Why here and not in the stages: a Prefect run, a model load or a finished generate stage used to be
what found out that `train.objective` had a typo or that `train.base` named no generator (the online
flow died with a bare StopIteration). `load_checked_config` (the CLI's and `synrank deploy`'s way in)
runs it after `load_config`, so they refuse a bad value with exit code 2, and at the start of the pipeline, online and
study flows (so a run triggered from the Prefect UI fails before any compute). It imports the objectives
(which of them form pairs) and the benchmarks (which weights they need) but loads no weights and writes
nothing.

Every error is a `ConfigError` of one line that names the key, the value and what is allowed.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from synrank.config import PARAMS_FILE, ROOT, Config, ConfigError, load_config
from synrank.plugins import plugin_names
from synrank.stages import STAGES


def pair_objectives() -> list[str]:
    """Objectives whose pairs are formed inside a prompt's group, so they need K >= 2 images per prompt.
    SUDO pairs an image with a batch mate instead, and sft / rwr only weigh single images."""
    from models.objectives import OBJECTIVES

    return [n for n in OBJECTIVES.names() if OBJECTIVES.get(n).pairs is not None and not OBJECTIVES.get(n).self_pairs]


def _refuse(key: str, value: object, problem: str, allowed: Iterable[str]) -> ConfigError:
    return ConfigError(f"bad value for '{key}': {value!r} {problem}; allowed: {', '.join(allowed) or '(none)'}")


def _one_of(key: str, value: str, allowed: list[str], what: str) -> None:
    if value not in allowed:
        raise _refuse(key, value, f"is not {what}", allowed)


# The config sections each command (a CLI command, a deployment of the same name) reads (synrank.stages):
# validation checks those and nothing else, so a smoke config trimmed for one stage does not fail on a
# section it never opens. "all" (`synrank deploy` of every flow) reads every section.
READS: dict[str, tuple[str, ...]] = {
    **{name: stage.reads for name, stage in STAGES.items()},
    "all": tuple(dict.fromkeys(section for stage in STAGES.values() for section in stage.reads)),
}


def reads(command: str, section: str) -> bool:
    """Whether `command` reads the config section `section` (READS; an unknown command reads everything)."""
    return section in READS.get(command, READS["all"])


def check_online_benchmark(cfg: Config, command: str) -> None:
    """The online loop reports each round on the first of evaluate.benchmarks: it needs one."""
    if reads(command, "online") and not cfg.evaluate.benchmarks:
        raise _refuse(
            "evaluate.benchmarks",
            [],
            "is empty, but the online loop reports each round on its first benchmark",
            plugin_names("benchmark"),
        )


EVALUATING = ("evaluate", "pipeline", "online", "study")  # the commands that load benchmark scorers


def check_benchmark_weights(cfg: Config, command: str) -> None:
    """A benchmark whose scorer's weights are not on disk is refused now, naming the weights and the setting
    that points at them, not after every earlier stage has run (GenEval's detector used to fail at evaluate)."""
    from models.benchmarks import missing_weights

    if command not in EVALUATING:  # e.g. `synrank sample` on a machine without the eval weights
        return
    named = [(f"evaluate.benchmarks.{i}", b) for i, b in enumerate(cfg.evaluate.benchmarks)]
    if command == "study":
        named.append(("study.benchmark", cfg.study.benchmark))
    for key, name in named:
        missing = missing_weights(name)
        if missing:
            raise ConfigError(
                f"bad value for '{key}': {name!r} needs weights that are not on this machine: "
                + "; ".join(w.describe() for w in missing)
                + "; download them (huggingface-cli download <id>) or pick a benchmark without"
            )


ORACLE_KINDS = {"shapes-verifier": "geneval-shapes"}  # reward kind -> the benchmark whose judge it is


def check_oracle(cfg: Config, command: str) -> None:
    """An oracle reward (a benchmark's own judge as a label source) next to the benchmark it would leak into
    is refused unless `score.oracle: true` marks the run as a diagnosis (models/rewards/shapes_verifier.py)."""
    if cfg.score.oracle or not reads(command, "score"):
        return
    benchmarks = set(cfg.evaluate.benchmarks) | ({cfg.study.benchmark} if reads(command, "study") else set())
    for i, r in enumerate(cfg.score.rewards):
        leaks = ORACLE_KINDS.get(r.kind)
        if leaks in benchmarks:
            raise ConfigError(
                f"bad value for 'score.rewards.{i}.kind': {r.kind!r} is the {leaks} benchmark's own judge, so "
                f"training on its labels leaks the benchmark; set score.oracle: true for a diagnosis run, or "
                f"use learned rewards"
            )


def _unique(key: str, names: list[str]) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise ConfigError(
                f"bad value for '{key}.{i}.name': {name!r} is used twice; names in {key} must be "
                f"unique, taken: {', '.join(names[:i])}"
            )
        seen.add(name)


NEEDS = {"generate.generators": "generate", "score.rewards": "score"}  # a list -> the section that uses it


def check_not_empty(cfg: Config, command: str) -> None:
    """The generators and rewards lists may be empty only for a command that reads neither (pydantic lets
    them be empty so that a partial Prefect parameter passes the server's schema check)."""
    for key, section in NEEDS.items():
        field = key.split(".")[1]
        if reads(command, section) and not getattr(getattr(cfg, section), field):
            raise ConfigError(f"bad value for '{key}': [] is empty; `synrank {command}` needs at least one")


def check_ingest(cfg: Config, command: str) -> None:
    """`synrank ingest` needs a source that exists (a deploy checks none: the form names it per run)."""
    if command != "ingest":
        return
    source = cfg.ingest.resolved_source()
    if not cfg.ingest.source or not source.exists():
        problem = "is empty" if not cfg.ingest.source else f"does not exist (looked at {source})"
        raise ConfigError(
            f"bad value for 'ingest.source': {cfg.ingest.source!r} {problem}; name a parquet file or a folder of them"
        )


def check_names(cfg: Config, command: str) -> None:
    """Names are unique where they are looked up, and every name that refers to another entry exists, in the
    sections `command` reads (the study's arms only for `synrank study`: a pipeline with other rewards must
    not need them; train.base only where training runs: `synrank generate` does not train)."""
    generators = [g.name for g in cfg.generate.generators]
    rewards = [r.name for r in cfg.score.rewards]
    arms = [a.name for a in cfg.study.arms]
    _unique("generate.generators", generators)
    _unique("score.rewards", rewards)
    if cfg.train.base and reads(command, "train"):  # empty = the first generator
        _one_of("train.base", cfg.train.base, generators, "a generator in generate.generators (or empty = the first)")
    for i, name in enumerate(cfg.rank.rewards if reads(command, "rank") else []):
        _one_of(f"rank.rewards.{i}", name, rewards, "a reward in score.rewards")
    if reads(command, "study"):
        check_study_names(cfg, rewards, arms)


def check_study_names(cfg: Config, rewards: list[str], arms: list[str]) -> None:
    """The study's arms: unique names, rewards that exist, one untrained base, a reference arm."""
    _unique("study.arms", arms)
    for i, arm in enumerate(cfg.study.arms):
        for j, name in enumerate(arm.rewards):
            _one_of(f"study.arms.{i}.rewards.{j}", name, rewards, "a reward in score.rewards")
    _one_of("study.reference", cfg.study.reference, arms, "a study arm")
    bases = [a.name for a in cfg.study.arms if not a.objective]
    if len(bases) != 1:
        raise ConfigError(
            f"bad value for 'study.arms': exactly one arm must be the untrained base (no objective), "
            f"got {len(bases)}: {', '.join(bases) or '(none)'}"
        )


def check_group_size(cfg: Config, command: str) -> None:
    """A pair objective on groups of one image has no pair to learn from: every loss would be 0."""
    g = cfg.generate
    k = g.group_size()
    if k >= 2:
        return
    pairs = pair_objectives()
    problem = (
        f"forms pairs within a prompt's images, but generate gives K = {k} image(s) per prompt over "
        f"{len(g.generators)} generator(s); add a generator or raise generate.images_per_prompt, or pick an "
        "objective without pairs"
    )
    allowed = [o for o in plugin_names("objective") if o not in pairs]
    # `synrank online` trains with online.objective on its own groups of online.images_per_prompt (>= 2).
    if cfg.train.objective in pairs and reads(command, "train") and command != "online":
        raise _refuse("train.objective", cfg.train.objective, problem, allowed)
    for i, arm in enumerate(cfg.study.arms if reads(command, "study") else []):
        if arm.objective in pairs:
            raise _refuse(f"study.arms.{i}.objective", arm.objective, problem, allowed)


def check_processes(cfg: Config, command: str) -> None:
    """train.processes x launch.machines split each micro-batch's prompts_per_step groups evenly; several
    machines need machine 0's address; a launch config file must exist."""
    t, launch = cfg.train, cfg.train.launch
    if not reads(command, "train"):
        return
    if t.prompts_per_step % t.world_size:
        what = (
            f"'train.processes': {t.processes} does not divide"
            if launch.machines == 1
            else f"'train.launch.machines': {launch.machines} machines x {t.processes} processes do not divide"
        )
        raise ConfigError(
            f"bad value for {what} train.prompts_per_step ({t.prompts_per_step}); each process takes an equal "
            "share of a step's groups"
        )
    if launch.machines > 1 and not launch.main_address:
        raise ConfigError(
            f"bad value for 'train.launch.main_address': '': {launch.machines} machines need the address of "
            "machine 0 (this one) that the others reach"
        )
    if launch.config_file and not (ROOT / launch.config_file).is_file():
        raise ConfigError(
            f"bad value for 'train.launch.config_file': '{launch.config_file}': no such file (relative paths are "
            "from the project folder, e.g. configs/accelerate/8gpu.yaml)"
        )


def check_validation_images(cfg: Config, command: str) -> None:
    """train.validation_every renders train.validation_prompts: with none, there is nothing to render."""
    if reads(command, "train") and cfg.train.validation_every and not cfg.train.validation_prompts:
        raise ConfigError(
            f"bad value for 'train.validation_prompts': [] is empty; train.validation_every "
            f"({cfg.train.validation_every}) renders them: give at least one prompt or set validation_every 0"
        )


def check_engines(cfg: Config, command: str) -> None:
    """engine: ray needs the ray extra; refused now, not after the stages before it have run."""
    import importlib.util

    installed = all(importlib.util.find_spec(m) is not None for m in ("prefect_ray", "ray"))
    for section in ("generate", "score"):
        runs_it = command in (section, "evaluate", "pipeline", "online", "study", "all")
        if runs_it and getattr(cfg, section).engine == "ray" and not installed:
            raise ConfigError(
                f"bad value for '{section}.engine': 'ray' needs the ray extra, which is not installed "
                "here: `python3 -m uv sync --frozen --inexact --extra ray` (or `make env EXTRAS=ray`)"
            )


def validate_config(cfg: Config, command: str = "pipeline", weights: bool = True) -> None:
    """Raise ConfigError (one line: key, value, allowed values) at the first problem; cheap checks first.
    `command`: what will run ("study" and "online" also check their sections; "all" checks everything,
    as `synrank deploy` does for the deployments of every flow). `weights=False` leaves out whether the
    benchmark scorers' weights are on this machine (`synrank validate` lists them instead)."""
    check_not_empty(cfg, command)
    check_ingest(cfg, command)
    check_names(cfg, command)
    check_online_benchmark(cfg, command)
    check_group_size(cfg, command)
    check_oracle(cfg, command)
    check_processes(cfg, command)
    check_validation_images(cfg, command)
    if weights:
        check_benchmark_weights(cfg, command)
    check_engines(cfg, command)


def load_checked_config(
    path: str | Path = PARAMS_FILE, overrides: list[str] | None = None, command: str = "pipeline"
) -> Config:
    """`load_config` (types, unknown keys) and then `validate_config` (registries, cross-references).
    Kept apart from synrank.config so that the stages' code, which imports the config models, does not
    import every registry (synrank.codehash: a stage's fingerprint covers what it imports)."""
    cfg = load_config(path, overrides)
    validate_config(cfg, command)
    return cfg
