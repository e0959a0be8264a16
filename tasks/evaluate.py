"""Evaluation tasks: base-vs-tuned comparison grids and the evaluation summary for Prefect."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw
from prefect import task

from models.shapes.specs import TASKS as GENEVAL_TASKS
from models.shapes.specs import task_order
from synrank.eval_report import EvalReport
from synrank.progress import progress
from synrank.shards import load_images

VERDICT_COLOURS = {True: (40, 170, 60), False: (210, 50, 40), None: (170, 170, 170)}  # pass, fail, not judged


def grid_prompts(prompts: pd.DataFrame, per_category: int) -> list[str]:
    """The first `per_category` prompt ids of each category (a GenEval task, a PartiPrompts category),
    categories in the order they first appear; prompts without a category count as one category."""
    cats = prompts["category"].where(prompts["category"].notna(), "")
    return [pid for _, g in prompts.groupby(cats, sort=False) for pid in g["prompt_id"].head(per_category)]


@task(name="comparison-grid")
def comparison_grid(
    manifest: pd.DataFrame,
    images_root: str,
    models: list[str],
    prompt_ids: list[str],
    verdicts: dict[tuple[str, str, int], bool] | None = None,
    labels: dict[str, str] | None = None,
    cell: int = 192,
) -> Image.Image:
    """One row per prompt (its text above), one column per model, the same seed (index 0) across a row,
    each image `cell` px wide. A border marks the benchmark verdict of (model, prompt_id, 0): green pass,
    red fail, grey not judged; `labels[image_id]` (a reward score) is written under the image."""
    from PIL import ImageFont

    verdicts, labels = verdicts or {}, labels or {}
    font = ImageFont.load_default(size=max(12, cell // 12))
    line, pad = font.size + 6, 5
    rows = manifest[(manifest["index"] == 0) & manifest["prompt_id"].isin(prompt_ids)]
    row_h = line + cell + line
    grid = Image.new("RGB", (cell * len(models), line + row_h * len(prompt_ids)), "white")
    draw = ImageDraw.Draw(grid)
    for c, model in enumerate(models):
        draw.text((c * cell + 4, 2), model, fill="black", font=font)
    for r, pid in enumerate(prompt_ids):
        y = line + r * row_h
        here = rows[rows["prompt_id"] == pid]
        draw.text((4, y + 2), str(here["prompt"].iloc[0]), fill="black", font=font)
        for c, model in enumerate(models):
            img_row = here[here["model"] == model].iloc[0]
            im = load_images(Path(images_root), [(img_row["shard"], img_row["member"])])[0]
            x0, y0 = c * cell, y + line
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=VERDICT_COLOURS[verdicts.get((model, pid, 0))])
            grid.paste(im.resize((cell - 2 * pad, cell - 2 * pad), Image.NEAREST), (x0 + pad, y0 + pad))
            draw.text((x0 + 4, y0 + cell + 2), labels.get(img_row["image_id"], ""), fill="black", font=font)
    return grid


def summary_markdown(results: dict[str, dict], base: str, tuned: str) -> str:
    """Markdown of `tuned`'s win-rates over `base` per reward (models.winrates.winrates' result: win-rate,
    95% bootstrap CI over prompts, compared image pairs, mean score delta tuned - base), then, when the
    results carry categories, win-rate [CI] per prompt category (GenEval tasks in their canonical order)."""
    lines = [
        f"# Evaluation: {tuned} vs {base}",
        "",
        "| reward | win-rate | 95% CI | pairs | mean delta |",
        "|---|---|---|---|---|",
    ]
    for reward, r in results.items():
        lines.append(
            f"| {reward} | {r['winrate']:.3f} | [{r['ci_low']:.3f}, {r['ci_high']:.3f}] | "
            f"{r['n_pairs']} | {r['mean_delta']:+.4f} |"
        )
    cats = task_order({c for r in results.values() for c in r.get("categories", {})})
    if cats:
        lines += [
            "",
            "Win-rate per prompt category:",
            "",
            "| category | prompts | " + " | ".join(results) + " |",
            "|---" * (len(results) + 2) + "|",
        ]
        for c in cats:
            cells = [r.get("categories", {}).get(c) for r in results.values()]
            n = next(x["n"] for x in cells if x)
            lines.append(
                f"| {c} | {n} | "
                + " | ".join(f"{x['winrate']:.3f} [{x['ci_low']:.2f}, {x['ci_high']:.2f}]" if x else "-" for x in cells)
                + " |"
            )
    return "\n".join(lines) + "\n"


@task(name="run-benchmark", task_run_name="benchmark[{name}]")
def run_benchmark(
    name: str, manifest: pd.DataFrame, prompts: pd.DataFrame, images_root: str, pair: tuple[str, str] | None = None
) -> tuple[dict, dict | None, pd.DataFrame]:
    """({model: summary}, paired, judged) for the images whose prompt metadata the benchmark understands;
    the summaries' CIs resample prompts within each task (a prompt's images are not independent);
    paired = tuned minus base on the same prompts and seeds when pair=(base, tuned) are both there: the
    headline over the benchmark's tasks and each probe apart (models.shapes.benchmark.paired_score);
    judged = one row per image (model, prompt_id, index, task, value), what the study compares."""
    import json

    from models.benchmarks import load_benchmark

    bench = load_benchmark(name)
    meta = {pid: json.loads(m) for pid, m in zip(prompts["prompt_id"], prompts["meta"])}
    rows = manifest[[bench.applies(meta[p]) for p in manifest["prompt_id"]]]
    out, judged = {}, {}
    for model, g in rows.groupby("model", sort=False):
        images = load_images(Path(images_root), zip(g["shard"], g["member"]))
        results = [
            bench.judge(im, meta[p])
            for im, p in progress(zip(images, g["prompt_id"]), f"{name} {model}", unit="images", total=len(g))
        ]
        out[model] = bench.summarize(results, prompts=[str(p) for p in g["prompt_id"]])
        judged[model] = pd.DataFrame(
            {
                "prompt_id": g["prompt_id"].values,
                "index": g["index"].values,
                "task": [t for t, _ in results],
                "value": [float(v) for _, v in results],
            }
        )
    table = (
        pd.concat([j.assign(model=m) for m, j in judged.items()], ignore_index=True)
        if judged
        else pd.DataFrame(columns=["prompt_id", "index", "task", "value", "model"])
    )
    if not (pair and all(m in judged for m in pair)):
        return out, None, table
    return (
        out,
        {"base": pair[0], "tuned": pair[1], **paired_between(judged[pair[0]], judged[pair[1]], bench.tasks)},
        table,
    )


def paired_between(base: pd.DataFrame, tuned: pd.DataFrame, tasks: Sequence[str] | None = None) -> dict:
    """tuned - base on the images both judged (rows of `judged`, matched on prompt_id, index and task:
    the same prompt and seed), the headline over the tasks and each probe apart, prompts resampled
    within tasks (models.shapes.benchmark.paired_score); `tasks`: the benchmark's (GenEval's six by
    default), any other tag a probe. ValueError when no image matches."""
    from models.shapes.benchmark import paired_score

    both = base.merge(tuned, on=["prompt_id", "index", "task"], suffixes=("_base", "_tuned"))
    return paired_score(
        both["task"].to_numpy(),
        (both["value_tuned"] - both["value_base"]).to_numpy(),
        both["prompt_id"].astype(str).to_numpy(),
        tasks=GENEVAL_TASKS if tasks is None else tasks,
    )


def task_rows(report: EvalReport) -> pd.DataFrame:
    """The benchmark summaries as one row per (benchmark, model, task) with a `label` for DVC's bar plot:
    the tasks, overall, then any probe (reported apart from overall)."""
    rows = []
    for bench, by_model in report.benchmarks.items():
        for model, s in by_model.items():
            for task_name, c in [*s["tasks"].items(), ("overall", s["overall"]), *s.get("probes", {}).items()]:
                rows.append(
                    {
                        "benchmark": bench,
                        "model": model,
                        "task": task_name,
                        "label": f"{task_name} | {model}",
                        "accuracy": c["accuracy"],
                        "ci_low": c["ci95"][0],
                        "ci_high": c["ci95"][1],
                    }
                )
    return pd.DataFrame(rows, columns=["benchmark", "model", "task", "label", "accuracy", "ci_low", "ci_high"])
