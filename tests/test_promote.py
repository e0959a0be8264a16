"""The registry after an evaluation (tasks.promote): every evaluated version is tagged and becomes the
`candidate`; `champion` moves only to a version whose paired difference to the current champion (or to the
base, the first time) has a 95% CI above 0. Judged rows are built by hand so that each CI is known: every
prompt's images differ by the same amount, so any resampling of prompts gives that amount."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from synrank.eval_report import EvalReport
from tasks.promote import CANDIDATE, CHAMPION, VERDICT_TAG, promote

NAME, BENCH, TASKS = "synrank-a", "geneval-shapes", ["counting"]


def _judged(model: str, passed_per_prompt: int) -> pd.DataFrame:
    """8 prompts x 4 seeds of one task; the first `passed_per_prompt` seeds of each prompt pass."""
    rows = [
        {"prompt_id": f"p{p}", "index": i, "task": "counting", "value": float(i < passed_per_prompt), "model": model}
        for p in range(8)
        for i in range(4)
    ]
    return pd.DataFrame(rows)


def _report(tuned_acc: float, vs_base: float) -> EvalReport:
    acc = {"overall": {"accuracy": tuned_acc, "ci95": [tuned_acc, tuned_acc]}, "tasks": {}}
    return EvalReport(
        base="a",
        tuned="a-tuned",
        benchmarks={BENCH: {"a": {"overall": {"accuracy": 0.0, "ci95": [0.0, 0.0]}, "tasks": {}}, "a-tuned": acc}},
        paired={BENCH: {"delta": vs_base, "ci95": [vs_base, vs_base], "tasks": {}}},
    )


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[mlflow.MlflowClient]:
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    # Artifacts in tmp_path too: a sqlite store's default artifact root is ./mlruns, in the checkout.
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("promote", (tmp_path / "artifacts").as_uri()))
    client = mlflow.MlflowClient()
    client.create_registered_model(NAME)
    yield client
    mlflow.set_tracking_uri(previous)


def _evaluate(client: mlflow.MlflowClient, tmp_path: Path, passed: int) -> tuple[str, str]:
    """A new version of NAME whose tuned model passes `passed` of 4 seeds per prompt (the base passes
    none), evaluated by a run that keeps its judged rows: (version, the verdict's reason)."""
    judged = pd.concat([_judged("a", 0), _judged("a-tuned", passed)])
    path = tmp_path / f"judged_{BENCH}.parquet"
    judged.to_parquet(path, index=False)
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(path))
    version = client.create_model_version(NAME, source=str(tmp_path), run_id=run.info.run_id).version
    decided = promote.fn(NAME, str(version), _report(passed / 4, passed / 4), judged, run.info.run_id, BENCH, TASKS)
    return str(version), decided.reason


@pytest.mark.slow
def test_champion_moves_only_on_a_paired_ci_above_zero(registry: mlflow.MlflowClient, tmp_path: Path) -> None:
    alias = lambda a: str(registry.get_model_version_by_alias(NAME, a).version)  # noqa: E731
    v1, why1 = _evaluate(registry, tmp_path, 2)  # 0.5 over the base, no champion yet
    assert (alias(CANDIDATE), alias(CHAMPION)) == (v1, v1)
    assert why1 == "no champion yet; tuned - base: +0.5000 [+0.5000, +0.5000], CI above 0: champion"
    v2, why2 = _evaluate(registry, tmp_path, 1)  # worse than v1 on the same prompts and seeds
    assert (alias(CANDIDATE), alias(CHAMPION)) == (v2, v1)
    assert why2 == "tuned - champion v1: -0.2500 [-0.2500, -0.2500], CI not above 0: the champion stays"
    v3, why3 = _evaluate(registry, tmp_path, 4)  # better than v1
    assert (alias(CANDIDATE), alias(CHAMPION)) == (v3, v3)
    assert why3 == "tuned - champion v1: +0.5000 [+0.5000, +0.5000], CI above 0: champion"
    tags = registry.get_model_version(NAME, v3).tags
    assert tags[VERDICT_TAG] == why3 and tags[f"{BENCH}.tuned.overall"] == "1.0000"
    assert tags[f"{BENCH}.tuned_minus_base.overall_ci_lo"] == "1.0000"


@pytest.mark.slow
def test_a_first_version_no_better_than_its_base_is_only_the_candidate(
    registry: mlflow.MlflowClient, tmp_path: Path
) -> None:
    v1, why = _evaluate(registry, tmp_path, 0)
    assert str(registry.get_model_version_by_alias(NAME, CANDIDATE).version) == v1
    with pytest.raises(mlflow.exceptions.MlflowException):
        registry.get_model_version_by_alias(NAME, CHAMPION)
    assert why == "no champion yet; tuned - base: +0.0000 [+0.0000, +0.0000], CI not above 0: the champion stays"
