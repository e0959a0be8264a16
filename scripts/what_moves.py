"""What moves the model: one command per arm of docs/what-moves-the-model.md.

    python scripts/what_moves.py --arm anchor-1 --labels oracle     # train and judge one arm
    python scripts/what_moves.py --table                            # the table of every finished arm

An arm is the default run (params.yaml) with one lever changed: the train settings (`train.*`), or which
images fill a group (`groups`: the default's mixed Syn-Pic groups of 4 generators x 2 seeds, or on-policy
groups of 8 images from the base alone). `--labels` picks the ranking: `learned` (Algorithm 1 over the three
CLIP rewards and the detector, as params.yaml) or `oracle` (the shapes-verifier reward alone: the benchmark's
own judge, graded, so label quality and method stay separable). Every arm has the same budget (train.steps x
train.prompts_per_step groups) unless the lever is the budget.

Each arm runs the real stages with `synrank <stage> --set ...` into outputs/arms/ (content-stamped, so a
rerun reuses what is current) and is then judged on **selection prompts from the train split only**: at most
30 per task of data/prompts/shapes_train.jsonl (seeded), 8 images each, the same seeds for base and tuned,
verified by models.shapes.verify; the paired tuned - base difference and its 95% CI resample prompts within
tasks (models.shapes.benchmark.paired_score). The held-out benchmark and the probe are never looked at here.
Selection prompts are train prompts (the train split holds every two_object, colors and single_object prompt
of the grammar, so none could be kept out): the selection gain is an upper bound of what transfers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "outputs" / "arms"
SYNRANK = [sys.executable, "-m", "cli"]  # the `synrank` command
LEARNED = ["clip-p4", "clip-p8", "clip-norel", "detector"]
ORACLE = {"name": "oracle", "kind": "shapes-verifier"}
SELECTION_PER_TASK, SELECTION_SEED, SELECTION_IMAGES, EVAL_SEED = 30, 7, 8, 4321


@dataclass(frozen=True)
class Arm:
    """One lever against the default: `train` overrides (`--set train.<key>=<value>`) and the group source."""

    help: str
    train: dict = field(default_factory=dict)
    groups: str = "mixed"  # mixed: 4 generators x 2 seeds (Syn-Pic); onpolicy: 8 seeds of the base
    base: str = "shapes-sd-s"


ARMS = {
    "default": Arm("params.yaml's train section (RankDPO, beta 1000, lr 2e-3, Min-SNR 5, 1,000 x 8 groups)"),
    # The anchor's scale: the preference loss's gradient on an error is about beta x Delta / 2 (beta = 1000), so
    # lambda = 1 is a rounding error beside it and lambda ~ beta x Delta makes the two pull alike.
    "anchor-1": Arm("RankDPO + 1 x the winners' denoising loss", {"anchor_weight": 1.0}),
    "anchor-100": Arm("RankDPO + 100 x the winners' denoising loss", {"anchor_weight": 100.0}),
    "anchor-1000": Arm("RankDPO + 1000 x the winners' denoising loss", {"anchor_weight": 1000.0}),
    "dpo-anchor-100": Arm(
        "DPO (best over worst) + 100 x the winner's loss", {"objective": "dpo", "anchor_weight": 100.0}
    ),
    "balanced": Arm("groups drawn equally often per task (the benchmark's weighting)", {"balance_tasks": True}),
    "margin-0.25": Arm("pairs whose phi differ by < 0.25 carry no weight (GPO's near-ties)", {"min_margin": 0.25}),
    "high-noise": Arm(
        "timesteps of the noisier half only (t in [0.5, 1] of the schedule)", {"timestep_range": [0.5, 1.0]}
    ),
    "anchor-100-high-noise": Arm(
        "the two levers that moved the learned labels, together", {"anchor_weight": 100.0, "timestep_range": [0.5, 1.0]}
    ),
    "onpolicy-anchor-100-high-noise": Arm(
        "on-policy groups with the anchor and the high-noise timesteps",
        {"anchor_weight": 100.0, "timestep_range": [0.5, 1.0]},
        groups="onpolicy",
    ),
    "no-min-snr": Arm("no Min-SNR timestep weighting", {"snr_gamma": None}),
    "budget-x2": Arm("2,000 steps instead of 1,000", {"steps": 2000}),
    "prompts-x4": Arm("32 prompt groups per step instead of 8 (4x the budget)", {"prompts_per_step": 32}),
    "base-sd-m": Arm("shapes-sd-m as the base (moderate, like SDXL)", {"base": "shapes-sd-m"}, base="shapes-sd-m"),
    "onpolicy": Arm("groups of 8 images from the base alone (on-policy)", groups="onpolicy"),
}


def synrank(stage: str, sets: list[str]) -> None:
    """Run `synrank <stage> --set ...`; a failure stops the arm with the stage's own exit code."""
    cmd = [*SYNRANK, stage, *[a for s in sets for a in ("--set", s)]]
    print("+", " ".join(cmd[2:]), flush=True)
    done = subprocess.run(cmd, cwd=ROOT)
    if done.returncode:
        sys.exit(done.returncode)


