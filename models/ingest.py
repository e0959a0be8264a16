"""Preference data made elsewhere, read into synrank's three tables so that `synrank train` runs on it.

Two layouts of a Hugging Face `datasets` parquet folder (or one parquet file) are understood:
- **pairs**, as Pick-a-Pic v2 and the Diffusion-DPO scripts use them: `caption`, two images `jpg_0` and
  `jpg_1` (bytes, or `{"bytes": ...}` as `datasets` stores an Image), `label_0` (1: the first is preferred,
  0: the second, 0.5: a tie), optionally `model_0` / `model_1`. Each row is its own group of K = 2 (a caption
  that comes back in another row is another pair, not a bigger group). The labels are the group's one
  "reward" and go through Algorithm 1 like any reward (models.ranking.rank_groups): the preferred image gets
  phi 1 and tau 1, the other phi 0 and tau 2; a tie gives both phi 0 and tau 1, so training drops that group.
- **ranked groups**, synrank's own export (tasks/export.py): one row per image with `prompt_id`, `prompt`,
  `model`, `seed`, `image`, `phi`, `tau`, `k` and the `score_<reward>` columns. The ranking is kept as it
  was (export -> ingest gives back the same rankings); GPO's advantage is recomputed from the scores.

The output, one folder: prompts.parquet, manifest.parquet with PNG shards, rankings.parquet, the files the
sample, generate and rank stages would have written.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from models.ranking import rank_groups, zscore

PAIR_COLUMNS = {"caption", "jpg_0", "jpg_1", "label_0"}
RANKED_COLUMNS = {"prompt_id", "prompt", "image", "phi", "tau", "k"}


@dataclass
class Preferences:
    """What an ingested dataset becomes: the prompt table, one row per image (with its PNG bytes) and the
    rankings, in the columns of prompts.parquet, manifest.parquet (less shard and member) and rankings.parquet."""

    prompts: pd.DataFrame  # prompt_id, prompt, split, category, source, meta
    images: pd.DataFrame  # image_id, prompt_id, prompt, model, index, seed, sha256, png
    rankings: pd.DataFrame  # image_id, prompt_id, phi, tau, k, advantage, model


def read_table(source: Path, max_rows: int | None = None) -> pd.DataFrame:
    """The parquet file, or every *.parquet under the folder in name order, as one table."""
    files = [source] if source.is_file() else sorted(source.rglob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"ingest.source '{source}': no parquet file there")
    tables = []
    for f in files:
        try:
            tables.append(pd.read_parquet(f))
        except Exception as err:  # noqa: BLE001 - pyarrow's errors: an empty or damaged file
            raise ValueError(f"ingest.source: '{f}' is not a readable parquet file ({err})") from None
    table = pd.concat(tables, ignore_index=True)
    return table.head(max_rows) if max_rows else table


def layout_of(table: pd.DataFrame, source: Path) -> str:
    """'pairs' or 'ranked' by the columns present; ValueError naming both column sets otherwise."""
    if PAIR_COLUMNS <= set(table.columns):
        return "pairs"
    if RANKED_COLUMNS <= set(table.columns):
        return "ranked"
    raise ValueError(
        f"ingest.source '{source}': columns {sorted(table.columns)} are neither pairs "
        f"({', '.join(sorted(PAIR_COLUMNS))}) nor synrank's ranked groups ({', '.join(sorted(RANKED_COLUMNS))})"
    )


def png_of(value: Any) -> bytes:
    """An image cell (bytes, or a `datasets` Image dict) as PNG bytes: shards hold PNGs."""
    raw = value["bytes"] if isinstance(value, dict) else value
    buf = io.BytesIO()
    Image.open(io.BytesIO(raw)).convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def _hash(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:16]


class BadRow(ValueError):
    """A row of the source that cannot be ingested: one line naming the row, the column and why."""


def _label(value: Any, r: int) -> float:
    """label_0 as a float in [0, 1] (1: the first image wins, 0: the second, 0.5: a tie); BadRow otherwise."""
    try:
        label = float(value)
    except (TypeError, ValueError):
        label = float("nan")
    if not 0.0 <= label <= 1.0:  # NaN fails this too
        raise BadRow(f"row {r}, label_0: {value!r} is not a preference (1, 0 or 0.5 for a tie; values in [0, 1])")
    return label


def _png(value: Any, r: int, column: str) -> bytes:
    try:
        return png_of(value)
    except Exception as err:  # noqa: BLE001 - PIL, a missing "bytes" key, a None: all the same to the user
        raise BadRow(f"row {r}, {column}: not an image ({type(err).__name__}: {err})") from None


def _image_rows(table: pd.DataFrame) -> Iterator[dict[str, Any]]:
    """One row per image of a pairs table: the pair is row r's group, its images index 0 and 1."""
    for r, row in enumerate(table.itertuples(index=False)):
        prompt_id = _hash("pair", r, row.caption)
        label_0 = _label(row.label_0, r)
        for i in (0, 1):
            png = _png(getattr(row, f"jpg_{i}"), r, f"jpg_{i}")
            label = label_0 if i == 0 else 1.0 - label_0
            model = str(getattr(row, f"model_{i}", "") or "pair")
            yield {"image_id": f"{prompt_id}-{i}", "prompt_id": prompt_id, "prompt": str(row.caption), "model": model,
                   "index": i, "seed": 0, "png": png, "label": label}  # fmt: skip


