"""Stage 3: every generated image under every reward model -> scores.parquet (image_id, reward, score)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from prefect import flow

from synrank import storage
from synrank.cluster_config import ClusterConfig
from synrank.config import Paths, ScoreConfig, TrackingConfig
from synrank.deployment_params import stage_deployment_run
from synrank.stage import Stage, finished, stage_run
from synrank.stamp import score_identity
from tasks.score import remove_stale_scores, score_all


@flow(name="score", log_prints=True)
def score_flow(
    cfg: ScoreConfig,
    cluster: ClusterConfig = ClusterConfig(),
    paths: Paths = Paths(),
    tracking: TrackingConfig = TrackingConfig(),
) -> str:
    """Score stage: every image of `paths.images` (manifest.parquet and its shards) under every reward model
    of `cfg.rewards`, one Prefect task per reward x image shards on `cfg`'s engine (tasks.score). Writes
    `paths.scores`/scores.parquet (image_id, reward, score), a <reward>.parquet per reward and a cache/ per
    (reward, shard), so a killed run resumes shard by shard; logs each reward's mean score and how many
    prompts its text encoder cut, and removes cache files of earlier images or weights.

    Skipped when the stamp (synrank.stage) matches this config, the images' content, each reward's weights
    and the code, and the folder is untouched. Raises synrank.fanout.ShardTasksFailed after writing every
    shard that did not fail, runlock.LockHeld when another run holds the folder. Returns the output folder."""
    # A partial parameter from the API keeps the rest; changed settings make the run an experiment.
    cfg, paths = stage_deployment_run("score", cfg, paths)
    images, out = paths.resolve("images"), paths.resolve("scores")
    with stage_run("score", **score_identity(cfg, paths), out=out, tracking_cfg=tracking) as st:
        if st.up_to_date:
            return finished(st, out)
        manifest = str(images / "manifest.parquet")
        scores, cuts = score_all(
            cfg.rewards, manifest, str(images), str(out), cfg.batch_size, cfg.device, fan=cfg, cluster=cluster
        )
        storage.write_bytes(str(out / "scores.parquet"), scores.to_parquet(index=False), out)
        stale = remove_stale_scores(out, pd.read_parquet(manifest), cfg.rewards)
        report_cuts(st, cuts)
        for name, s in scores.groupby("reward")["score"]:
            st.log(**{f"mean_{name}": float(np.nanmean(s)) if s.notna().any() else float("nan")})
        st.log(n_scores=len(scores), stale_removed=stale)
        if stale:
            print(f"removed {stale} cached score files of earlier images or reward weights")
    return str(out)


def report_cuts(st: Stage, cuts: dict[str, dict]) -> None:
    """Prompts each reward cut, in the stage's report and metrics (cut_prompts_<reward>, cut_tokens_<reward>)
    and, when any, one printed line: a cut prompt is scored without its end."""
    st.report["prompt_cuts"] = cuts
    for name, c in cuts.items():
        st.log(**{f"cut_prompts_{name}": c["n_cut"], f"cut_tokens_{name}": c["tokens_cut"]})
    if cut := {n: c for n, c in cuts.items() if c["n_cut"]}:
        print(
            "prompts cut by the rewards' text encoders (scored without their end): "
            + "; ".join(
                f"{n}: {c['n_cut']} of {c['n_prompts']} over {c['max_tokens']} tokens, {c['tokens_cut']} tokens cut"
                for n, c in cut.items()
            )
        )
