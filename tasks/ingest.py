"""The ingest stage's task: a preference dataset made elsewhere (models.ingest) written as synrank's files."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from models.ingest import read_preferences
from synrank.shards import write_shard


@task(name="ingest-dataset")
def ingest_dataset(source: str, out_dir: str, max_rows: int | None, shard_size: int) -> dict[str, int]:
    """Read the dataset at `source` and write out_dir/prompts.parquet, manifest.parquet with its PNG shards
    (shards/00000.tar, `shard_size` images each) and rankings.parquet. Returns counts for the stage report."""
    prefs = read_preferences(Path(source), max_rows)
    out = Path(out_dir)
    images = prefs.images.assign(shard="", member=prefs.images["image_id"] + ".png")
    for start in range(0, len(images), shard_size):
        part = images.iloc[start : start + shard_size]
        location = f"shards/{start // shard_size:05d}.tar"
        write_shard(location, zip(part["member"], part["png"]), out)
        images.loc[part.index, "shard"] = location
    prefs.prompts.to_parquet(out / "prompts.parquet", index=False)
    images.drop(columns="png").to_parquet(out / "manifest.parquet", index=False)
    prefs.rankings.to_parquet(out / "rankings.parquet", index=False)
    tied = prefs.rankings.groupby("prompt_id")["phi"].agg(lambda p: p.nunique() == 1).sum()
    return {"images": len(images), "prompts": len(prefs.prompts), "groups_all_tied": int(tied)}
