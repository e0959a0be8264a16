"""The rank stage's Prefect task: Algorithm 1 over every prompt's images (models.ranking), and the
examples grid the flow logs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw
from prefect import task

from models.ranking import rank_groups, reward_agreement
from synrank.shards import load_images


@task(name="rank-images", task_run_name="rank[{method}]")
def rank_images(
    scores_path: str,
    manifest_path: str,
    out_path: str,
    method: str,
    rewards: list[str] | None = None,
    complete_groups: bool = False,
) -> dict:
    """RankDPO's Algorithm 1 (arXiv 2410.18013; or `method`'s aggregate, models.ranking.AGGREGATORS) over each
    prompt's images: reads scores.parquet (image_id, reward, score) and the manifest, keeps only `rewards` when
    given, writes `out_path` (image_id, prompt_id, phi, tau, k, advantage, model). Returns the report of
    models.ranking.rank_groups (images, non_finite_left_out, unscored_left_out, missing_score,
    prompts_lost_images, prompts, prompts_single_image) plus kendall_tau,
    the mean per-prompt Kendall tau per reward pair. ValueError names a reward in `rewards` that was not
    scored; KeyError for an unknown `method`."""
    manifest = pd.read_parquet(manifest_path)
    prompt_of = manifest.set_index("image_id")["prompt_id"]
    scores = pd.read_parquet(scores_path)
    if rewards:
        known = sorted(scores["reward"].unique())
        if missing := [r for r in rewards if r not in known]:
            raise ValueError(f"rank.rewards: {', '.join(missing)} not scored; scored rewards: {', '.join(known)}")
        scores = scores[scores["reward"].isin(rewards)]
    ranked, report = rank_groups(scores, prompt_of, method, complete_groups)
    ranked = ranked.merge(manifest[["image_id", "model"]], on="image_id")
    ranked.to_parquet(out_path, index=False)
    report["kendall_tau"] = reward_agreement(scores, prompt_of)
    return report


def ranked_grid(ranked: pd.DataFrame, images_root: str, n_prompts: int, cell: int = 96) -> Image.Image:
    """One row per prompt, its images ordered by tau (best first), each labelled with model and phi."""
    prompt_ids = list(dict.fromkeys(ranked["prompt_id"]))[:n_prompts]
    k = int(ranked[ranked["prompt_id"].isin(prompt_ids)].groupby("prompt_id").size().max())
    label_h = 14
    grid = Image.new("RGB", (cell * k, (cell + 2 * label_h) * len(prompt_ids)), "white")
    draw = ImageDraw.Draw(grid)
    for r, pid in enumerate(prompt_ids):
        rows = ranked[ranked["prompt_id"] == pid].sort_values(["tau", "image_id"])
        y = r * (cell + 2 * label_h)
        draw.text((2, y + 1), str(rows["prompt"].iloc[0])[:70], fill="black")
        ims = load_images(Path(images_root), zip(rows["shard"], rows["member"]))
        for c, (im, (_, row)) in enumerate(zip(ims, rows.iterrows())):
            grid.paste(im.resize((cell, cell), Image.NEAREST), (c * cell, y + label_h))
            draw.text((c * cell + 2, y + label_h + cell + 1), f"{row['model']} {row['phi']:.2f}", fill="black")
    return grid