def from_pairs(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(images, rankings) of a pairs table: the labels ranked by Algorithm 1 as a single reward."""
    images = pd.DataFrame(list(_image_rows(table)))
    scores = images[["image_id", "label"]].rename(columns={"label": "score"}).assign(reward="label")
    rankings, _ = rank_groups(scores, images.set_index("image_id")["prompt_id"])
    return images.drop(columns="label"), rankings


def from_ranked(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(images, rankings) of synrank's export: its image ids, phi, tau and k as they are."""
    table = table.reset_index(drop=True)
    ids = table["image_id"] if "image_id" in table else [_hash("image", p, i) for i, p in enumerate(table["prompt_id"])]
    images = pd.DataFrame(
        {
            "image_id": list(ids),
            "prompt_id": table["prompt_id"].astype(str),
            "prompt": table["prompt"].astype(str),
            "model": table["model"].astype(str) if "model" in table else "ranked",
            "index": table.groupby("prompt_id").cumcount(),
            "seed": table["seed"].astype(int) if "seed" in table else 0,
            "png": [_png(v, r, "image") for r, v in enumerate(table["image"])],
        }
    )
    rankings = images[["image_id", "prompt_id"]].assign(
        phi=table["phi"].astype(float), tau=table["tau"].astype(int), k=table["k"].astype(int)
    )
    score_columns = [c for c in table.columns if c.startswith("score_")]
    advantage = np.zeros(len(table))
    for _, rows in table.groupby("prompt_id").groups.items():
        if score_columns:
            advantage[list(rows)] = zscore(table.loc[rows, score_columns].to_numpy(dtype=float))
    return images, rankings.assign(advantage=advantage)


def read_preferences(source: Path, max_rows: int | None = None) -> Preferences:
    """The dataset at `source` (see the module docstring) as synrank's tables."""
    table = read_table(source, max_rows)
    if table.empty:
        raise ValueError(f"ingest.source '{source}': no rows")
    images, rankings = (from_pairs if layout_of(table, source) == "pairs" else from_ranked)(table)
    images = images.assign(sha256=[hashlib.sha256(p).hexdigest() for p in images["png"]])
    rankings = rankings.merge(images[["image_id", "model"]], on="image_id")  # as the rank stage writes them
    first = images.drop_duplicates("prompt_id")
    prompts = pd.DataFrame(
        {
            "prompt_id": first["prompt_id"],
            "prompt": first["prompt"],
            "split": "train",
            "category": "",
            "source": str(source),
            "meta": json.dumps({}),
        }
    ).reset_index(drop=True)
    return Preferences(prompts, images.reset_index(drop=True), rankings.reset_index(drop=True))
