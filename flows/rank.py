"""Stage 4: Algorithm 1 over the reward scores -> rankings.parquet (image_id, prompt_id, phi, tau, k)."""

from __future__ import annotations

import pandas as pd
from prefect import flow, task

from models.ranking import algorithm1
from synrank.config import Paths, RankConfig, TrackingConfig
from synrank.stage import stage_run


@task(name="rank-images")
def rank_images(scores_path: str, manifest_path: str, out_path: str) -> dict[str, int]:
    manifest = pd.read_parquet(manifest_path)
    ranked, report = algorithm1(pd.read_parquet(scores_path), manifest.set_index("image_id")["prompt_id"])
    ranked = ranked.merge(manifest[["image_id", "model"]], on="image_id")
    ranked.to_parquet(out_path, index=False)
    return report


@flow(name="rank", log_prints=True)
def rank_flow(cfg: RankConfig = RankConfig(), paths: Paths = Paths(),
              tracking: TrackingConfig = TrackingConfig()) -> str:
    scores, images, out = paths.resolve("scores"), paths.resolve("images"), paths.resolve("rankings")
    with stage_run("rank", cfg, inputs=[scores, images], out=out, tracking_cfg=tracking) as st:
        if st.up_to_date:
            return str(out)
        st.report = rank_images(str(scores / "scores.parquet"), str(images / "manifest.parquet"),
                                str(out / "rankings.parquet"))
        ranked = pd.read_parquet(out / "rankings.parquet")
        # How often each generator wins: the mean phi per model (the paper's model-quality readout).
        for model, phi in ranked.groupby("model")["phi"].mean().items():
            st.log(**{f"phi_{model}": phi})
        st.log(n_ranked=len(ranked), non_finite_left_out=st.report["non_finite_left_out"])
        print(f"ranked {len(ranked)} images of {st.report['prompts']} prompts; "
              f"left out {st.report['non_finite_left_out']} with non-finite rewards")
    return str(out)
