"""What `engine: ray` costs and gains against `engine: local` for the generate stage's shards.

Renders the same plan (the zoo's shapes-sd-s, 32 px, 10 DDIM steps, as `make run`) through
tasks.generate.generate_all, which is what the stage runs, into a fresh folder per run:
- local at 1 and at 2 torch threads (the in-process path; no Ray import);
- ray on a temporary local Ray with 1 CPU (one worker at a time) and with 2 CPUs (two workers), fake GPUs
  off (gpus_per_task 0), each task at one torch thread (Ray's OMP_NUM_THREADS for a 1-CPU task);
each with 1 shard and with N shards, after one unmeasured warm-up run (the Prefect server, the imports).
Fitting T(n) = a + b n per run kind gives the fixed cost per run `a`
(Ray: starting Ray, the first workers importing torch/diffusers/prefect and loading the pipeline) and the cost
per shard `b`; the overheads are the Ray rows minus the local row of the same per-process thread count.

    .venv/bin/python scripts/bench_ray.py                       # 16 shards of 32 images
    .venv/bin/python scripts/bench_ray.py --shards 8 --shard-size 16

Needs the ray extra (`uv sync --extra ray`). Prints a markdown table on stdout (progress on stderr).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from anywhere without installing

from cli.main import prefect_env  # noqa: E402

os.environ.update(prefect_env(os.environ))  # an ephemeral Prefect server that may take its time on 2 cores

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from synrank.cluster_config import ClusterConfig  # noqa: E402
from synrank.config import GenerateConfig, GeneratorSpec  # noqa: E402
from tasks.generate import generate_all  # noqa: E402

COLORS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
SHAPES = ["circle", "square", "triangle", "star", "ring", "cross"]


def prompts(n: int) -> pd.DataFrame:
    texts = [f"{k} {c} {s}s" for k in range(1, 9) for c in COLORS for s in SHAPES][:n]
    return pd.DataFrame({"prompt_id": [f"p{i}" for i in range(len(texts))], "prompt": texts})


def timed(kind: str, threads: int, cpus: int, n_shards: int, shard_size: int, out: Path) -> float:
    """Seconds of one generate_all over n_shards shards (2 images per prompt) into a fresh folder."""
    spec = GeneratorSpec(name="g", path=str(ROOT / "zoo" / "shapes-sd-s"), steps=10, guidance=4.0, height=32, width=32)
    fan = GenerateConfig(generators=[spec], engine=kind, gpus_per_task=0, cpus_per_task=1)
    torch.set_num_threads(threads)
    table = prompts(n_shards * shard_size // 2)
    t0 = time.perf_counter()
    manifest = generate_all(
        [spec], table, out, 2, 0, shard_size, 64, "cpu", fan=fan, cluster=ClusterConfig(num_cpus=cpus, num_gpus=0)
    ).manifest
    seconds = time.perf_counter() - t0
    assert len(manifest) == n_shards * shard_size
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=16, help="N, the shards of the long run")
    ap.add_argument("--shard-size", type=int, default=32, help="images per shard")
    args = ap.parse_args()
    runs = [("local", 1, 1), ("local", 2, 1), ("ray", 1, 1), ("ray", 1, 2)]  # (engine, torch threads, Ray CPUs)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # Not measured: starts this process's ephemeral Prefect server and imports torch, diffusers and the zoo.
        timed("local", 2, 1, 1, args.shard_size, Path(tmp) / "warm-up")
        for kind, threads, cpus in runs:
            t = {}
            for n in (1, args.shards):
                label = f"{kind}-t{threads}-c{cpus}-n{n}"
                t[n] = timed(kind, threads, cpus, n, args.shard_size, Path(tmp) / label)
                print(f"{label}: {t[n]:.1f} s", file=sys.stderr, flush=True)
            per_shard = (t[args.shards] - t[1]) / (args.shards - 1)
            rows.append((kind, threads, cpus, t[1], t[args.shards], t[1] - per_shard, per_shard))
    n, size = args.shards, args.shard_size
    print(
        f"| engine | workers x torch threads | T(1 shard) s | T({n} shards) s | fixed per run s | per shard s "
        f"| shards/min |"
    )
    print("|---|---|---|---|---|---|---|")
    for kind, threads, cpus, t1, tn, fixed, per in rows:
        workers = f"{cpus if kind == 'ray' else 1} x {threads}"
        print(f"| {kind} | {workers} | {t1:.1f} | {tn:.1f} | {fixed:.1f} | {per:.2f} | {60 / per:.1f} |")
    print(
        f"\n{size} images per shard (shapes-sd-s, 32 px, 10 steps, batch 64); machine: {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}"
    )


if __name__ == "__main__":
    main()
