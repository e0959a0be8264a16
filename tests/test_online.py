"""The online loop's per-round table by hand, and two tiny rounds end to end: the table's gain since
round 0 is the judged images' own paired difference, and MLflow holds one point per round."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from synrank.config import validate
from tasks.online import rounds_markdown, rounds_summary

pytestmark = pytest.mark.slow  # needs a Prefect server, a subprocess or a training run

KEY = ["prompt_id", "index", "task"]


def write_round(d: Path, base: str, tuned: str, values: dict[str, list[float]]) -> None:
    """A round folder as evaluate leaves it: evaluate.json and one judged row per image of both models."""
    (d / "metrics").mkdir(parents=True)
    (d / "eval").mkdir()
    ids = [("p1", 0), ("p1", 1), ("p2", 0), ("p2", 1)]
    rows = [
        {"prompt_id": p, "index": i, "task": "counting", "value": v, "model": m}
        for m in (base, tuned)
        for (p, i), v in zip(ids, values[m])
    ]
    pd.DataFrame(rows).to_parquet(d / "eval" / "judged_bench.parquet", index=False)
    acc = {
        m: {"overall": {"accuracy": sum(values[m]) / 4, "ci95": [0.0, 1.0], "n": 4, "n_prompts": 2}}
        for m in (base, tuned)
    }
    gain = {"delta": (sum(values[tuned]) - sum(values[base])) / 4, "ci95": [-1.0, 1.0], "n_pairs": 4, "n_prompts": 2}
    (d / "metrics" / "evaluate.json").write_text(
        json.dumps({"base": base, "tuned": tuned, "benchmarks": {"bench": acc}, "paired": {"bench": gain}})
    )


def test_rounds_summary_pairs_every_round_with_round_zero(tmp_path: Path) -> None:
    m0, m1, m2 = [0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]
    write_round(tmp_path / "round-1", "r0", "r1", {"r0": m0, "r1": m1})
    write_round(tmp_path / "round-2", "r1", "r2", {"r1": m1, "r2": m2})
    rows = rounds_summary([tmp_path / "round-1", tmp_path / "round-2"], "bench")
    assert [(r["round"], r["model"], r["accuracy"]["accuracy"]) for r in rows] == [
        (0, "r0", 0.25),
        (1, "r1", 0.5),
        (2, "r2", 1.0),
    ]
    assert rows[0]["gain"] is None and rows[0]["since_start"] is None
    assert rows[1]["since_start"] == rows[1]["gain"]  # round 1 starts from round 0
    assert rows[2]["gain"]["delta"] == 0.5
    # r2 - r0 per image: p1 (1, 1), p2 (0, 1) -> 0.75; resampling the two prompts gives 1, 0.75 or 0.5.
    since = rows[2]["since_start"]
    assert since["delta"] == 0.75 and since["ci95"] == [0.5, 1.0] and since["n_pairs"] == 4
    md = rounds_markdown(rows, "bench")
    assert "| 2 | r2 | 1.000 [0.00, 1.00] | +0.500 [-1.00, +1.00] | +0.750 [+0.50, +1.00] |" in md
    assert md.endswith("2 held-out prompts, 4 images per model; CIs resample prompts within tasks.\n")


def test_two_tiny_online_rounds_end_to_end(tmp_path: Path) -> None:
    import synrank.config
    import synrank.stamp
    from flows.online import online_flow
    from tests.test_pipeline import tiny_config
    from tests.test_study import EVAL_PROMPTS

    cfg = tiny_config(tmp_path)
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(p) + "\n" for p in EVAL_PROMPTS))
    data = cfg.model_dump(mode="json")
    data["sample"]["sources"] = [
        {"path": str(tmp_path / "prompts.txt"), "split": "train"},
        {"path": str(tmp_path / "eval.jsonl"), "split": "eval", "categories": ["counting"]},
    ]
    data["train"].update({"base": "gen-a", "steps": 2, "log_every": 1})
    data["evaluate"].update({"images_per_prompt": 2, "all_generators": False})
    data["online"] = {"rounds": 2, "images_per_prompt": 2, "objective": "gpo"}
    cfg = validate(data)
    with pytest.MonkeyPatch.context() as mp:
        frozen = {s: synrank.stamp.code_hash(s) for s in synrank.config.STAGES}
        mp.setattr(synrank.stamp, "code_hash", frozen.__getitem__)
        online_flow(cfg)
    root = Path(cfg.paths.model).parent / "online"
    rows = json.loads((root / "online.json").read_text())
    assert [r["round"] for r in rows] == [0, 1, 2]
    first = pd.read_parquet(root / "round-1" / "eval" / "judged_geneval-shapes.parquet")
    last = pd.read_parquet(root / "round-2" / "eval" / "judged_geneval-shapes.parquet")
    assert set(first["task"]) == {"counting"}  # the eval source kept only its counting prompt
    base = first[first["model"] == rows[0]["model"]].set_index(KEY)["value"]
    tuned = last[last["model"] == rows[2]["model"]].set_index(KEY)["value"]
    assert len(base) == 2 and rows[2]["since_start"]["delta"] == pytest.approx((tuned - base).mean())
    assert (root / "online.md").read_text().count("\n| ") == 4  # the header and rounds 0, 1, 2
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    run = mlflow.search_runs(experiment_names=["e2e"], filter_string="tags.`synrank.stage` = 'online'")
    history = mlflow.MlflowClient().get_metric_history(run["run_id"][0], "geneval-shapes/overall")
    assert sorted(m.step for m in history) == [1, 2]
