"""The online loop's table: every round's model on the held-out benchmark, with the paired gain of the
round and the paired gain since round 0 (GPO's online counting experiment reports the latter per round).

Every round evaluates its starting model and its tuned model on the same held-out prompts with the same
noise (evaluate.seed), so round r's tuned images pair with round 1's base images image by image. Also the
task that fuses a round's tuned model into the full pipeline the next round starts from."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from prefect import task

from models.benchmark_table import format_accuracy, format_delta
from synrank.config import GeneratorSpec
from synrank.models_io import tuned_spec
from tasks.evaluate import paired_between


def _judged(round_dir: Path, benchmark: str, model: str) -> pd.DataFrame:
    table = pd.read_parquet(round_dir / "eval" / f"judged_{benchmark}.parquet")
    return table[table["model"] == model].drop(columns="model")


def rounds_summary(round_dirs: list[Path], benchmark: str, tasks: Sequence[str] | None = None) -> list[dict]:
    """One row per model, round 0 (the starting model) first: {"round", "model", "accuracy": {"accuracy",
    "ci95", "n", "n_prompts"}, "gain": paired gain over the previous round's model or None,
    "since_start": paired gain over round 0 or None}. round_dirs: round-1, round-2, ... folders, each with
    metrics/evaluate.json and eval/judged_<benchmark>.parquet; tasks: the benchmark's (the tags of its
    overall score; GenEval's six by default). KeyError when a report lacks the benchmark."""
    rows: list[dict] = []
    start = None
    for r, d in enumerate(round_dirs, start=1):
        report = json.loads((d / "metrics" / "evaluate.json").read_text())
        by_model = report["benchmarks"][benchmark]
        if start is None:
            start = _judged(d, benchmark, report["base"])
            rows.append(
                {
                    "round": 0,
                    "model": report["base"],
                    "accuracy": by_model[report["base"]]["overall"],
                    "gain": None,
                    "since_start": None,
                }
            )
        tuned = _judged(d, benchmark, report["tuned"])
        rows.append(
            {
                "round": r,
                "model": report["tuned"],
                "accuracy": by_model[report["tuned"]]["overall"],
                "gain": report["paired"].get(benchmark),
                "since_start": paired_between(start, tuned, tasks) if r > 1 else report["paired"].get(benchmark),
            }
        )
    return rows


def rounds_markdown(rows: list[dict], benchmark: str) -> str:
    """rounds_summary as a markdown table: accuracy and both paired gains with their 95% CIs."""
    lines = [
        f"| round | model | {benchmark} accuracy [95% CI] | gain over the previous round (paired) "
        "| gain since round 0 (paired) |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {row['round']} | {row['model']} | {format_accuracy(row['accuracy'])} | {format_delta(row['gain'])} "
        f"| {format_delta(row['since_start'])} |"
        for row in rows
    ]
    n = rows[0]["accuracy"]
    return "\n".join(lines) + (
        f"\n\n{n['n_prompts']} held-out prompts, {n['n']} images per model; CIs resample prompts within tasks.\n"
    )


@task(name="fuse-tuned")
def fuse_tuned(model_dir: str, out_dir: str) -> GeneratorSpec:
    """The tuned model as one diffusers pipeline folder (LoRA fused into the weights). Loaded by the one
    generator loader (models.generators.load_generator), so the safetensors-only rule holds here too."""
    from models.generators import load_generator

    base, tuned = tuned_spec(Path(model_dir))
    if not tuned.lora:
        return tuned.model_copy(update={"name": base.name})
    load_generator(tuned).pipe.save_pretrained(out_dir, safe_serialization=True)  # the LoRA fused on load
    return base.model_copy(update={"path": out_dir, "lora": ""})
