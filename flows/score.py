"""Stage 3: every generated image under every reward model -> scores.parquet (image_id, reward, score)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from prefect import flow

from synrank.config import Paths, ScoreConfig, TrackingConfig
from synrank.device import pick_device
from synrank.stage import stage_run
from tasks.score import score_reward


@flow(name="score", log_prints=True)
def score_flow(cfg: ScoreConfig, paths: Paths = Paths(), tracking: TrackingConfig = TrackingConfig()) -> str:
    images, out = paths.resolve("images"), paths.resolve("scores")
    with stage_run("score", cfg, inputs=[images], out=out, tracking_cfg=tracking) as st:
        if st.up_to_date:
            return str(out)
        device = pick_device(cfg.device)
        manifest = str(images / "manifest.parquet")
        parts = [pd.read_parquet(score_reward(spec, manifest, str(images), str(out), cfg.batch_size, device))
                 for spec in cfg.rewards]
        scores = pd.concat(parts, ignore_index=True)
        scores.to_parquet(out / "scores.parquet", index=False)
        for name, s in scores.groupby("reward")["score"]:
            st.log(**{f"mean_{name}": float(np.nanmean(s)) if s.notna().any() else float("nan")})
        st.log(n_scores=len(scores))
    return str(out)