def data_sets(arm: Arm) -> list[str]:
    """Paths and generators of the arm's image source (its own folders under outputs/arms/<groups>/)."""
    base = OUT / arm.groups
    sets = [f"paths.images={base / 'images'}", f"paths.scores={base / 'scores'}"]
    if arm.groups == "onpolicy":
        sets += [
            f"generate.generators=[{{name: {arm.base}, path: zoo/{arm.base}, steps: 10, guidance: 4.0, "
            "height: 32, width: 32}]",
            "generate.images_per_prompt=8",
        ]
    return sets


def reward_sets() -> list[str]:
    """The learned rewards of params.yaml plus the oracle (allowed: this is a diagnosis run)."""
    learned = [
        "{name: clip-p4, kind: clipscore, arch: 'local-dir:zoo/shapes-clip-p4'}",
        "{name: clip-p8, kind: clipscore, arch: 'local-dir:zoo/shapes-clip-p8'}",
        "{name: clip-norel, kind: clipscore, arch: 'local-dir:zoo/shapes-clip-norel'}",
        "{name: detector, kind: shapes-detector}",
    ]
    oracle = "{name: oracle, kind: shapes-verifier}"
    return [f"score.rewards=[{', '.join([*learned, oracle])}]", "score.oracle=true"]


def build_data(arm: Arm, labels: str) -> Path:
    """generate -> score (learned + oracle) -> rank with the chosen label source; returns the rankings folder."""
    sets = data_sets(arm) + reward_sets()
    rankings = OUT / arm.groups / f"rankings-{labels}"
    synrank("generate", sets)
    synrank("score", sets)
    names = LEARNED if labels == "learned" else ["oracle"]
    synrank("rank", [*sets, f"paths.rankings={rankings}", f"rank.rewards=[{', '.join(names)}]"])
    return rankings


def train(arm: Arm, name: str, labels: str, rankings: Path) -> Path:
    """synrank train of the arm into outputs/arms/runs/<arm>-<labels>/model."""
    model = OUT / "runs" / f"{name}-{labels}" / "model"
    sets = data_sets(arm) + reward_sets() + [f"paths.rankings={rankings}", f"paths.model={model}"]
    sets += [f"train.{k}={json.dumps(v) if v is not None else 'null'}" for k, v in arm.train.items()]
    synrank("train", sets)
    return model


def selection_specs() -> list[dict]:
    """At most SELECTION_PER_TASK train-split prompts per task (seeded choice), as GenEval-schema specs."""
    from models.shapes.specs import TASKS

    rows = [json.loads(line) for line in (ROOT / "data/prompts/shapes_train.jsonl").read_text().splitlines() if line]
    rng = np.random.default_rng(SELECTION_SEED)
    out = []
    for task in TASKS:
        specs = [r for r in rows if r["tag"] == task]
        pick = sorted(rng.permutation(len(specs))[:SELECTION_PER_TASK])
        out += [specs[int(i)] for i in pick]
    return out


def judge(model_folder: Path | None, base: str) -> list[list[bool]]:
    """Pass/fail of SELECTION_IMAGES images per selection prompt: the base (model_folder None) or base + LoRA."""
    import torch

    from models.shapes_zoo.measure import generate_and_verify, load_pipeline

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    pipe = load_pipeline(ROOT / "zoo" / base)
    if model_folder is not None:
        pipe.load_lora_weights(str(model_folder))
    ev = generate_and_verify(pipe, selection_specs(), SELECTION_IMAGES, EVAL_SEED, steps=10, guidance=4.0)
    return ev.passed


def base_verdicts(base: str) -> list[list[bool]]:
    """judge() of the untrained base, cached in outputs/arms/selection-<base>.json (keyed by the prompts)."""
    specs = selection_specs()
    path = OUT / f"selection-{base}.json"
    key = [s["prompt"] for s in specs]
    if path.exists() and json.loads(path.read_text())["prompts"] == key:
        return json.loads(path.read_text())["passed"]
    passed = judge(None, base)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"prompts": key, "passed": passed}))
    return passed


def compare(base: list[list[bool]], tuned: list[list[bool]]) -> dict:
    """Base and tuned selection accuracy and the paired difference with 95% CIs, per task."""
    from models.shapes import geneval_accuracy
    from models.shapes.benchmark import paired_score

    specs = selection_specs()
    tags = [s["tag"] for s, ims in zip(specs, base) for _ in ims]
    prompts = [s["prompt"] for s, ims in zip(specs, base) for _ in ims]
    flat = lambda v: [bool(x) for row in v for x in row]  # noqa: E731
    diffs = np.array(flat(tuned), float) - np.array(flat(base), float)
    acc = lambda v: geneval_accuracy(list(zip(tags, flat(v))), prompts=prompts)  # noqa: E731
    return {"base": acc(base), "tuned": acc(tuned), "paired": paired_score(tags, diffs.tolist(), prompts)}


