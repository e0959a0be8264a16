"""The stages' plots as static SVG files, DVC's image plots (dvc.yaml `plots`): `dvc plots show` then writes
a page with no script at all, which opens with no network (DVC's vega plots load vega from a CDN: blank
offline). The bytes are deterministic (no date, fixed ids), since the files are part of their folder's
content id, which a resumed run must reproduce.

- train_curve.svg (the model folder): the training loss and the implicit accuracy against the step, each on
  its own labelled axes;
- benchmark_tasks.svg (the eval folder): per benchmark, each task's accuracy of the base and the tuned
  model side by side in two colours, with their 95% CI whiskers.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from synrank.atomic import write_bytes

COLORS = {"base": "#8c8c8c", "tuned": "#1f77b4"}


def _save(fig, out: Path) -> Path:
    """Write `fig` as SVG to `out` (atomically), byte-for-byte the same for the same figure."""
    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "synrank", "svg.fonttype": "path"}):
        fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight")
    write_bytes(out, buf.getvalue())
    return out


def training_curve_svg(curve: pd.DataFrame, out: Path) -> Path:
    """train_curve.svg from a train_curve.csv table (step, loss, implicit_acc): two panels side by side."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.2))
    panels = [
        ("loss", "training loss", "training loss"),
        ("implicit_acc", "implicit accuracy", "implicit accuracy (share of pairs ranked right)"),
    ]
    for ax, (column, label, title) in zip(fig.subplots(1, 2), panels):
        rows = curve[["step", column]].dropna() if column in curve else pd.DataFrame({"step": [], column: []})
        ax.plot(rows["step"], rows[column], marker="o", markersize=3, color=COLORS["tuned"])
        ax.set(xlabel="optimizer step", ylabel=label, title=title)
        ax.grid(alpha=0.3)
    return _save(fig, out)


def benchmark_tasks_svg(rows: pd.DataFrame, base: str, tuned: str, out: Path) -> Path:
    """benchmark_tasks.svg from benchmark_tasks.csv rows (benchmark, model, task, accuracy, ci_low, ci_high):
    one panel per benchmark, the tasks on the x axis (overall last but probes), base and tuned bars with CIs."""
    from matplotlib.figure import Figure

    benches = list(dict.fromkeys(rows["benchmark"])) or ["(no benchmark)"]
    fig = Figure(figsize=(10, 3.6 * len(benches)))
    for ax, bench in zip(fig.subplots(len(benches), 1, squeeze=False)[:, 0], benches):
        part = rows[rows["benchmark"] == bench]
        tasks = list(dict.fromkeys(part["task"]))
        for offset, (role, model) in zip((-0.2, 0.2), (("base", base), ("tuned", tuned))):
            mine = part[part["model"] == model].set_index("task").reindex(tasks)
            x = [i + offset for i in range(len(tasks))]
            err = [mine["accuracy"] - mine["ci_low"], mine["ci_high"] - mine["accuracy"]]
            ax.bar(x, mine["accuracy"], width=0.4, color=COLORS[role], label=f"{role}: {model}")
            ax.errorbar(x, mine["accuracy"], yerr=err, fmt="none", ecolor="black", capsize=3, linewidth=1)
        ax.set_xticks(range(len(tasks)), tasks, rotation=20)
        ax.set(ylabel="accuracy (95% CI)", title=bench, ylim=(0, 1))
        ax.legend(loc="upper right")
        ax.grid(axis="y", alpha=0.3)
    return _save(fig, out)
