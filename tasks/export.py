"""The ranked dataset as a Hugging Face `datasets` folder: Syn-Pic's content (Karthik et al. 2024, Sec. 3)
with one row per image.

    outputs/dataset/
        README.md                      dataset card: generators, rewards, aggregation, DVC data version
        data/train-00000-of-00003.parquet ...

Columns: prompt_id, prompt, model, seed, image (datasets.Image: PNG bytes), score_<reward> per reward
model, phi (the image's averaged pairwise win rate, Algorithm 1), tau (its rank in the prompt's group,
1 = best), k (the group's size). `datasets.load_dataset("outputs/dataset")` reads it offline; the image
column decodes to PIL images. Rows keep the rankings' order, a prompt's group together."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task

from synrank.shards import load_members

RANK_COLUMNS = ("phi", "tau", "k")


def dataset_table(manifest: pd.DataFrame, scores: pd.DataFrame, rankings: pd.DataFrame) -> pd.DataFrame:
    """One row per ranked image: the manifest's prompt, model, seed, shard and member, each reward's score as
    score_<reward>, and the rankings' phi, tau, k. Images without a ranking (non-finite rewards) are left
    out, as the rank stage left them out."""
    wide = scores.pivot(index="image_id", columns="reward", values="score").add_prefix("score_")
    wide.columns.name = None
    cols = ["image_id", "prompt_id", "prompt", "model", "seed", "shard", "member"]
    table = (
        rankings[["image_id", *RANK_COLUMNS]]
        .merge(manifest[cols], on="image_id", how="left")
        .merge(wide, left_on="image_id", right_index=True, how="left")
    )
    return table[["image_id", *cols[1:], *wide.columns, *RANK_COLUMNS]]


# Not log_prints: datasets' fingerprinting (dill.detect.nestedglobals) reads a function's globals by swapping
# sys.stdout for a buffer around dis.dis, and Prefect's print capture would turn that disassembly into
# dozens of log lines in the flow run (and leave dill's buffer empty).
@task(name="write-dataset", log_prints=False)
def write_dataset(table: pd.DataFrame, images_root: str, out_dir: str, rows_per_shard: int) -> list[str]:
    """The table's rows, image bytes read from the generate stage's shards, as parquet files under
    out_dir/data, `rows_per_shard` rows each, with the datasets features (image = datasets.Image) in the
    files' schema; returns their names. out_dir is a work folder: the flow moves it into place whole."""
    from datasets import Dataset, Features, Image, Value

    n = max(1, -(-len(table) // rows_per_shard))
    data = Path(out_dir) / "data"
    data.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        part = table.iloc[i * rows_per_shard : (i + 1) * rows_per_shard]
        pngs = load_members(Path(images_root), zip(part["shard"], part["member"]))
        frame = part.drop(columns=["shard", "member"]).assign(image=[{"bytes": b, "path": None} for b in pngs])
        features = Features({c: _feature(c, frame[c], Value, Image) for c in frame.columns})
        name = f"train-{i:05d}-of-{n:05d}.parquet"
        Dataset.from_pandas(frame, features=features, preserve_index=False).to_parquet(str(data / name))
        names.append(name)
    return names


def _feature(column: str, values: pd.Series, value: Any, image: Any) -> Any:
    if column == "image":
        return image()
    if column in ("seed", "tau", "k"):
        return value("int64")
    return value("float64") if pd.api.types.is_float_dtype(values) else value("string")


def dataset_card(
    name: str,
    n_images: int,
    n_prompts: int,
    generators: list[dict[str, Any]],
    rewards: list[dict[str, Any]],
    method: str,
    data_version: str,
    files: list[str],
) -> str:
    """README.md of the dataset folder: the YAML header `datasets` reads (its data files), then what the
    data is, how it was made and how to load it."""
    gen_lines = "\n".join(
        f"- `{g['name']}`: `{g['path']}`, {g['steps']} steps, guidance {g['guidance']}, {g['height']}x{g['width']}"
        for g in generators
    )
    reward_lines = "\n".join(f"- `{r['name']}`: {r['kind']} (`{r['arch']}`)" for r in rewards)
    return f"""---
pretty_name: {name}
configs:
  - config_name: default
    data_files:
      - split: train
        path: data/*.parquet
---

# {name}

A ranked preference dataset in the layout of Syn-Pic (Karthik et al. 2024, "Scalable Ranked Preference
Optimization for Text-to-Image Generation", arXiv 2410.18013): every prompt rendered by several
text-to-image models, every image scored by several reward models, and the scores turned into one ranking
per prompt. Made by synrank (`synrank export`).

- {n_images} images of {n_prompts} prompts in {len(files)} parquet file(s).
- DVC data version (data.dvc md5): `{data_version}`.
- Aggregation: `{method}` (algorithm1 = each image's pairwise win rate against the prompt's other images,
  averaged over the reward models: phi; tau = its rank, 1 = best; k = the group's size).

## Generators

{gen_lines}

## Reward models (columns `score_<name>`)

{reward_lines}

## Load

```python
from datasets import load_dataset
ds = load_dataset("path/to/this/folder", split="train")  # offline; ds[0]["image"] is a PIL image
```
"""
