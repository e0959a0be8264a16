"""metrics/headline.json (synrank.metrics_file): the evaluate report's headline keyed by role and task, CIs as
two numbers, and what real dvc and git make of it across two commits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from synrank.config import Paths
from synrank.eval_report import EvalReport
from synrank.metrics_file import headline, write_evaluate_metrics


def _report(base: str, tuned: str, base_acc: float, tuned_acc: float, delta: float) -> EvalReport:
    def scores(acc: float) -> dict:
        return {"overall": {"accuracy": acc, "ci95": [acc - 0.1, acc + 0.1]}, "tasks": {"counting": {"accuracy": acc}}}

    return EvalReport(
        base=base,
        tuned=tuned,
        benchmarks={"geneval": {base: scores(base_acc), tuned: scores(tuned_acc), "other": scores(0.9)}},
        paired={"geneval": {"delta": delta, "ci95": [delta - 0.05, delta + 0.05], "tasks": {}}},
        winrate={"clip": {"winrate": 0.6, "ci_low": 0.5, "ci_high": 0.7, "n_pairs": 10}},
    )


def test_the_headline_is_keyed_by_role_never_by_model_name() -> None:
    report = _report("sd-s", "sd-s-tuned", 0.25, 0.5, 0.25)
    report.paired["geneval"]["tasks"] = {"counting": {"delta": 0.25, "ci95": [0.125, 0.375]}}
    assert headline(report) == {
        "geneval": {
            "base": {"overall": 0.25, "overall_ci_lo": 0.15, "overall_ci_hi": 0.35, "counting": 0.25},
            "tuned": {"overall": 0.5, "overall_ci_lo": 0.4, "overall_ci_hi": 0.6, "counting": 0.5},
            "tuned_minus_base": {
                "overall": 0.25,
                "overall_ci_lo": 0.2,
                "overall_ci_hi": 0.3,
                "counting": 0.25,
                "counting_ci_lo": 0.125,
                "counting_ci_hi": 0.375,
            },
        },
        "winrate": {"clip": {"tuned_vs_base": 0.6, "ci_lo": 0.5, "ci_hi": 0.7}},
    }
    other_base = _report("sd-m", "sd-m-tuned", 0.25, 0.5, 0.25)  # another base: the same keys
    other_base.paired["geneval"]["tasks"] = report.paired["geneval"]["tasks"]
    assert headline(other_base) == headline(report)


@pytest.mark.slow
def test_dvc_compares_two_commits_headline_metrics(tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent

    def run(*cmd: str) -> str:
        tool = str(bin_dir / cmd[0]) if cmd[0] == "dvc" else cmd[0]
        return subprocess.run([tool, *cmd[1:]], cwd=tmp_path, capture_output=True, text=True, check=True).stdout

    run("git", "init", "-q")
    run("git", "config", "user.email", "t@example.com")
    run("git", "config", "user.name", "t")
    run("dvc", "init", "-q")
    (tmp_path / "dvc.yaml").write_text("metrics:\n  - metrics/headline.json\n")
    paths = Paths(metrics=str(tmp_path / "metrics"))
    for acc, message in ((0.25, "first"), (0.5, "second")):
        write_evaluate_metrics(paths, _report("a", "a-tuned", 0.25, acc, acc - 0.25))
        run("git", "add", "dvc.yaml", "metrics/headline.json", ".dvc")
        run("git", "commit", "-q", "-m", message)
    shown = json.loads(run("dvc", "metrics", "show", "--json"))
    (workspace,) = shown.values()
    numbers = workspace["data"]["metrics/headline.json"]["data"]
    assert numbers["geneval"]["tuned_minus_base"]["overall_ci_lo"] == 0.2
    diff = json.loads(run("dvc", "metrics", "diff", "HEAD~1", "--json"))["metrics/headline.json"]
    assert diff["geneval.tuned.overall"] == {"old": 0.25, "new": 0.5, "diff": 0.25}
    assert "geneval.base.overall" not in diff  # unchanged metrics are left out
