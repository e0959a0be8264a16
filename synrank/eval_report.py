"""The evaluate stage's report, typed: what metrics/evaluate.json and the eval folder's stamp hold. Every reader
(the benchmark table, the headline metrics, the study, the pipeline's result, `synrank table`) takes this
instead of picking the JSON apart by key.

Shapes (a summary is models.benchmarks' `summarize` output: overall, tasks, probes, each accuracy + ci95 + n):
    benchmarks: benchmark -> model name -> summary
    paired:     benchmark -> the paired tuned - base difference (delta, ci95, n, tasks, probes, base, tuned)
    winrate:    reward -> the tuned model's win rate over the base under that reward (winrate, ci95, n)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class EvalReport:
    """One evaluation of the tuned model (`tuned`) against its base (`base`) on `n_prompts` held-out prompts."""

    base: str = ""
    tuned: str = ""
    n_prompts: int = 0
    winrate: dict[str, dict[str, Any]] = field(default_factory=dict)
    benchmarks: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    paired: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalReport:
        """The report a dict holds (evaluate.json, a stamp's `report`); keys it does not know are left out."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    @classmethod
    def read(cls, path: Path) -> EvalReport:
        """The report of a JSON file (metrics/evaluate.json)."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    @classmethod
    def of_stage(cls, folder: Path) -> EvalReport:
        """The report in an evaluate output folder's stamp (_stage.json); an empty one if it has none."""
        from synrank.stamp import read_stamp

        return cls.from_dict((read_stamp(folder) or {}).get("report", {}))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (evaluate.json, the stamp's `report`)."""
        return asdict(self)

    def summary(self, benchmark: str, model: str) -> dict[str, Any] | None:
        """One model's summary on one benchmark, None if it was not judged there."""
        return self.benchmarks.get(benchmark, {}).get(model)

    def overall(self, benchmark: str, model: str) -> float:
        """A model's overall accuracy (the tasks' mean) on a benchmark; KeyError if it was not judged there."""
        summary = self.summary(benchmark, model)
        if summary is None:
            raise KeyError(f"no {benchmark} result for '{model}'")
        return float(summary["overall"]["accuracy"])

    def probes(self, benchmark: str) -> list[str]:
        """The probes (tags reported apart from the overall) of the base's summary, sorted."""
        return sorted((self.summary(benchmark, self.base) or {}).get("probes", {}))
