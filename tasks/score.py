"""Scoring tasks: one reward model at a time over all shards, scores cached per (image, reward).

Each reward writes `<reward>.parquet` tagged with its spec; a later run with more rewards scores only
the new ones, and a changed spec or image set re-scores that reward alone."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import task
from tqdm import tqdm

from synrank.config import RewardSpec
from synrank.shards import load_images


def _key(spec: RewardSpec, manifest: pd.DataFrame) -> str:
    h = hashlib.sha256(json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode())
    h.update("\n".join(manifest["image_id"]).encode())
    return h.hexdigest()


@task(name="score-reward")
def score_reward(spec: RewardSpec, manifest_path: str, images_root: str, out_dir: str,
                 batch_size: int, device: str = "cpu") -> str:
    from models.rewards import load_reward

    manifest = pd.read_parquet(manifest_path)
    out = Path(out_dir) / f"{spec.name}.parquet"
    key = _key(spec, manifest)
    if out.exists() and pd.read_parquet(out).attrs.get("key") == key:
        print(f"reward {spec.name}: cached")
        return str(out)
    reward = load_reward(spec, device)
    scores = np.empty(len(manifest))
    for start in tqdm(range(0, len(manifest), batch_size), desc=f"score {spec.name}", unit="batch"):
        batch = manifest.iloc[start:start + batch_size]
        images = load_images(Path(images_root), zip(batch["shard"], batch["member"]))
        scores[start:start + len(batch)] = reward.score(images, list(batch["prompt"]))
    table = pd.DataFrame({"image_id": manifest["image_id"], "reward": spec.name, "score": scores})
    table.attrs["key"] = key
    tmp = out.with_name(f".{out.name}.tmp")
    table.to_parquet(tmp, index=False)
    tmp.replace(out)
    return str(out)
