"""`synrank export`: the ranked images as a Hugging Face dataset folder with a dataset card (tasks.export).
Not part of the pipeline: a DVC stage of its own (dvc.yaml `export`), run when the dataset is wanted."""

from __future__ import annotations

import shutil

import pandas as pd
from prefect import flow

from synrank import tracking as tracking_mod
from synrank.atomic import publish_dir, temp_path
from synrank.config import ExportConfig, GenerateConfig, Paths, RankConfig, ScoreConfig, TrackingConfig
from synrank.deployment_params import stage_deployment_run
from synrank.stage import STAMP, finished, stage_run
from synrank.stamp import export_identity
from tasks.export import dataset_card, dataset_table, write_dataset


@flow(name="export", log_prints=True)
def export_flow(
    cfg: ExportConfig,
    generate: GenerateConfig,
    score: ScoreConfig,
    rank: RankConfig,
    paths: Paths = Paths(),
    tracking: TrackingConfig = TrackingConfig(),
) -> str:
    """Write paths.dataset from the prompts, images, scores and rankings of the last run.

    A Hugging Face `datasets` folder (tasks.export): data/*.parquet, `cfg.rows_per_shard` rows each, and a
    README.md dataset card naming the generators, rewards and aggregation; published whole, so a failed
    export leaves the previous one. Skipped when the stamp (synrank.stage) matches these settings, the
    images', scores' and rankings' content and the code, and the folder is untouched; runlock.LockHeld when
    another run holds it. Returns the output folder."""
    # A partial parameter from the API keeps the rest; changed settings make the run an experiment.
    cfg, paths = stage_deployment_run("export", cfg, paths, generate=generate, score=score, rank=rank)
    images, scores, rankings = paths.resolve("images"), paths.resolve("scores"), paths.resolve("rankings")
    out = paths.resolve("dataset")
    identity = export_identity(cfg, generate, score, rank, paths)
    with stage_run("export", **identity, out=out, tracking_cfg=tracking) as st:
        if st.up_to_date:
            return finished(st, out)
        table = dataset_table(
            pd.read_parquet(images / "manifest.parquet"),
            pd.read_parquet(scores / "scores.parquet"),
            pd.read_parquet(rankings / "rankings.parquet"),
        )
        # Written beside the folder and moved in whole: a failed export leaves the previous one as it was,
        # and a smaller one leaves no stale file behind.
        work = temp_path(out, unique=False)
        shutil.rmtree(work, ignore_errors=True)
        files = write_dataset(table, str(images), str(work), cfg.rows_per_shard)
        card = dataset_card(
            cfg.name,
            len(table),
            table["prompt_id"].nunique(),
            [g.model_dump() for g in generate.generators],
            [r.model_dump() for r in score.rewards],
            rank.method,
            tracking_mod.data_version(),
            files,
        )
        (work / "README.md").write_text(card)
        publish_dir(work, out, protected=(STAMP,))
        shutil.rmtree(work, ignore_errors=True)
        st.log(n_images=len(table), n_prompts=table["prompt_id"].nunique(), n_files=len(files))
        print(
            f"[export] {len(table)} images of {table['prompt_id'].nunique()} prompts in {len(files)} parquet "
            f"file(s) -> {out} (datasets.load_dataset('{out}'))"
        )
    return str(out)
