"""The one list of synrank's commands: each stage and composite flow, what it does, the config sections it
reads, the flow arguments it takes, the folder it writes and the inputs it needs. The CLI (its subcommands,
help and input checks), validation (the sections a command reads), deploy (the stage forms), the dvc.yaml
code-deps writer (synrank.codehash), the stamps (synrank.stamp) and the layout test read it from here.

A stage's flow is `flows.<name>.<name>_flow`; its Prefect tasks are in `tasks/<name>.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Need:
    """An input a stage reads from an earlier one: `paths.<field>/<file>`, written by `synrank <maker>`."""

    field: str
    file: str
    maker: str


@dataclass(frozen=True)
class Stage:
    """One command. `args` maps the flow's keyword arguments to config sections (besides paths and tracking,
    which every single stage takes); `output` is the `Paths` field it writes and locks ("" for a composite
    flow, which takes the whole config as `cfg`); `dvc`: a stage of dvc.yaml (its code deps are written by
    synrank.codehash)."""

    name: str
    help: str
    reads: tuple[str, ...]
    args: dict[str, str] = field(default_factory=dict)
    output: str = ""
    needs: tuple[Need, ...] = ()
    dvc: bool = False


RANKINGS, IMAGES = Need("rankings", "rankings.parquet", "rank"), Need("images", "manifest.parquet", "generate")
PIPELINE = ("sample", "generate", "score", "rank", "train", "evaluate")  # what `synrank pipeline` runs, in order

ALL: tuple[Stage, ...] = (
    Stage("sample", "read prompt corpora, dedupe, split train/eval", ("sample",), {"cfg": "sample"}, "prompts",
          dvc=True),
    Stage("generate", "images for every train prompt from every generator", ("generate",),
          {"cfg": "generate", "cluster": "cluster"}, "images", (Need("prompts", "prompts.parquet", "sample"),),
          dvc=True),
    Stage("score", "every image under every reward model", ("score",), {"cfg": "score", "cluster": "cluster"},
          "scores", (IMAGES,), dvc=True),
    Stage("rank", "Algorithm 1: per-prompt rankings from the averaged pairwise wins", ("score", "rank"),
          {"cfg": "rank"}, "rankings", (Need("scores", "scores.parquet", "score"), IMAGES), dvc=True),
    Stage("train", "preference fine-tuning (RankDPO, DPO, ...) of one generator", ("generate", "train"),
          {"cfg": "train", "generate": "generate"}, "model", (RANKINGS, IMAGES), dvc=True),
    Stage("evaluate", "tuned vs base on held-out prompts", ("generate", "score", "evaluate"),
          {"cfg": "evaluate", "rewards": "score", "generate": "generate", "cluster": "cluster"}, "eval",
          (Need("model", "tuned.json", "train"), Need("prompts", "prompts.parquet", "sample")),
          dvc=True),
    Stage("export", "the ranked images as a Hugging Face dataset folder with a dataset card (Syn-Pic's layout)",
          ("generate", "score", "rank", "export"),
          {"cfg": "export", "generate": "generate", "score": "score", "rank": "rank"}, "dataset",
          (RANKINGS, Need("scores", "scores.parquet", "score")), dvc=True),
    Stage("ingest", "preference data made elsewhere (Pick-a-Pic-style pairs, synrank's export) as prompts, "
          "images and rankings to train on", ("ingest",), {"cfg": "ingest"}, "ingested"),
    Stage("pipeline", "all six stages in order under one MLflow parent run", PIPELINE),
    Stage("study", "the ablation study: base/SFT/DPO/RankDPO/GPO/SUDO x seeds, one table with CIs (docs/study.md)",
          (*PIPELINE, "study")),
    Stage("online", "GPO-style online self-improvement: rounds of generate, score, rank, train, evaluate",
          (*PIPELINE, "online")),
)  # fmt: skip

STAGES: dict[str, Stage] = {s.name: s for s in ALL}
DVC_STAGES = tuple(s.name for s in ALL if s.dvc)
STAGE_OUTPUT = {s.name: s.output for s in ALL if s.output}  # the `Paths` field each single stage writes
