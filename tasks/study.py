"""The study's Prefect task: its table over every (arm, seed) run, read from their eval folders."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from models.study import load_runs, study_results


@task(name="study-table")
def study_table(
    runs: list[tuple[str, int, Path]], benchmark: str, rewards: list[str], base_arm: str, reference: str
) -> dict:
    """models.study.study_results over the runs' judged images and scores (models.study.load_runs): per arm
    the benchmark's overall and per-task means over seeds, paired differences to `reference` with 95% CIs that
    resample seeds and prompts, and reward win-rates. `runs` are (arm, seed, eval folder); ValueError names a
    run whose tuned model was not judged on every image its base was."""
    return study_results(load_runs(runs, benchmark, rewards, base_arm), reference)
