"""What an evaluation does to the model registry: the evaluated version's headline tags, the alias
`candidate`, and the alias `champion` only on evidence.

After the evaluate stage, the version the train stage registered (its stamp's report names it) gets
- tags: the first benchmark's headline (the tuned accuracy and the paired tuned - base difference, each with
  its 95% CI), the evaluate run that judged it and the model name its judged rows carry;
- the alias `candidate` (the latest evaluated version);
- the alias `champion` when its paired difference on the benchmark, on the same prompts and seeds, has a
  95% CI above 0: against the current champion (whose judged rows its evaluate run keeps as the artifact
  judged_<benchmark>.parquet), or against the base when there is no champion yet. Otherwise the champion
  stays, and the tag `synrank.champion_verdict` says why.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from prefect import task

from synrank.eval_report import EvalReport
from synrank.metrics_file import headline
from tasks.evaluate import paired_between

CANDIDATE, CHAMPION = "candidate", "champion"
RUN_TAG, MODEL_TAG, VERDICT_TAG = "synrank.evaluate_run", "synrank.tuned_model", "synrank.champion_verdict"


@dataclass(frozen=True)
class Verdict:
    """Whether the version becomes the champion, and the evidence in one line."""

    champion: bool
    reason: str


def _evidence(what: str, d: dict[str, Any]) -> Verdict:
    lo, hi = d["ci95"]
    better = lo > 0
    word = "above 0: champion" if better else "not above 0: the champion stays"
    return Verdict(better, f"{what}: {d['delta']:+.4f} [{lo:+.4f}, {hi:+.4f}], CI {word}")


def _champion(client: Any, name: str) -> Any | None:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:  # no champion yet
        return None


def _champion_rows(champion: Any, benchmark: str) -> pd.DataFrame:
    """The current champion's judged rows of `benchmark`, from its evaluate run's artifact."""
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(
            run_id=champion.tags[RUN_TAG], artifact_path=f"judged_{benchmark}.parquet", dst_path=tmp
        )
        rows = pd.read_parquet(path)
    return rows[rows["model"] == champion.tags[MODEL_TAG]].drop(columns="model")


def verdict(
    client: Any, name: str, version: str, report: EvalReport, judged: pd.DataFrame, benchmark: str, tasks: list[str]
) -> Verdict:
    """Whether `version` (report.tuned's rows of `judged`) beats the champion of `name` (module docstring)."""
    champion = _champion(client, name)
    if champion is None or str(champion.version) == str(version):
        if not report.paired.get(benchmark):
            return Verdict(False, f"no paired tuned - base result on {benchmark}")
        return _evidence("no champion yet; tuned - base", report.paired[benchmark])
    mine = judged[judged["model"] == report.tuned].drop(columns="model")
    try:
        d = paired_between(_champion_rows(champion, benchmark), mine, tasks)
    except ValueError:  # no prompt and seed judged for both
        return Verdict(False, f"no image judged for both this version and champion v{champion.version}")
    return _evidence(f"tuned - champion v{champion.version}", d)


@task(name="promote-model", task_run_name="promote[{name} v{version}]")
def promote(
    name: str, version: str, report: EvalReport, judged: pd.DataFrame, run_id: str, benchmark: str, tasks: list[str]
) -> Verdict:
    """Tag `version` of registered model `name` with report's headline on `benchmark` and the evaluate run
    `run_id` (whose artifacts must hold judged_<benchmark>.parquet), make it the candidate, and the champion
    on evidence (verdict). Returns the verdict."""
    client = mlflow.MlflowClient()
    numbers = headline(report).get(benchmark, {})
    tags = {
        f"{benchmark}.{role}.{k}": f"{v:.4f}"
        for role in ("tuned", "tuned_minus_base")
        for k, v in numbers.get(role, {}).items()
        if k.startswith("overall")
    }
    decided = verdict(client, name, version, report, judged, benchmark, tasks)
    for key, value in {**tags, RUN_TAG: run_id, MODEL_TAG: report.tuned, VERDICT_TAG: decided.reason}.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, CANDIDATE, version)
    if decided.champion:
        client.set_registered_model_alias(name, CHAMPION, version)
    return decided
