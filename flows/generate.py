"""Stage 2: every train prompt through every generator, images in shards plus a parquet manifest."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import flow

from synrank.cluster_config import ClusterConfig
from synrank.config import GenerateConfig, Paths, TrackingConfig
from synrank.deployment_params import stage_deployment_run
from synrank.stage import Stage, finished, stage_run
from synrank.stamp import generate_identity
from tasks.generate import generate_all, truncation_report


@flow(name="generate", log_prints=True)
def generate_flow(
    cfg: GenerateConfig,
    cluster: ClusterConfig = ClusterConfig(),
    paths: Paths = Paths(),
    tracking: TrackingConfig = TrackingConfig(),
) -> str:
    """Stage 2: every train prompt (the sample stage's prompts.parquet) through every generator,
    images_per_prompt seeds each; returns the images folder, which holds the tar shards (with each image's
    final latents where the backend gives them) and manifest.parquet. Logs the counts and how many prompts
    each model's text window cut (truncation_report). Skipped when the stage stamp is up to date."""
    # A partial parameter from the API keeps the rest; changed settings make the run an experiment.
    cfg, paths = stage_deployment_run("generate", cfg, paths)
    prompts_dir, out = paths.resolve("prompts"), paths.resolve("images")
    with stage_run("generate", **generate_identity(cfg, paths), out=out, tracking_cfg=tracking) as st:
        if st.up_to_date:
            return finished(st, out)
        prompts = pd.read_parquet(prompts_dir / "prompts.parquet")
        prompts = prompts[prompts["split"] == "train"]
        made = generate_all(
            cfg.generators,
            prompts,
            out,
            cfg.images_per_prompt,
            cfg.seed,
            cfg.shard_size,
            cfg.batch_size,
            cfg.device,
            cfg.store,
            fan=cfg,
            cluster=cluster,
        )
        manifest, stale = made.manifest, made.stale_removed
        st.report["shards_repaired"] = made.shards_repaired  # damaged since the last run, rendered again
        # Images stored with their final latents (the train stage uses those instead of encoding the PNG).
        with_latents = int((manifest["latent_member"].fillna("") != "").sum())
        st.log(
            n_images=len(manifest),
            n_prompts=manifest["prompt_id"].nunique(),
            n_models=len(cfg.generators),
            stale_removed=stale,
            shards_repaired=len(made.shards_repaired),
            n_latents=with_latents,
        )
        _log_prompt_fit(st, out)
        removed = (
            f"; removed {stale} files of earlier runs that no longer match the prompts, settings or weights"
            if stale
            else ""
        )
        print(
            f"generated {len(manifest)} images ({with_latents} with their latents) for "
            f"{manifest['prompt_id'].nunique()} prompts x {len(cfg.generators)} models{removed}"
        )
    return str(out)


def _log_prompt_fit(st: Stage, out: Path) -> None:
    """How many prompts each model's text window cut, overall and per text encoder: in the report
    (`prompt_fit`), as metrics (`prompts_truncated/<model>[/<encoder>]`) and printed where any was cut."""
    st.report["prompt_fit"] = fits = truncation_report(out)
    st.log(**{f"prompts_truncated/{m}": r["n_truncated"] for m, r in fits.items()})
    st.log(
        **{
            f"prompts_truncated/{m}/{e}": c["n_truncated"]
            for m, r in fits.items()
            for e, c in r.get("encoders", {}).items()
        }
    )
    for m, r in fits.items():
        if r["n_truncated"]:
            print(
                f"{m}: {r['n_truncated']} of {r['n_prompts']} prompts were longer than its {r['max_tokens']}-token "
                f"text window and cut at the last whole word that fits ({r['tokens_dropped']} tokens dropped)"
            )
        for e, c in r.get("encoders", {}).items():
            if c["max_tokens"] < r["max_tokens"] and c["n_truncated"]:  # the pipeline cuts these itself
                print(
                    f"{m}: its {e} encoder reads {c['max_tokens']} tokens and still cuts {c['n_truncated']} of "
                    f"the prompts it is given ({c['tokens_dropped']} tokens)"
                )
