"""The sample stage: prompt readers on real benchmark files and on hand-made messy files, the split,
and the flow end to end (parquet table, stamp, skip on a second run)."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from synrank import stamp as stage_stamp
from synrank.config import ROOT, Paths, PromptSource, SampleConfig, TrackingConfig
from synrank.fingerprint import STAMP
from synrank.prompt_formats import detect_format
from synrank.prompts import prompt_id, read_sources, split

BENCH = ROOT.parent / "shared" / "benchmarks"
GENEVAL = BENCH / "geneval" / "evaluation_metadata.jsonl"
PARTI = BENCH / "partiprompts" / "PartiPrompts.tsv"
needs_bench = pytest.mark.skipif(not BENCH.is_dir(), reason=f"benchmark prompt files not found at {BENCH}")

# Text: good "a cat", empty, good "a dog" (padded), blank, dup "a cat", Latin-1 line, good with CRLF, dup.
TEXT = b"a cat\n\n  a dog  \n   \na cat\ncaf\xe9\nthe caf\xc3\xa9\r\na dog\n"
JSONL = (
    b"\n".join(
        [
            b'{"prompt": "a red car", "category": "vehicles", "id": 7}',  # good, category from its field
            b"",  # empty
            b'{"prompt": "a cat"}',  # duplicate of the text file's first prompt
            b'{"prompt": "a bird"',  # malformed: cut-off JSON
            b'{"text": "no prompt field"}',  # malformed: no prompt
            b"[1, 2]",  # malformed: not an object
            b'{"prompt": "   "}',  # empty prompt
            b'{"prompt": "caf\xe9"}',  # bad UTF-8
            b'{"prompt": " a blue boat "}',  # good, stripped
            b'{"prompt": 5}',  # malformed: prompt not a string
        ]
    )
    + b"\n"
)
GOOD_ORDER = ["a cat", "a dog", "the café", "a red car", "a blue boat"]


@pytest.fixture
def messy(tmp_path: Path) -> list[PromptSource]:
    (tmp_path / "p.txt").write_bytes(TEXT)
    (tmp_path / "p.jsonl").write_bytes(JSONL)
    return [PromptSource(path=str(tmp_path / "p.txt")), PromptSource(path=str(tmp_path / "p.jsonl"))]


@needs_bench
def test_geneval_file() -> None:
    objs = [json.loads(line) for line in GENEVAL.read_text().splitlines() if line.strip()]
    res = read_sources([PromptSource(path=str(GENEVAL))])
    assert len(res.rows) == 553 == len(objs)
    assert res.report["sources"][str(GENEVAL)]["format"] == "geneval"
    assert Counter(r["category"] for r in res.rows) == Counter(o["tag"] for o in objs)
    assert json.loads(res.rows[0]["meta"]) == objs[0]  # the whole object is kept
    assert res.report["good"] == 553 and res.report["malformed"] == res.report["duplicate"] == 0


@needs_bench
def test_partiprompts_file() -> None:
    with PARTI.open(newline="", encoding="utf-8") as f:
        table = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    header, body = table[0], table[1:]
    assert header == ["Prompt", "Category", "Challenge", "Note"] and len(body) == 1632
    unique = {r[0].strip() for r in body}
    res = read_sources([PromptSource(path=str(PARTI), format="auto")])
    rep = res.report
    assert rep["sources"][str(PARTI)]["format"] == "partiprompts"
    assert rep["good"] + rep["duplicate"] == 1632  # every row read, none malformed or empty
    assert len(res.rows) == len(unique) and rep["duplicate"] == 1632 - len(unique)
    assert {r["category"] for r in res.rows} == {r[1] for r in body}
    first = res.rows[0]
    assert (first["prompt"], first["category"]) == (body[0][0], body[0][1])
    assert json.loads(first["meta"]) == {"Challenge": body[0][2], "Note": body[0][3]}


def test_messy_files_counts_and_order(messy: list[PromptSource]) -> None:
    res = read_sources(messy)
    assert [r["prompt"] for r in res.rows] == GOOD_ORDER
    per = res.report["sources"]
    text, jsonl = per[messy[0].path], per[messy[1].path]
    assert text == {
        "path": messy[0].path,
        "format": "text",
        "good": 3,
        "empty": 2,
        "duplicate": 2,
        "bad_utf8": 1,
        "malformed": 0,
        "bad_unicode": 0,
        "too_long": 0,
        "other_category": 0,
    }
    assert jsonl == {
        "path": messy[1].path,
        "format": "jsonl",
        "good": 2,
        "empty": 2,
        "duplicate": 1,
        "bad_utf8": 1,
        "malformed": 4,
        "bad_unicode": 0,
        "too_long": 0,
        "other_category": 0,
    }
    assert {k: res.report[k] for k in ("good", "empty", "duplicate", "bad_utf8", "malformed")} == {
        "good": 5,
        "empty": 4,
        "duplicate": 3,
        "bad_utf8": 2,
        "malformed": 4,
    }
    car = res.rows[3]
    assert car["category"] == "vehicles" and json.loads(car["meta"]) == {"category": "vehicles", "id": 7}
    assert res.rows[0]["category"] is None and res.rows[0]["source"] == messy[0].path


def test_limit_stops_after_that_many_good_prompts(messy: list[PromptSource]) -> None:
    res = read_sources([PromptSource(path=messy[0].path, limit=2)])
    assert [r["prompt"] for r in res.rows] == ["a cat", "a dog"]
    assert res.report["good"] == 2 and res.report["empty"] == 1


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_sources([PromptSource(path=str(missing))])


def test_auto_format_detection(tmp_path: Path) -> None:
    gen = tmp_path / "mine.jsonl"
    gen.write_text('{"tag": "counting", "include": [{"class": "cat", "count": 2}], "prompt": "two cats"}\n')
    plain = tmp_path / "plain.jsonl"
    plain.write_text('{"prompt": "x"}\n')
    assert detect_format(gen) == "geneval" and detect_format(plain) == "jsonl"
    assert detect_format(tmp_path / "a.tsv") == "partiprompts" and detect_format(tmp_path / "a.md") == "text"
    res = read_sources([PromptSource(path=str(gen))])
    assert res.rows[0]["category"] == "counting"


def test_prompt_id_is_sha1_prefix() -> None:
    assert prompt_id("a café") == hashlib.sha1("a café".encode()).hexdigest()[:12]
    assert len(prompt_id("x")) == 12 and prompt_id("x") == prompt_id("x") != prompt_id("y")


def test_split_sizes_and_determinism() -> None:
    rows = [{"prompt": f"p{i}"} for i in range(10)]
    a = split(rows, 0.2, seed=0)
    assert a == split(rows, 0.2, seed=0) and a.count("eval") == 2 and a.count("train") == 8
    assert split(rows, 0.2, seed=1) != a  # another seed, another draw
    # Assignment follows the prompt, not its position.
    rev = split(rows[::-1], 0.2, seed=0)
    assert rev[::-1] == a
    assert split(rows[:2], 0.1, seed=0).count("eval") == 1  # at least one eval prompt
    assert split(rows[:1], 0.5, seed=0) == ["train"]  # one prompt stays for training
    assert split(rows, 0.0, seed=0) == ["train"] * 10
    assert split(rows[:5], 0.5, seed=0).count("eval") == round(2.5) == 2
    assert split([], 0.2, seed=0) == []


@pytest.mark.slow
def test_flow_end_to_end_and_skip(
    tmp_path: Path, messy: list[PromptSource], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from prefect.client.schemas.objects import StateType

    from flows.sample import sample_flow

    # Other code in the tree may be edited while tests run; hold the code part of the fingerprint still.
    monkeypatch.setattr(stage_stamp, "code_hash", lambda name: "fixed")
    monkeypatch.delenv("SYNRANK_PARENT_RUN_ID", raising=False)
    cfg = SampleConfig(sources=messy, eval_fraction=0.4, seed=3)
    paths = Paths(prompts=str(tmp_path / "prompts"))
    tracking = TrackingConfig(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="test-sample")

    out = Path(sample_flow(cfg, paths, tracking))
    assert out == tmp_path / "prompts"
    assert "skipped lines: empty=4, duplicate=3, bad_utf8=2, malformed=4" in capsys.readouterr().out
    df = pd.read_parquet(out / "prompts.parquet")
    assert list(df.columns) == ["prompt_id", "prompt", "split", "category", "source", "meta"]
    assert df["prompt"].tolist() == GOOD_ORDER
    assert df["prompt_id"].tolist() == [hashlib.sha1(p.encode()).hexdigest()[:12] for p in GOOD_ORDER]
    assert df["split"].tolist() == split([{"prompt": p} for p in GOOD_ORDER], 0.4, 3)
    assert (df["split"] == "eval").sum() == 2
    assert df["source"].tolist() == [messy[0].path] * 3 + [messy[1].path] * 2
    stamp = json.loads((out / STAMP).read_text())
    assert {k: stamp["metrics"][k] for k in ("n_prompts", "n_train", "n_eval", "skipped")} == {
        "n_prompts": 5.0,
        "n_train": 3.0,
        "n_eval": 2.0,
        "skipped": 13.0,
    }
    assert stamp["report"]["good"] == 5

    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (out / STAMP, out / "prompts.parquet")}
    state = sample_flow(cfg, paths, tracking, return_state=True)
    assert (state.type, state.name, state.result()) == (StateType.COMPLETED, "Cached", str(out))  # the UI tells
    assert state.message == "sample up to date: its stamp matches, nothing ran"
    assert "up to date, skipped" in capsys.readouterr().out
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in before} == before

    runs = mlflow.search_runs(experiment_names=["test-sample"], order_by=["start_time ASC"])
    assert runs["tags.synrank.up_to_date"].tolist() == ["False", "True"]

    # Editing a source makes the stamp stale, so the stage runs again.
    Path(messy[0].path).write_bytes(TEXT + b"a new prompt\n")
    sample_flow(cfg, paths, tracking)
    assert pd.read_parquet(out / "prompts.parquet")["prompt"].tolist()[3] == "a new prompt"


def test_an_eval_pinned_list_may_repeat_train_prompts(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("a red circle\ntwo stars\na red circle\n")
    (tmp_path / "eval.txt").write_text("two stars\na blue ring\ntwo stars\n")
    res = read_sources(
        [
            PromptSource(path=str(tmp_path / "train.txt"), split="train"),
            PromptSource(path=str(tmp_path / "eval.txt"), split="eval"),
        ],
        root=tmp_path,
    )
    assert [(r["prompt"], r["split"]) for r in res.rows] == [
        ("a red circle", "train"),
        ("two stars", "train"),
        ("two stars", "eval"),
        ("a blue ring", "eval"),
    ]
    assert res.report["duplicate"] == 2 and res.report["also_in_train"] == 1
