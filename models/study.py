"""The study's table: every arm's benchmark score and reward win-rates over its training seeds, with
95% CIs that resample both the seeds and the held-out prompts, and which differences are significant.

Every run of the study was evaluated on the same held-out prompts with the same noise, so the base
model's images are identical across runs and every comparison is paired image by image."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from models.shapes.specs import task_order
from models.stats import mean_of_strata, seeds_and_units_bootstrap
from models.winrates import win_outcomes
from synrank.eval_report import EvalReport

KEY = ["prompt_id", "index", "task"]
N_BOOT = 2000


@dataclass
class StudyData:
    """Per-unit values on shared units: `values[arm]` is (seeds, images) of pass/fail on the benchmark
    (units ordered like `tasks` and `prompts`, each image's task and prompt id), `wins[arm][reward]` is
    (seeds, prompts) of per-prompt win-rates over base. The untrained base is the arm named `base_arm`,
    one row, no win-rates. Images of a probe (`probes`: the tags the benchmark's summary reports apart,
    such as GenEval-shapes' novel-binding probe) are kept but never enter an overall."""

    tasks: np.ndarray
    prompts: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))
    probes: list[str] = field(default_factory=list)
    values: dict[str, np.ndarray] = field(default_factory=dict)
    wins: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    seeds: dict[str, list[int]] = field(default_factory=dict)
    base_arm: str = "base"


def load_runs(
    runs: list[tuple[str, int, Path]], benchmark: str, rewards: list[str], base_arm: str = "base"
) -> StudyData:
    """runs: (arm, seed, evaluation folder written by the evaluate stage) for every trained run."""
    data, base_units = None, None
    for arm, seed, ev in runs:
        report = EvalReport.of_stage(ev)
        if not report.base:  # no stamp: that evaluation did not finish
            raise ValueError(f"{ev}: no evaluate stamp (_stage.json with a report); run that evaluation again")
        judged = pd.read_parquet(ev / f"judged_{benchmark}.parquet")
        base = judged[judged["model"] == report.base].sort_values(KEY).reset_index(drop=True)
        tuned = base[KEY].merge(judged[judged["model"] == report.tuned], on=KEY, how="left")
        if tuned["value"].isna().any():
            raise ValueError(f"{ev}: the tuned model was not judged on every image the base was")
        if data is None:
            data = StudyData(
                tasks=base["task"].to_numpy(),
                prompts=base["prompt_id"].astype(str).to_numpy(),
                probes=report.probes(benchmark),
                base_arm=base_arm,
            )
            base_units = base
            data.values[base_arm], data.seeds[base_arm] = base["value"].to_numpy()[None, :], []
        elif not base[KEY + ["value"]].equals(base_units[KEY + ["value"]]):
            raise ValueError(
                f"{ev}: the base model's images differ from the first run's; the runs were not "
                f"evaluated on the same prompts and noise, so they cannot be compared pairwise"
            )
        manifest = pd.read_parquet(ev / "images" / "manifest.parquet")
        scores = pd.concat([pd.read_parquet(ev / f"{r}.parquet") for r in rewards], ignore_index=True)
        per_prompt = (
            win_outcomes(scores, manifest, report.base, report.tuned).groupby(["reward", "prompt_id"])["win"].mean()
        )
        data.values[arm] = np.vstack([data.values.get(arm, np.empty((0, len(base)))), tuned["value"].to_numpy()])
        wins = data.wins.setdefault(arm, {})
        for r in rewards:
            w = per_prompt.loc[r].sort_index().to_numpy()
            wins[r] = np.vstack([wins.get(r, np.empty((0, len(w)))), w])
        data.seeds.setdefault(arm, []).append(seed)
    if data is None:
        raise ValueError("the study has no trained runs to compare")
    return data


