"""The evaluation report (metrics/evaluate.json) as the markdown benchmark table `synrank table` prints and
summary.md holds: accuracies with their 95% CIs per model and task, and the paired tuned - base differences.

Kept apart from tasks.evaluate (Prefect, PIL, the benchmarks' judges) so that printing the table after a run
imports no model code: `synrank table` is part of every `make run`, a no-op one too."""

from __future__ import annotations

from models.shapes.specs import task_order
from synrank.eval_report import EvalReport

__all__ = ["benchmark_table", "format_accuracy", "format_delta", "result_line"]


def format_accuracy(c: dict | None) -> str:
    """A benchmark summary cell (`accuracy`, `ci95`) as 'accuracy [low, high]'; '-' for None."""
    return f"{c['accuracy']:.3f} [{c['ci95'][0]:.2f}, {c['ci95'][1]:.2f}]" if c else "-"


def format_delta(d: dict | None) -> str:
    """A paired tuned - base difference (`delta`, `ci95`) as signed 'delta [low, high]'; '-' for None."""
    return f"{d['delta']:+.3f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]" if d else "-"


def _sizes(c: dict) -> str:
    """'4960 image pairs on 310 prompts', or without a prompt count (an older report) '8 image pairs'."""
    pairs = f"{c['n_pairs']} image pair{'s' * (c['n_pairs'] != 1)}"
    return f"{pairs} on {c['n_prompts']} prompt{'s' * (c['n_prompts'] != 1)}" if "n_prompts" in c else pairs


def _paired_lines(d: dict) -> list[str]:
    """The headline paired difference with its CI and n, then one line per probe."""
    lo, hi = d["ci95"]
    how = ", prompts resampled within tasks" if "n_prompts" in d else ""
    lines = [
        f"- {d['tuned']} - {d['base']}, paired on the same prompts and seeds: {d['delta']:+.3f} "
        f"[{lo:+.3f}, {hi:+.3f}] (95% CI, {_sizes(d)}{how})"
    ]
    for tag, p in d.get("probes", {}).items():
        lines.append(
            f"- probe {tag} (not in overall): {p['delta']:+.3f} [{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}] "
            f"(95% CI, {_sizes(p)})"
        )
    return lines


def _n_line(summary: dict, tasks: list[str], probes: list[str]) -> str:
    """Prompts / images per task and probe of one model's summary; '' for an older report without them."""
    cells = [(t, summary["tasks"].get(t)) for t in tasks] + [
        (f"probe {p}", summary.get("probes", {}).get(p)) for p in probes
    ]
    if not all(c and "n_prompts" in c for _, c in cells):
        return ""
    return "- n (prompts/images): " + ", ".join(f"{t} {c['n_prompts']}/{c['n']}" for t, c in cells)


def benchmark_table(report: EvalReport) -> str:
    """Markdown per benchmark: one row per model (base and tuned first), one column per task, overall
    (the mean of the tasks) and each probe apart, accuracy [95% CI]; a row of the paired tuned - base
    differences; the prompts and images behind each column; the headline paired difference with its CI
    and n, and the probe's."""
    lines = []
    for bench, by_model in report.benchmarks.items():
        tasks = task_order({t for s in by_model.values() for t in s["tasks"]})
        probes = sorted({p for s in by_model.values() for p in s.get("probes", {})})
        lines += [
            f"### {bench}",
            "",
            "| model | " + " | ".join(tasks + ["overall"] + [f"probe: {p}" for p in probes]) + " |",
            "|---" * (len(tasks) + len(probes) + 2) + "|",
        ]
        # Base and tuned first, then the other generators (a JSON round trip has sorted the names).
        first = [m for m in (report.base, report.tuned) if m in by_model]
        for model in first + sorted(set(by_model) - set(first)):
            s = by_model[model]
            cells = [s["tasks"].get(t) for t in tasks] + [s["overall"]] + [s.get("probes", {}).get(p) for p in probes]
            lines.append(f"| {model} | " + " | ".join(format_accuracy(c) for c in cells) + " |")
        delta = report.paired.get(bench)
        if delta and "tasks" in delta:
            cells = [delta["tasks"].get(t) for t in tasks] + [delta] + [delta.get("probes", {}).get(p) for p in probes]
            lines.append(
                f"| {delta['tuned']} - {delta['base']} (paired) | " + " | ".join(map(format_delta, cells)) + " |"
            )
        n_line = _n_line(by_model[(first or sorted(by_model))[0]], tasks, probes) if by_model else ""
        lines += [""] + ([n_line] if n_line else []) + (_paired_lines(delta) if delta else [])
        lines.append("")
    return "\n".join(lines)


def result_line(report: EvalReport) -> str:
    """The report's answer in one line, per benchmark: 'geneval-shapes: base 0.221 [0.18, 0.26], tuned 0.228
    [0.19, 0.26], tuned - base +0.007 [-0.01, +0.02]'; '' without benchmark results."""
    parts = []
    for bench in report.benchmarks:
        base, tuned = report.summary(bench, report.base), report.summary(bench, report.tuned)
        paired = report.paired.get(bench)
        overall = [format_accuracy(m["overall"]) if m else "-" for m in (base, tuned)]
        parts.append(f"{bench}: base {overall[0]}, tuned {overall[1]}, tuned - base {format_delta(paired)}")
    return "; ".join(parts)
