"""Prefect tasks of the sample stage: read prompt corpora, write the prompt table.

They take and return paths and plain data, so Prefect can show their inputs and nothing heavy is
serialised between tasks. Caching is off: the stage stamp (synrank.stage) already decides what to skip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE

from synrank import atomic
from synrank.config import PromptSource
from synrank.prompts import DEFAULT_MAX_PROMPT_CHARS, prompt_id, read_sources

TABLE = "prompts.parquet"
# An explicit schema keeps the column types fixed even when, say, every category is null.
SCHEMA = pa.schema([(name, pa.string()) for name in ("prompt_id", "prompt", "split", "category", "source", "meta")])


@task(cache_policy=NO_CACHE)
def read_prompt_sources(
    sources: list[PromptSource],
    max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows and a report with a count for every reason in SKIP_REASONS (longer prompts are too_long)."""
    result = read_sources(sources, max_prompt_chars=max_prompt_chars)
    return result.rows, result.report


@task(cache_policy=NO_CACHE)
def write_prompt_table(rows: list[dict[str, Any]], splits: list[str], out_dir: str) -> str:
    """Write `prompts.parquet` into out_dir atomically; returns its path."""
    if len(rows) != len(splits):
        raise ValueError(f"{len(rows)} rows but {len(splits)} split labels")
    df = pd.DataFrame(
        {
            "prompt_id": [prompt_id(r["prompt"]) for r in rows],
            "prompt": [r["prompt"] for r in rows],
            "split": splits,
            "category": [r["category"] for r in rows],
            "source": [r["source"] for r in rows],
            "meta": [r["meta"] for r in rows],
        }
    )
    out = Path(out_dir) / TABLE
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic.writing(out) as tmp:  # readers never see half a file
        pq.write_table(pa.Table.from_pandas(df, schema=SCHEMA, preserve_index=False), tmp)
    return str(out)