def run_arm(name: str, labels: str) -> dict:
    """Build the data, train, judge; writes outputs/arms/runs/<name>-<labels>/result.json."""
    arm = ARMS[name]
    model = train(arm, name, labels, build_data(arm, labels))
    result = compare(base_verdicts(arm.base), judge(model, arm.base))
    curve = model / "train_curve.csv"
    result["arm"], result["labels"], result["help"], result["train"] = name, labels, arm.help, arm.train
    result["curve"] = pd.read_csv(curve).to_dict(orient="list") if curve.exists() else {}
    out = model.parent / "result.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    p = result["paired"]
    print(f"{name} [{labels}]: tuned - base {p['delta']:+.3f} [{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}]")
    return result


def fmt(d: dict) -> str:
    """'+0.012 [-0.004, +0.028]' of a paired_score entry."""
    return f"{d['delta']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"


def late_mean(curve: dict, key: str, last: int = 5) -> str:
    """The mean of the last `last` logged values of a curve column (NaN rows, e.g. the held-out accuracy's
    own row, skipped), formatted; '-' without it."""
    values = [v for v in curve.get(key, []) if v == v][-last:]
    return f"{np.mean(values):+.1e}" if values else "-"


def curves(names: list[str], steps: tuple[int, ...] = (100, 250, 500, 750, 1000)) -> str:
    """Markdown table of the winners' and losers' implicit scores (s = err_theta - err_ref, per image) at
    `steps` for the runs `names` (<arm>-<labels>): does the preference accuracy come from the winners or
    from the losers?"""
    head = "| run | " + " | ".join(f"step {s}: winner_s / loser_s" for s in steps) + " |"
    lines = [head, "|" + "---|" * (len(steps) + 1)]
    for name in names:
        c = json.loads((OUT / "runs" / name / "result.json").read_text()).get("curve", {})
        at = {int(st): (w, lo) for st, w, lo in zip(c.get("step", []), c.get("winner_s", []), c.get("loser_s", []))}
        cells = [f"{at[s][0]:+.1e} / {at[s][1]:+.1e}" if s in at else "-" for s in steps]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table() -> str:
    """Markdown table of every result.json: the arm, labels, base and tuned selection accuracy, the paired
    difference per task, and the last logged winners'/losers' implicit scores."""
    from models.shapes.specs import TASKS

    head = "| arm | labels | base | tuned | tuned - base [95% CI] | " + " | ".join(TASKS) + " | winner_s | loser_s |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for path in sorted((OUT / "runs").glob("*/result.json")):
        r = json.loads(path.read_text())
        tasks = " | ".join(f"{r['paired']['tasks'][t]['delta']:+.3f}" for t in TASKS)
        ws, ls = (late_mean(r.get("curve", {}), k) for k in ("winner_s", "loser_s"))
        lines.append(
            f"| {r['arm']} | {r['labels']} | {r['base']['overall']['accuracy']:.3f} | "
            f"{r['tuned']['overall']['accuracy']:.3f} | {fmt(r['paired'])} | {tasks} | {ws} | {ls} |"
        )
    return "\n".join(lines)


def task_table() -> str:
    """Markdown table of every result's paired per-task gains with their 95% CIs."""
    from models.shapes.specs import TASKS

    head = "| arm | labels | " + " | ".join(TASKS) + " |"
    lines = [head, "|" + "---|" * (len(TASKS) + 2)]
    for path in sorted((OUT / "runs").glob("*/result.json")):
        r = json.loads(path.read_text())
        lines.append(
            f"| {r['arm']} | {r['labels']} | " + " | ".join(fmt(r["paired"]["tasks"][t]) for t in TASKS) + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI: --arm NAME --labels learned|oracle, or --table, or --list."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arm", choices=sorted(ARMS))
    ap.add_argument("--labels", choices=["learned", "oracle"], default="oracle")
    ap.add_argument("--table", action="store_true", help="print the table of every finished arm")
    ap.add_argument("--list", action="store_true", help="list the arms")
    ap.add_argument("--curves", nargs="+", metavar="RUN", help="winners'/losers' scores of runs <arm>-<labels>")
    args = ap.parse_args(argv)
    if args.list:
        print("\n".join(f"{k}: {a.help}" for k, a in ARMS.items()))
    elif args.table:
        print(table() + "\n\nPer task, paired tuned - base [95% CI]:\n\n" + task_table())
    elif args.curves:
        print(curves(args.curves))
    elif args.arm:
        run_arm(args.arm, args.labels)
    else:
        ap.error("give --arm, --table or --list")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
