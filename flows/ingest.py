"""`synrank ingest`: preference data made elsewhere (Pick-a-Pic-style pairs, or synrank's own export) as the
prompts, images and rankings `synrank train` reads. Not part of the pipeline: it stands in for sample,
generate, score and rank. Train on it with paths.prompts, paths.images and paths.rankings all set to
paths.ingested (README "Existing preference data")."""

from __future__ import annotations

import shutil

from prefect import flow

from synrank.atomic import publish_dir, temp_path
from synrank.config import IngestConfig, Paths, TrackingConfig
from synrank.deployment_params import stage_deployment_run
from synrank.stage import STAMP, finished, stage_run
from synrank.stamp import ingest_identity
from tasks.ingest import ingest_dataset


@flow(name="ingest", log_prints=True)
def ingest_flow(cfg: IngestConfig, paths: Paths = Paths(), tracking: TrackingConfig = TrackingConfig()) -> str:
    """Write paths.ingested from the dataset at `cfg.source` (models.ingest): prompts.parquet, manifest.parquet
    with PNG shards, rankings.parquet; published whole, so a failed run leaves the previous folder. Skipped
    when the stamp (synrank.stage) matches these settings, the source's content and the code. Returns the
    output folder."""
    # A partial parameter from the API keeps the rest; changed settings make the run an experiment.
    cfg, paths = stage_deployment_run("ingest", cfg, paths)
    out = paths.resolve("ingested")
    with stage_run("ingest", **ingest_identity(cfg, paths), out=out, tracking_cfg=tracking) as st:
        if st.up_to_date:
            return finished(st, out)
        work = temp_path(out, unique=False)
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        report = ingest_dataset(str(cfg.resolved_source()), str(work), cfg.max_rows, cfg.shard_size)
        publish_dir(work, out, protected=(STAMP,))
        shutil.rmtree(work, ignore_errors=True)
        st.log(**report)
        st.report = report
        print(
            f"[ingest] {report['images']} images of {report['prompts']} prompts ({report['groups_all_tied']} "
            f"all tied) -> {out}; train on it with paths.prompts, paths.images and paths.rankings = {out}"
        )
    return str(out)
