"""Stage 4: per-prompt rankings from several reward models -> rankings.parquet (image_id, prompt_id,
phi, tau, k, model), with how often each generator wins and how much the rewards agree."""

from __future__ import annotations

import mlflow
import pandas as pd
from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from synrank.config import Paths, RankConfig, TrackingConfig
from synrank.deployment_params import stage_deployment_run
from synrank.stage import finished, stage_run
from synrank.stamp import rank_identity
from tasks.rank import rank_images, ranked_grid


@flow(name="rank", log_prints=True)
def rank_flow(
    cfg: RankConfig = RankConfig(), paths: Paths = Paths(), tracking: TrackingConfig = TrackingConfig()
) -> str:
    """Rank stage: RankDPO's Algorithm 1 (arXiv 2410.18013; or `cfg.method`) over each prompt's rewards, from
    `paths.scores`/scores.parquet and `paths.images`/manifest.parquet to `paths.rankings`/rankings.parquet
    (image_id, prompt_id, phi, tau, k, advantage, model) and, with `cfg.examples`, ranked_examples.png. Logs
    mean phi per generator, non-finite images left out, reward-pair Kendall tau. Skipped when the stamp
    (synrank.stage) matches this config, the inputs' content and the code, and the folder is untouched.
    ValueError when `cfg.rewards` names an unscored reward; runlock.LockHeld when the folder is held."""
    # A partial parameter from the API keeps the rest; changed settings make the run an experiment.
    cfg, paths = stage_deployment_run("rank", cfg, paths)
    scores, images, out = paths.resolve("scores"), paths.resolve("images"), paths.resolve("rankings")
    with stage_run("rank", **rank_identity(cfg, paths), out=out, tracking_cfg=tracking) as st:
        if st.up_to_date:
            return finished(st, out)
        st.report = rank_images(
            str(scores / "scores.parquet"),
            str(images / "manifest.parquet"),
            str(out / "rankings.parquet"),
            cfg.method,
            cfg.rewards,
            cfg.complete_groups,
        )
        ranked = pd.read_parquet(out / "rankings.parquet")
        # How often each generator wins: the mean phi per model (the paper's model-quality readout).
        wins = ranked.groupby("model")["phi"].mean()
        counted = ("non_finite_left_out", "unscored_left_out", "prompts_lost_images")
        st.log(**{f"phi_{m}": v for m, v in wins.items()}, n_ranked=len(ranked), **{k: st.report[k] for k in counted})
        st.log(**{f"kendall_tau/{k}": v for k, v in st.report["kendall_tau"].items()})
        create_table_artifact(
            [{"model": m, "mean_phi": round(float(v), 4)} for m, v in wins.items()],
            key="generator-wins",
            description="mean phi per generator (how often it wins)",
        )
        if cfg.examples:
            manifest = pd.read_parquet(images / "manifest.parquet")
            grid = ranked_grid(
                ranked.merge(manifest[["image_id", "prompt", "shard", "member"]], on="image_id"),
                str(images),
                cfg.examples,
            )
            grid.save(out / "ranked_examples.png")
            mlflow.log_image(grid, "ranked_examples.png")
            create_markdown_artifact(
                f"# Ranked examples\n\nBest (tau = 1) on the left, {cfg.examples} prompts: "
                f"`{out / 'ranked_examples.png'}`, also `ranked_examples.png` in MLflow run "
                + (f"[{st.run_id}]({st.run_url})" if st.run_url else f"`{st.run_id}` ({mlflow.get_tracking_uri()})")
                + ".\n",
                key="ranked-examples",
            )
        print(
            f"ranked {len(ranked)} images of {st.report['prompts']} prompts ({cfg.method}); left out "
            f"{st.report['non_finite_left_out']} with non-finite rewards and {st.report['unscored_left_out']} "
            f"without a score ({_missing(st.report)}); mean phi per model: "
            + ", ".join(f"{m}={v:.3f}" for m, v in wins.items())
        )
    return str(out)


def _missing(report: dict) -> str:
    """'clip: 1; prompts that lost images: p1' or 'none'."""
    if not report["missing_score"] and not report["prompts_lost_images"]:
        return "none"
    per_reward = ", ".join(f"{r}: {n}" for r, n in report["missing_score"].items())
    prompts = ", ".join(report["prompts_lost_images_first"])
    return f"missing per reward {per_reward or 'none'}; prompts that lost images: {prompts}"
