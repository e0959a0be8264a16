"""`synrank <stage>`: validate params.yaml plus `--set key=value` overrides, then run that stage's
Prefect flow. A bad key or value (a type, a registry key, a name that refers to nothing) stops here,
before Prefect is imported, any model is loaded or any file written."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping

from cli.deploy import DEPLOY_FILE
from models.validate import load_checked_config
from synrank.config import PARAMS_FILE, WORKSPACE, Config, ConfigError, base_generator, flow_parameters
from synrank.stages import STAGES

# Prefect 3's setting `server.ephemeral.startup_timeout_seconds` (default 20 s).
EPHEMERAL_TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"


def prefect_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables to add before Prefect is imported, never overriding what the user set.

    Without `make up` (no PREFECT_API_URL) each run starts an ephemeral Prefect server: its state goes
    to the project's git-ignored .prefect/ rather than ~/.prefect, and it may take 120 s to start,
    since the default 20 s is too little on a busy 2-core machine (the run failed before any work).
    Offline by design: no telemetry from the temporary server (it only logs a failed DNS lookup)."""
    env = {EPHEMERAL_TIMEOUT_ENV: "120", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    if not environ.get("PREFECT_API_URL"):
        env["PREFECT_HOME"] = str(WORKSPACE / ".prefect")
    return {k: v for k, v in env.items() if not environ.get(k)}


SAMPLING = ("sample", "pipeline", "online", "study")  # the commands that read sample.sources
RENDERING = ("generate", "train", "evaluate", "pipeline", "online", "study")  # ... that load generators


def missing_input(command: str, cfg: Config) -> str:
    """One line naming the first input a command lacks (a prompt file, a model folder, a stage's output and
    the command that makes it), or '': checked before Prefect starts, so a missing file costs no server
    start and leaves no flow run or MLflow run behind."""
    from synrank.inputs import missing_model, missing_source

    if command in SAMPLING and (problem := missing_source(cfg.sample.sources)):
        return problem
    generators = [base_generator(cfg.train, cfg.generate)] if command == "train" else cfg.generate.generators
    if command in RENDERING and (problem := missing_model(generators)):
        return problem
    for need in STAGES[command].needs:
        path = cfg.paths.resolve(need.field) / need.file
        if not path.exists():
            return f"'{path}' does not exist: run `synrank {need.maker}` (or `synrank pipeline`) first"
    return ""


def _run(stage: str, cfg: Config) -> object:
    # Flows (and Prefect) are imported lazily so that `synrank --help` and config errors stay fast.
    from importlib import import_module

    flow = getattr(import_module(f"flows.{stage}"), f"{stage}_flow")
    return flow(**flow_parameters(stage, cfg))


def _data(args: argparse.Namespace) -> int:
    from models.shapes.dataset import ensure_data

    print(ensure_data())
    return 0


def _deploy(args: argparse.Namespace) -> int:
    from cli.deploy import run_deploy

    return run_deploy(args.params, args.overrides, args.only, args.file)


def _validate(args: argparse.Namespace) -> int:
    """Check a params file as the pipeline would, without needing its weights or prompt files, then list every
    model and file it needs and whether this machine has it."""
    from models.validate import validate_config
    from models.weights_table import weights_table
    from synrank.config import load_config

    try:
        cfg = load_config(args.params, args.overrides)
        validate_config(cfg, "pipeline", weights=False)
    except ConfigError as err:
        print(f"synrank: {err}", file=sys.stderr)
        return 2
    print(f"{args.params}: valid. The models and files it needs:\n{weights_table(cfg)}")
    return 0


def _zoo(args: argparse.Namespace) -> int:
    from models.shapes_zoo.build import main as build_zoo

    return build_zoo(
        ["--out", args.out, "--scale", str(args.scale), "--seed", str(args.seed), "--workers", str(args.workers)]
    )


def _table(args: argparse.Namespace) -> int:
    from pathlib import Path

    from synrank.config import Paths

    path = Path(args.metrics) if args.metrics else Paths().resolve("metrics") / "evaluate.json"
    if not path.exists():
        print(f"synrank: no evaluation yet: '{path}' is missing (run `make run`)", file=sys.stderr)
        return 1
    from models.benchmark_table import benchmark_table
    from synrank.eval_report import EvalReport

    # Per benchmark: base, tuned (and the other generators) per task, overall = the tasks' mean, any probe
    # apart; the paired tuned - base difference per task and overall with its 95% CI and n.
    table = benchmark_table(EvalReport.read(path))
    print(table if table.strip() else f"no benchmark results in '{path}' (no eval prompt fits evaluate.benchmarks)")
    return 0


def _repro(args: argparse.Namespace) -> int:
    from synrank.repro import run_repro

    try:
        cfg = load_checked_config(PARAMS_FILE, [], command="pipeline")  # what dvc.yaml's stages run with
        return run_repro(args.dvc_args, {**os.environ, **prefect_env(os.environ)}, cfg)
    except (ConfigError, RuntimeError) as err:
        print(f"synrank: {err}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    """The `synrank` argument parser: one subcommand per stage or composite flow (STAGES, each taking
    --params and repeatable --set KEY=VALUE), plus data, zoo, table, repro and deploy (EXTRA_COMMANDS)."""
    parser = argparse.ArgumentParser(prog="synrank", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, stage in STAGES.items():
        p = sub.add_parser(name, help=stage.help)
        p.add_argument("--params", default=str(PARAMS_FILE), help="params file (default: params.yaml)")
        p.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a param, e.g. --set train.beta=5000 (repeatable)",
        )
    sub.add_parser("data", help="rebuild data/ if absent (deterministic), check it against data.dvc, cache it")
    z = sub.add_parser("zoo", help="train the shapes-world zoo from scratch: VAE, 4 generators, 3 CLIP rewards")
    z.add_argument("--out", default="zoo", help="output folder (default: zoo)")
    z.add_argument("--scale", type=float, default=1.0, help="multiplies every step count (0.01 = a smoke run)")
    z.add_argument("--seed", type=int, default=0)
    z.add_argument("--workers", type=int, default=2, help="single-threaded training processes")
    t = sub.add_parser(
        "table",
        help="print the benchmark table of the last evaluation: models x tasks, probes "
        "apart, the paired tuned - base difference with its 95%% CI and n",
    )
    t.add_argument("--metrics", default=None, help="evaluate.json (default: metrics/evaluate.json)")
    r = sub.add_parser("repro", help="dvc repro with one Prefect API for all the stages it runs (make repro)")
    r.add_argument("dvc_args", nargs=argparse.REMAINDER, help="passed to dvc repro: stage names, --force, ...")
    v = sub.add_parser("validate", help="check a params file (no run, no weights needed) and list the models it needs")
    v.add_argument("--params", default=str(PARAMS_FILE), help="params file (default: params.yaml)")
    v.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    d = sub.add_parser("deploy", help="register prefect.yaml's deployments with params.yaml as their defaults")
    d.add_argument("--params", default=str(PARAMS_FILE), help="params file (default: params.yaml)")
    d.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    d.add_argument("--only", action="append", default=[], metavar="NAME", help="only this deployment (repeatable)")
    d.add_argument("--file", default=str(DEPLOY_FILE), help="deployment file (default: prefect.yaml)")
    return parser


# The commands that are no flow: each takes the parsed arguments and returns the exit status.
EXTRA_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "data": _data,
    "table": _table,
    "deploy": _deploy,
    "validate": _validate,
    "repro": _repro,
    "zoo": _zoo,
}


def main(argv: list[str] | None = None) -> int:
    """`synrank` with `argv` (default sys.argv[1:]); returns the exit status: 0 done, 2 an invalid config or a
    missing input (one line on stderr), 3 another run holds an output folder (runlock.LockHeld); a non-flow
    command returns its own. The stage's output folders are locked before Prefect is imported."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and args.command != "repro":  # only repro passes options on (to dvc repro)
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "repro":
        args.dvc_args = [*args.dvc_args, *unknown]
    if args.command in EXTRA_COMMANDS:
        return EXTRA_COMMANDS[args.command](args)
    if launched := launched_by():
        print(
            f"synrank: `synrank {args.command}` was started as one of {launched} processes (accelerate launch / "
            f"torchrun); run it once instead: `synrank train --set train.processes={launched}` launches the "
            "training processes itself",
            file=sys.stderr,
        )
        return 2
    try:
        cfg = load_checked_config(args.params, args.overrides, command=args.command)
    except ConfigError as err:
        print(f"synrank: invalid config: {err}", file=sys.stderr)
        return 2
    if missing := missing_input(args.command, cfg):
        print(f"synrank: {missing}", file=sys.stderr)
        return 2
    return _run_locked(args.command, cfg)


def launched_by(environ: Mapping[str, str] = os.environ) -> int:
    """The process count of the launcher (accelerate launch, torchrun) that started this process, 0 if none:
    every launched process would run the whole stage, lock its folders and start its own flow run."""
    size = environ.get("WORLD_SIZE", "")
    return int(size) if size.isdigit() and int(size) > 1 else 0


def _run_locked(command: str, cfg: Config) -> int:
    """Run the flow of `command` holding its output folders' locks: 0, or 3 when another run holds one."""
    from synrank.config import STAGE_OUTPUT, stage_outputs
    from synrank.config import STAGES as PIPELINE
    from synrank.runlock import LockHeld, hold

    # The output folders are locked here, before Prefect starts: a second run on the same outputs stops
    # at once, however soon after the first it starts (the flows take the same locks, re-entrantly).
    stages = list(STAGE_OUTPUT) if command == "pipeline" else [command] if command in STAGE_OUTPUT else []
    checked = list(PIPELINE) if command == "pipeline" else stages  # the stages this command would run
    try:
        with hold(stage_outputs(cfg.paths, stages)):
            if checked and _nothing_changed(cfg, checked):
                return 0
            os.environ.update(prefect_env(os.environ))  # before _run imports Prefect
            _run(command, cfg)
    except LockHeld as err:
        print(f"synrank: {err}", file=sys.stderr)
        return 3
    return 0


def _nothing_changed(cfg: Config, stages: list[str]) -> bool:
    """Whether the stamp of each of `stages` vouches for its folder under `cfg` (synrank.stamp.up_to_date). If
    so, write metrics/evaluate.json from the evaluate stamp (when evaluate is one of them), as the skipped
    flow would, say so and start neither Prefect nor an MLflow run: a rerun with nothing changed (a second
    `make run`, a `dvc repro` after `make run`) costs the hashing, not a server start. Stops at the first
    stale stage (the stages after it would see new inputs anyway)."""
    from synrank.config import STAGE_OUTPUT
    from synrank.eval_report import EvalReport
    from synrank.metrics_file import write_evaluate_metrics
    from synrank.stamp import up_to_date

    if not all(up_to_date(stage, cfg) for stage in stages):
        return False
    if "evaluate" in stages:
        write_evaluate_metrics(cfg.paths, EvalReport.of_stage(cfg.paths.resolve(STAGE_OUTPUT["evaluate"])))
    for stage in stages:
        print(f"[{stage}] up to date: its stamp matches this config, its inputs and its code")
    print(
        "synrank: nothing changed since the last run; no Prefect flow run or MLflow run was made "
        "(change a param, an input or the code, and only what depends on it runs again)"
    )
    return True


if __name__ == "__main__":
    sys.exit(main())
