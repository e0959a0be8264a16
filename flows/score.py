"""Stage 3: every generated image under every reward model -> scores.parquet (image_id, reward, score)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from prefect import flow

from synrank import storage
from synrank.config import Paths, ScoreConfig, TrackingConfig
from synrank.device import pick_device
from synrank.stage import stage_run
from synrank.fingerprint import reward_id
from tasks.score import remove_stale_scores, score_reward


@flow(name="score", log_prints=True)
def score_flow(cfg: ScoreConfig, paths: Paths = Paths(), tracking: TrackingConfig = TrackingConfig()) -> str:
    images, out = paths.resolve("images"), paths.resolve("scores")
    weights = {r.name: reward_id(r) for r in cfg.rewards}  # new weights under the same name score again
    with stage_run("score", cfg, inputs=[images], out=out, tracking_cfg=tracking, extra=weights) as st:
        if st.up_to_date:
            return str(out)
        device = pick_device(cfg.device)
        manifest = str(images / "manifest.parquet")
        parts = [pd.read_parquet(score_reward(spec, manifest, str(images), str(out), cfg.batch_size, device))
                 for spec in cfg.rewards]
        scores = pd.concat(parts, ignore_index=True)
        storage.write_bytes(str(out / "scores.parquet"), scores.to_parquet(index=False), out)
        stale = remove_stale_scores(out, pd.read_parquet(manifest), cfg.rewards)
        for name, s in scores.groupby("reward")["score"]:
            st.log(**{f"mean_{name}": float(np.nanmean(s)) if s.notna().any() else float("nan")})
        st.log(n_scores=len(scores), stale_removed=stale)
        if stale:
            print(f"removed {stale} cached score files of earlier images or reward weights")
    return str(out)
