"""`synrank <stage>`: validate params.yaml plus `--set key=value` overrides, then run that stage's
Prefect flow. A bad key or value stops here, before any import of torch or any file written."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from synrank.config import PARAMS_FILE, Config, ConfigError, load_config


def _run(stage: str, cfg: Config) -> object:
    # Flows are imported lazily so that `synrank --help` and config errors stay instant.
    from importlib import import_module

    args = {
        "sample": lambda: (cfg.sample, cfg.paths, cfg.tracking),
        "generate": lambda: (cfg.generate, cfg.paths, cfg.tracking),
        "score": lambda: (cfg.score, cfg.paths, cfg.tracking),
        "rank": lambda: (cfg.rank, cfg.paths, cfg.tracking),
        "train": lambda: (cfg.train, cfg.generate, cfg.paths, cfg.tracking),
        "evaluate": lambda: (cfg.evaluate, cfg.score, cfg.paths, cfg.tracking),
        "pipeline": lambda: (cfg,),
    }[stage]()
    flow = getattr(import_module(f"flows.{stage}"), f"{stage}_flow")
    return flow(*args)


STAGES: dict[str, str] = {
    "sample": "read prompt corpora, dedupe, split train/eval",
    "generate": "images for every train prompt from every generator",
    "score": "every image under every reward model",
    "rank": "Algorithm 1: per-prompt rankings from the averaged pairwise wins",
    "train": "preference fine-tuning (RankDPO, DPO, ...) of one generator",
    "evaluate": "tuned vs base on held-out prompts",
    "pipeline": "all six stages in order under one MLflow parent run",
}


def _data(args: argparse.Namespace) -> int:
    from synrank.data import ensure_data

    print(ensure_data())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="synrank", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in STAGES.items():
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--params", default=str(PARAMS_FILE), help="params file (default: params.yaml)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a param, e.g. --set train.beta=5000 (repeatable)")
    extra: dict[str, Callable[[argparse.Namespace], int]] = {"data": _data}
    sub.add_parser("data", help="rebuild data/ if absent (deterministic), check it against data.dvc, cache it")
    args = parser.parse_args(argv)
    if args.command in extra:
        return extra[args.command](args)
    try:
        cfg = load_config(args.params, args.overrides)
    except ConfigError as err:
        print(f"synrank: invalid config: {err}", file=sys.stderr)
        return 2
    _run(args.command, cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
