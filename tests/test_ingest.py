"""`synrank ingest`: Pick-a-Pic-style pairs (one a tie) become prompts, shards and rankings by hand-computed
rules, `synrank train` runs on them, and a bad source is refused before any work. The export -> ingest round
trip is in tests/test_pipeline.py (it needs a pipeline's export)."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from models.validate import load_checked_config
from synrank.config import Config, ConfigError, validate
from synrank.shards import load_images
from tests.fixtures.tiny_models import build_tiny_sd

LABELS = [1.0, 0.0, 1.0, 0.5, 0.0, 1.0]  # label_0: 1 = the first image wins, 0 = the second, 0.5 = a tie


def jpeg(color: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 32), color).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture
def pairs(tmp_path: Path) -> Path:
    """A Pick-a-Pic-style parquet folder: 6 pairs, the 4th a tie, the 1st caption again in the 5th."""
    captions = ["a red cube", "two dogs", "a blue star", "a cat", "a red cube", "a green ring"]
    table = pd.DataFrame(
        {
            "caption": captions,
            "jpg_0": [{"bytes": jpeg("red")} for _ in captions],  # as `datasets` stores an Image
            "jpg_1": [jpeg("blue") for _ in captions],  # or plain bytes, as pickapic_v2's parquet has them
            "label_0": LABELS,
        }
    )
    (tmp_path / "pairs" / "data").mkdir(parents=True)
    table.iloc[:4].to_parquet(tmp_path / "pairs" / "data" / "train-0.parquet")
    table.iloc[4:].to_parquet(tmp_path / "pairs" / "data" / "train-1.parquet")
    return tmp_path / "pairs"


def config(root: Path, source: Path) -> Config:
    out = str(root / "ingested")
    return validate(
        {
            "paths": {"ingested": out, "prompts": out, "images": out, "rankings": out, "model": str(root / "model")},
            "ingest": {"source": str(source), "shard_size": 5},
            "generate": {
                "generators": [{"name": "gen", "path": str(root / "gen"), "steps": 2, "height": 32, "width": 32}]
            },
            "train": {"steps": 2, "prompts_per_step": 2, "lora_rank": 2, "log_every": 1},
            "tracking": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "experiment": "ingest"},
        }
    )


@pytest.mark.slow
def test_pairs_become_rankings_and_train_runs_on_them(pairs: Path, tmp_path: Path) -> None:
    from flows.ingest import ingest_flow
    from flows.train import train_flow
    from synrank.config import flow_parameters

    cfg = config(tmp_path, pairs)
    out = Path(ingest_flow(**flow_parameters("ingest", cfg)))
    rankings = pd.read_parquet(out / "rankings.parquet")
    manifest = pd.read_parquet(out / "manifest.parquet").set_index("image_id")
    prompts = pd.read_parquet(out / "prompts.parquet")
    # Each row is its own K = 2 group, the repeated caption too; phi and tau by hand from label_0.
    assert len(prompts) == 6 and prompts["prompt"].tolist().count("a red cube") == 2
    expected = [
        (1.0, 0.0, 1, 2),
        (0.0, 1.0, 2, 1),
        (1.0, 0.0, 1, 2),
        (0.0, 0.0, 1, 1),
        (0.0, 1.0, 2, 1),
        (1.0, 0.0, 1, 2),
    ]
    ranked = rankings.set_index("image_id")
    got = [tuple(ranked.loc[f"{p}-{i}", c] for c in ("phi", "tau") for i in (0, 1)) for p in prompts["prompt_id"]]
    assert got == expected and set(rankings["k"]) == {2}
    # The images are the dataset's, as PNGs in shards of 5: red first, blue second.
    first = manifest[manifest["index"] == 0].iloc[0]
    image = load_images(out, [(first["shard"], first["member"])])[0]
    assert image.size == (40, 32) and image.getpixel((5, 5))[0] > 200
    assert sorted(manifest["shard"].unique()) == ["shards/00000.tar", "shards/00001.tar", "shards/00002.tar"]

    build_tiny_sd(tmp_path / "gen", seed=1, channels=(16, 32))
    model = Path(train_flow(**flow_parameters("train", cfg)))
    assert (model / "tuned.json").is_file()
    stamp = pd.read_json(model / "_stage.json", typ="series")
    assert stamp["metrics"]["final_groups_all_tied"] == 1  # the tie, dropped; the 5 others trained on


def test_a_bad_source_is_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^bad value for 'ingest.source': '' is empty; name a parquet file"):
        load_checked_config(overrides=[], command="ingest")
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=r"^bad value for 'ingest.source': '.*nope' does not exist"):
        load_checked_config(overrides=[f"ingest.source={missing}"], command="ingest")
    (tmp_path / "other.parquet").parent.mkdir(exist_ok=True)
    pd.DataFrame({"text": ["x"]}).to_parquet(tmp_path / "other.parquet")
    from models.ingest import read_preferences

    with pytest.raises(ValueError, match=r"columns \['text'\] are neither pairs \(caption, jpg_0, jpg_1, label_0\)"):
        read_preferences(tmp_path / "other.parquet")


def test_a_bad_label_an_empty_source_or_a_broken_image_is_refused_naming_the_row(tmp_path: Path) -> None:
    from models.ingest import BadRow, read_preferences

    good = {"caption": ["a cube", "a star"], "jpg_0": [jpeg("red")] * 2, "jpg_1": [jpeg("blue")] * 2}
    for label, says in ((2.0, "2.0"), (float("nan"), "nan")):
        pd.DataFrame({**good, "label_0": [1.0, label]}).to_parquet(tmp_path / "bad.parquet")
        with pytest.raises(BadRow, match=rf"^row 1, label_0: {says} is not a preference \(1, 0 or 0.5"):
            read_preferences(tmp_path / "bad.parquet")
    broken = {**good, "jpg_1": [jpeg("blue"), b"not an image"], "label_0": [1.0, 0.0]}
    pd.DataFrame(broken).to_parquet(tmp_path / "broken.parquet")
    with pytest.raises(BadRow, match=r"^row 1, jpg_1: not an image \(UnidentifiedImageError"):
        read_preferences(tmp_path / "broken.parquet")
    pd.DataFrame({k: [] for k in (*good, "label_0")}).to_parquet(tmp_path / "empty.parquet")
    with pytest.raises(ValueError, match=r"empty.parquet': no rows$"):
        read_preferences(tmp_path / "empty.parquet")
    (tmp_path / "zero.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match=r"^ingest.source: '.*zero.parquet' is not a readable parquet file"):
        read_preferences(tmp_path / "zero.parquet")