def study_results(data: StudyData, reference: str, n_boot: int = N_BOOT) -> dict:
    """Means, CIs and p-values for the table; `comparisons` counts the tests for the Bonferroni mark.
    The benchmark's overall is over its tasks only (probes are in `tasks`, never in an overall) and its
    CIs resample whole prompts within each task, with the training seeds; win-rates resample prompts."""
    base = data.values[data.base_arm]
    main = ~np.isin(data.tasks, data.probes)
    tasks, prompts = data.tasks[main], data.prompts[main] if len(data.prompts) else None

    def boot(
        arms: list[np.ndarray],
        signs: list[float],
        strata: np.ndarray,
        null: float = 0.0,
        clusters: np.ndarray | None = None,
    ) -> dict:
        return seeds_and_units_bootstrap(arms, signs, strata, null=null, n_boot=n_boot, clusters=clusters)

    def bench(arms: list[np.ndarray], signs: list[float]) -> dict:
        return boot([a[:, main] for a in arms], signs, tasks, clusters=prompts)

    rows, n_tests = {}, 0
    for arm, m in data.values.items():
        row = {
            "seeds": data.seeds[arm],
            "overall": bench([m], [1.0]),
            "per_seed": [mean_of_strata(s[main], tasks) for s in m] if data.seeds[arm] else [],
            "tasks": {t: float(m[:, data.tasks == t].mean()) for t in sorted(set(data.tasks.tolist()))},
        }
        if arm != data.base_arm:
            row["vs_base"] = bench([m, base], [1.0, -1.0])
            n_tests += 1
            if reference in data.values and arm != reference:
                row["vs_reference"] = bench([m, data.values[reference]], [1.0, -1.0])
                n_tests += 1
            row["winrates"] = {}
            for r, w in data.wins[arm].items():
                row["winrates"][r] = boot([w], [1.0], np.zeros(w.shape[1]), null=0.5)
                n_tests += 1
        rows[arm] = row
    return {
        "arms": rows,
        "order": list(rows),
        "reference": reference,
        "base": data.base_arm,
        "comparisons": n_tests,
        "n_images": int(main.sum()),
        "n_prompts": int(len(set(prompts.tolist()))) if prompts is not None else None,
        "probes": list(data.probes),
        "n_boot": n_boot,
    }


def _mark(stat: dict, n_tests: int) -> str:
    return "**" if stat["p"] < 0.05 / max(n_tests, 1) else "*" if stat["p"] < 0.05 else ""


def _cell(stat: dict, n_tests: int = 0, signed: bool = False) -> str:
    lo, hi = stat["ci95"]
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(stat['mean'])} [{f.format(lo)}, {f.format(hi)}]{_mark(stat, n_tests) if n_tests else ''}"


def study_markdown(results: dict, benchmark: str) -> str:
    """study_results' dict as markdown: per arm its seeds, `benchmark` overall [95% CI] and per seed, the paired
    differences to the base and to the reference arm and each reward's win-rate [95% CI], marked * for
    p < 0.05 and ** past a Bonferroni correction over the table's comparisons; then accuracy per task (mean
    over seeds) and a note of what the CIs resample. KeyError for a dict not from study_results."""
    m, ref = results["comparisons"], results["reference"]
    arms = {name: results["arms"][name] for name in results["order"]}  # JSON round trips sort the keys
    rewards = sorted({r for a in arms.values() for r in a.get("winrates", {})})
    head = [
        "arm",
        "seeds",
        f"{benchmark} overall",
        "per seed",
        f"minus {results['base']}",
        f"minus {ref}",
        *[f"win-rate {r}" for r in rewards],
    ]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name, a in arms.items():
        cells = [
            name,
            ", ".join(map(str, a["seeds"])) or "-",
            _cell(a["overall"]),
            " / ".join(f"{v:.3f}" for v in a["per_seed"]) or "-",
            _cell(a["vs_base"], m, signed=True) if "vs_base" in a else "-",
            _cell(a["vs_reference"], m, signed=True) if "vs_reference" in a else "-",
            *[_cell(a["winrates"][r], m) if r in a.get("winrates", {}) else "-" for r in rewards],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    tasks = task_order({t for a in arms.values() for t in a["tasks"]})
    lines += [
        "",
        f"Per task ({benchmark} accuracy, mean over seeds):",
        "",
        "| arm | " + " | ".join(tasks) + " |",
        "|---" * (len(tasks) + 1) + "|",
    ]
    lines += [f"| {n} | " + " | ".join(f"{a['tasks'][t]:.3f}" for t in tasks) + " |" for n, a in arms.items()]
    held_out = (
        f"{results['n_prompts']} held-out prompts ({results['n_images']} images) as whole prompts"
        if results.get("n_prompts")
        else f"{results['n_images']} held-out images"
    )
    probes = (
        f"Overall: the mean of the tasks; probe {', '.join(results['probes'])} is not part of it. "
        if results.get("probes")
        else ""
    )
    lines += [
        "",
        f"95% CIs from {results['n_boot']} bootstrap replicates that resample each arm's training seeds "
        f"and the {held_out} (within each task; win-rates: prompts). {probes}"
        f"`*`: p < 0.05 against 0 (differences) or 0.5 (win-rates); `**`: also significant after a "
        f"Bonferroni correction for the table's {m} tests (p < {0.05 / max(m, 1):.4f}).",
    ]
    return "\n".join(lines) + "\n"
