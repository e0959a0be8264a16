"""synrank's trainer against the diffusers Diffusion-DPO research script: same model, data and settings.

    .venv/bin/python scripts/bench_vs_diffusers.py [--steps 100] [--repeats 3] [--pairs 8] [--threads 2]
    .venv/bin/python scripts/bench_vs_diffusers.py --smoke      # 3 steps, 1 repeat: does everything run?

The reference is diffusers' `examples/research_projects/diffusion_dpo/train_diffusion_dpo.py` (LoRA
Diffusion-DPO on SD1.5-class pipelines). It is not in any wheel or source distribution; fetch it into the
ignored folder third_party/diffusers/ (never commit it), for example at the commit this was measured with
(c9c82173068d628b0569ccb6d656adfa37a389e8, the file's last change in huggingface/diffusers):

    mkdir -p third_party/diffusers
    git -C <a diffusers clone> show c9c82173068d:examples/research_projects/diffusion_dpo/train_diffusion_dpo.py \\
        > third_party/diffusers/train_diffusion_dpo.py   # sha256 3d849342...e82988bc0

No line of it is changed. It runs under a small launcher (this file, `--child diffusers`) that only
(1) registers an empty `wandb` module when wandb is not installed (the script imports it at the top and
uses it only with --report_to wandb; tensorboard, its default tracker, is skipped by accelerate when it is
not installed) and (2) subclasses tqdm.auto.tqdm to timestamp each update of the script's "Steps" bar,
one update per optimizer step.

Every arm uses the committed zoo generator (zoo/shapes-sd-s, 32x32 px, the pipeline that `make run` tunes),
LoRA rank 8 on to_k/to_q/to_v/to_out.0 (alpha = rank, gaussian init), fp32, the same thread count, AdamW
at a constant learning rate, `--pairs` pairs (prompts) per step, and the same images: --prompts groups of
K = 4 random-pixel 32x32 images with a strict ranking. The script reads the (best, worst) pair of each group
as an HF dataset (columns jpg_0, jpg_1, label_0, caption; parquet in a local folder); synrank reads the
ranked groups, as the pipeline's rank stage writes them, and trains
- `dpo`: one pair per group (best over worst), the script's loss;
- `rankdpo`: all 6 pairs of the 4 ranked images (RankDPO, arXiv 2410.18013), counted as comparisons.

Arms alternate (script, dpo, rankdpo) x --repeats, each in a fresh process. Reported per arm: pairs/s
(comparisons/s) over the steps after the first --warmup, the time from process start to the end of the
first step (imports, model and data loading, synrank's one-off VAE encoding of every image included), and
the process's peak RSS. Not a test: numbers depend on the machine; record them with its load.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "third_party" / "diffusers" / "train_diffusion_dpo.py"
MODEL = ROOT / "zoo" / "shapes-sd-s"
K = 4  # images per prompt, as the pipeline's rank stage delivers them (one per generator and seed)
ARMS = ("diffusers", "dpo", "rankdpo")
LEARNING_RATE, BETA, RANK = 2e-3, 1000, 8


def write_data(work: Path, prompts: int, size: int = 32) -> None:
    """ranked.parquet (the rank stage's columns), images/<id>.png, and pairs/train.parquet: the
    (best, worst) pair of every group in the diffusers script's format (label_0 = 1: jpg_0 preferred)."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    rng = np.random.default_rng(0)
    (work / "images").mkdir(parents=True)
    rows, pairs = [], []
    for p in range(prompts):
        caption, phi = f"a photo of {p % 5 + 1} red circles", rng.permutation(K) / (K - 1)
        png = {}
        for i in range(K):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
            png[i] = buf.getvalue()
            (work / "images" / f"p{p}-{i}.png").write_bytes(png[i])
            tau = int(K - phi[i] * (K - 1))
            rows.append({"image_id": f"p{p}-{i}", "prompt_id": f"p{p}", "prompt": caption, "phi": phi[i], "tau": tau})
        best, worst = int(phi.argmax()), int(phi.argmin())
        pairs.append({"jpg_0": png[best], "jpg_1": png[worst], "label_0": 1.0, "caption": caption})
    ranked = pd.DataFrame(rows).assign(k=K)
    ranked["advantage"] = ranked.groupby("prompt_id")["phi"].transform(lambda v: (v - v.mean()) / v.std(ddof=0))
    ranked.to_parquet(work / "ranked.parquet")
    (work / "pairs").mkdir()
    pd.DataFrame(pairs).to_parquet(work / "pairs" / "train.parquet")


def _done(out: Path, t0: float, steps: list[float]) -> None:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux -> MiB
    out.write_text(json.dumps({"t0": t0, "steps": steps, "peak_rss_mib": peak}))


def run_diffusers(work: Path, args: argparse.Namespace, out: Path) -> None:
    """The unchanged diffusers script in this process (runpy), its Steps bar timestamped."""
    import runpy

    import tqdm.auto

    try:
        import wandb  # noqa: F401
    except ImportError:
        # Imported at the script's top, used only with --report_to wandb. A spec without an installed
        # distribution keeps accelerate's is_wandb_available() False, as it is without the stub.
        stub = types.ModuleType("wandb")
        stub.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
        sys.modules["wandb"] = stub
    stamps: list[float] = []

    class StepBar(tqdm.auto.tqdm):
        def update(self, n: float | None = 1) -> bool | None:
            if self.desc.startswith("Steps"):
                stamps.append(time.time())
            return super().update(n)

    tqdm.auto.tqdm = StepBar
    sys.argv = [str(SCRIPT), *diffusers_args(work, args)]
    runpy.run_path(str(SCRIPT), run_name="__main__")
    _done(out, args.t0, stamps)


def diffusers_args(work: Path, args: argparse.Namespace) -> list[str]:
    """The script's flags for the shared settings (everything else at its default)."""
    flags = {
        "pretrained_model_name_or_path": MODEL,
        "dataset_name": work / "pairs",
        "dataset_split_name": "train",
        "cache_dir": work / "hf-cache",
        "output_dir": work / f"diffusers-out-{os.getpid()}",
        "resolution": 32,
        "train_batch_size": args.pairs,
        "max_train_steps": args.steps,
        "checkpointing_steps": 10**9,
        "learning_rate": LEARNING_RATE,
        "lr_warmup_steps": 0,
        "rank": RANK,
        "beta_dpo": BETA,
        "mixed_precision": "no",
        "seed": 0,
    }
    return [*(f"--{k}={v}" for k, v in flags.items()), "--no_hflip"]


def run_synrank(objective: str, work: Path, args: argparse.Namespace, out: Path) -> None:
    """models.trainer.train on the ranked groups, every step logged with its time."""
    import pandas as pd
    from PIL import Image

    from models.trainer import train
    from synrank.config import GeneratorSpec, TrainConfig

    stamps: list[float] = []
    spec = GeneratorSpec(name="shapes-sd-s", steps=20, path=str(MODEL), height=32, width=32)
    cfg = TrainConfig(
        objective=objective,
        steps=args.steps,
        prompts_per_step=args.pairs,
        lora_rank=RANK,
        learning_rate=LEARNING_RATE,
        beta=float(BETA),
        mixed_precision="no",
        log_every=1,
        holdout_fraction=0.0,
    )
    ranked = pd.read_parquet(work / "ranked.parquet")

    def images(ids: list[str]) -> list[Image.Image]:
        return [Image.open(work / "images" / f"{i}.png").convert("RGB") for i in ids]

    train(spec, cfg, ranked, images, work / f"synrank-out-{os.getpid()}", log=lambda m, s: stamps.append(time.time()))
    _done(out, args.t0, stamps)


def child(args: argparse.Namespace) -> None:
    """One arm in this fresh process (started by `measure`)."""
    import torch

    torch.set_num_threads(args.threads)
    work, out = Path(args.work), Path(args.out)
    if args.child == "diffusers":
        run_diffusers(work, args, out)
    else:
        run_synrank(args.child, work, args, out)


def measure(arm: str, work: Path, args: argparse.Namespace) -> dict:
    """Run one arm in a fresh process: {pairs_per_s, first_step_s, peak_rss_mib}."""
    out = work / f"result-{arm}.json"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(work / "hf-home"),
        "PYTHONPATH": str(ROOT),
    }
    cmd = [sys.executable, __file__, "--child", arm, "--work", str(work), "--out", str(out)]
    cmd += [f"--{k}={getattr(args, k)}" for k in ("steps", "pairs", "threads")]
    t0 = time.time()
    done = subprocess.run([*cmd, f"--t0={t0}"], env=env, cwd=work, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{arm} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    res = json.loads(out.read_text())
    steps = res["steps"]
    if len(steps) != args.steps:
        raise SystemExit(f"{arm}: {len(steps)} step times for {args.steps} steps")
    per_step = args.pairs * (6 if arm == "rankdpo" else 1)  # rankdpo: C(4, 2) comparisons per group
    warm = min(args.warmup, args.steps - 2)
    rate = per_step * (len(steps) - 1 - warm) / (steps[-1] - steps[warm])
    return {"pairs_per_s": rate, "first_step_s": steps[0] - res["t0"], "peak_rss_mib": res["peak_rss_mib"]}


def report(results: dict[str, list[dict]], args: argparse.Namespace) -> str:
    """A markdown table: median [min, max] over the repeats, and the ratio to the script's median pairs/s."""
    script = results.get("diffusers")  # without the script's arm (--arms), no ratio
    base = statistics.median(r["pairs_per_s"] for r in script) if script else float("nan")
    lines = [
        "| arm | pairs/s (comparisons/s) | x script | first step (s) | peak RSS (MiB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for arm, runs in results.items():
        cells = []
        for key, fmt in (("pairs_per_s", "{:.1f}"), ("first_step_s", "{:.1f}"), ("peak_rss_mib", "{:.0f}")):
            vals = [r[key] for r in runs]
            cells.append(f"{fmt.format(statistics.median(vals))} [{fmt.format(min(vals))}, {fmt.format(max(vals))}]")
        ratio = statistics.median(r["pairs_per_s"] for r in runs) / base
        lines.append(f"| {arm} | {cells[0]} | {ratio:.2f}x | {cells[1]} | {cells[2]} |")
    lines.append(f"\n{args.steps} steps of {args.pairs} pairs, rate over steps {args.warmup + 1}-{args.steps}, ")
    lines[-1] += f"{args.repeats} alternating repeats, {args.threads} threads, {args.prompts} prompts x K={K}."
    return "\n".join(lines)


def main() -> None:
    """Parse the flags; run the arms (parent) or one arm (child)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--pairs", type=int, default=8, help="pairs (prompts) per optimizer step")
    ap.add_argument("--prompts", type=int, default=128, help="ranked groups of K=4 images in the data")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=10, help="steps left out of the rate")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--smoke", action="store_true", help="3 steps, 1 repeat, 16 prompts")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--child", choices=ARMS, help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    if args.smoke:
        args.steps, args.repeats, args.prompts, args.warmup = 3, 1, 16, 0
    if "diffusers" in args.arms and not SCRIPT.exists():
        raise SystemExit(f"{SCRIPT} is missing: fetch it as this script's docstring says")
    arms = args.arms.split(",")
    with tempfile.TemporaryDirectory(prefix="bench-vs-diffusers-") as tmp:
        work = Path(tmp)
        write_data(work, args.prompts)
        results: dict[str, list[dict]] = {arm: [] for arm in arms}
        for rep in range(args.repeats):
            for arm in arms:
                results[arm].append(measure(arm, work, args))
                print(f"repeat {rep + 1} {arm}: {results[arm][-1]}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(report(results, args))


if __name__ == "__main__":
    main()
