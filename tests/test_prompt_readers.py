"""The prompt readers survive any bytes (issue 10, item 7).

Property tests throw random bytes mixed with good lines at every format, by name and by auto-detection,
and check that nothing raises, every good prompt is kept once, and every line is counted exactly once;
files built from known bad kinds check that each line lands under its reason. Then one unit test per
reported bug (deep JSON, a lone surrogate, NUL lines, a mid-file BOM, a 1 MiB prompt), by value.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from synrank.config import PromptSource, SampleConfig
from synrank.prompt_formats import clean, detect_format
from synrank.prompts import COUNT_KEYS, SKIP_REASONS, prompt_id, read_sources, split
from tasks.sample import write_prompt_table

MAX = 60  # max_prompt_chars in the property tests; good prompts are at most 51 characters
FORMATS = ("text", "jsonl", "geneval", "partiprompts")
AUTO_NAME = {"text": "p.txt", "jsonl": "p.jsonl", "geneval": "evaluation_metadata.jsonl", "partiprompts": "p.tsv"}
HEADER = b"Prompt\tCategory\tChallenge\tNote"
BOM = "\ufeff"
REMOVED = "".join(map(chr, (*range(0x00, 0x09), *range(0x0E, 0x20), *range(0x7F, 0x85), *range(0x86, 0xA0))))
BAD_UTF8 = (b"\xff", b"\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80")
PROPS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Plain printable prompts: words of letters, digits, punctuation and symbols (any script), single spaces.
word = st.text(st.characters(categories=("L", "N", "P", "S"), codec="utf-8"), min_size=1, max_size=12)
good_prompts = st.lists(st.lists(word, min_size=1, max_size=4).map(" ".join), min_size=1, max_size=6, unique=True)
Draw = Callable[[st.SearchStrategy[Any]], Any]


def line_for(fmt: str, prompt: str, tag: str = "counting") -> str:
    """One record holding prompt, as each format writes it (JSON escapes controls and surrogates)."""
    if fmt == "text":
        return prompt
    if fmt == "jsonl":
        return json.dumps({"prompt": prompt, "id": 3})
    if fmt == "geneval":
        return json.dumps({"tag": tag, "include": [{"class": "cat", "count": 1}], "prompt": prompt})
    return f"{prompt}\tAnimals\tSimple Detail\t"


def read(fmt: str, lines: list[bytes], auto: bool = False, max_chars: int = MAX) -> tuple[dict, list[dict]]:
    """Write lines as one source file (PartiPrompts with its header) and read it back."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / (AUTO_NAME[fmt] if auto else "prompts.data")
        path.write_bytes(b"\n".join([HEADER] * (fmt == "partiprompts") + lines) + b"\n")
        src = PromptSource(path=str(path), format="auto" if auto else fmt)  # type: ignore[arg-type]
        res = read_sources([src], max_prompt_chars=max_chars)
    rep = res.report["sources"][str(path)]
    assert rep["format"] == fmt and {k: res.report[k] for k in COUNT_KEYS} == {k: rep[k] for k in COUNT_KEYS}
    return rep, res.rows


def insert(draw: Draw, text: str, chars: str, most: int = 3) -> str:
    """text with up to `most` characters of chars put in at drawn places."""
    for c in draw(st.lists(st.sampled_from(chars), max_size=most)):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + c + text[at:]
    return text


def noisy_duplicate(draw: Draw, fmt: str, prompt: str) -> bytes:
    """prompt again, under controls, BOMs (inside the value and raw in the line) and padding."""
    pad = " \x0b\x0c" + ("" if fmt == "partiprompts" else "\t")  # a tab would shift PartiPrompts cells
    noisy = draw(st.text(pad, max_size=3)) + insert(draw, prompt, REMOVED + BOM) + draw(st.text(pad, max_size=3))
    return insert(draw, line_for(fmt, noisy), BOM).encode()


def bad_kind(draw: Draw, fmt: str, goods: list[str]) -> tuple[bytes, str]:
    """One line of a known bad kind for fmt, and the reason it must be counted under."""
    json_fmt = fmt in ("jsonl", "geneval")
    kinds = ["dup", "blank", "empty_prompt", "bad_utf8", "too_long"]
    kinds += ["deep", "deep_meta", "surrogate", "surrogate_meta", "cut", "not_record"] if json_fmt else []
    kinds += ["extra_cells"] if fmt == "partiprompts" else []
    kind = draw(st.sampled_from(kinds))
    if kind == "dup":
        return noisy_duplicate(draw, fmt, draw(st.sampled_from(goods))), "duplicate"
    if kind == "blank":
        return draw(st.text(" \t\x0b\x0c\x85" + REMOVED + BOM, max_size=8)).encode(), "empty"
    if kind == "empty_prompt":
        return line_for(fmt, draw(st.text(" \x0b" + REMOVED + BOM, min_size=1, max_size=5))).encode(), "empty"
    if kind == "bad_utf8":
        line = line_for(fmt, draw(st.sampled_from(goods))).encode()
        at = draw(st.integers(0, len(line)))
        return line[:at] + draw(st.sampled_from(BAD_UTF8)) + line[at:], "bad_utf8"
    if kind == "too_long":
        return line_for(fmt, draw(st.text("abcxyz", min_size=MAX + 1, max_size=MAX + 40))).encode(), "too_long"
    if kind in ("deep", "deep_meta"):
        depth = draw(st.integers(5_000, 60_000))
        deep = "[" * depth if kind == "deep" else '{"prompt": "x", "m": ' + "[" * depth + "]" * depth + "}"
        return deep.encode(), "malformed"
    if kind.startswith("surrogate"):
        lone = chr(draw(st.integers(0xD800, 0xDFFF)))
        prompt = draw(st.sampled_from(goods))
        line = line_for(fmt, prompt + lone) if kind == "surrogate" else line_for(fmt, prompt, tag=lone)
        return line.replace('"id": 3', json.dumps({"id": lone})[1:-1]).encode(), "bad_unicode"
    if kind == "cut":
        line = line_for(fmt, draw(st.sampled_from(goods)))
        return line[: draw(st.integers(1, len(line) - 1))].encode(), "malformed"
    if kind == "not_record":
        return draw(
            st.sampled_from(
                [
                    "[1, 2]",
                    '"a cat"',
                    '{"text": "a cat"}',
                    '{"prompt": 5}',
                    "null",
                    '{"prompt": "a", "n": ' + "9" * 5000 + "}",
                    '{"tag": "x", "prompt": "a"}' if fmt == "geneval" else "{}",
                ]
            )
        ).encode(), "malformed"
    return (line_for(fmt, draw(st.sampled_from(goods))) + "\tx\ty").encode(), "malformed"  # extra_cells


def junk_line(draw: Draw, fmt: str) -> bytes:
    """A line of unknown fate: raw bytes, text with surrogates, JSON of anything, deep brackets."""
    anything = st.text(st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr)), max_size=40)
    line = draw(
        st.one_of(
            st.binary(max_size=80),
            anything.map(lambda s: s.encode("utf-8", "surrogatepass")),
            anything.map(lambda s: line_for(fmt, s).encode("utf-8", "surrogatepass")),
            anything.map(lambda s: json.dumps({"prompt": s}, ensure_ascii=False).encode("utf-8", "surrogatepass")),
            st.integers(1, 60_000).map(lambda d: b"[" * d + b"]" * (d % 2) * d),
        )
    )
    return line.replace(b"\n", b" ").replace(b"\r", b" ")  # one line stays one line


def assert_rows_are_clean(rows: list[dict]) -> None:
    """What the stage needs of kept rows: unique, normal, UTF-8, no controls, and a parquet write works."""
    prompts = [r["prompt"] for r in rows]
    assert len(set(prompts)) == len(prompts)
    for p in prompts:
        assert p == clean(p) and 0 < len(p) <= MAX and BOM not in p
        assert not any(unicodedata.category(c) == "Cc" for c in p)
        p.encode("utf-8")
        assert len(prompt_id(p)) == 12
    for r in rows:
        json.loads(r["meta"])
    with tempfile.TemporaryDirectory() as tmp:
        out = write_prompt_table.fn(rows, split(rows, 0.2, 0), tmp)
        assert pd.read_parquet(out)["prompt"].tolist() == prompts


@pytest.mark.slow
@pytest.mark.parametrize("auto", [False, True], ids=["named", "auto"])
@pytest.mark.parametrize("fmt", FORMATS)
@PROPS
@given(data=st.data())
def test_known_bad_lines_land_under_their_reason(fmt: str, auto: bool, data: st.DataObject) -> None:
    goods = data.draw(good_prompts)
    cases = [(line_for(fmt, p).encode(), "good") for p in goods]
    cases += [bad_kind(data.draw, fmt, goods) for _ in range(data.draw(st.integers(0, 10)))]
    cases = data.draw(st.permutations(cases))
    rep, rows = read(fmt, [line for line, _ in cases], auto)
    assert {k: rep[k] for k in COUNT_KEYS} == {k: Counter(r for _, r in cases)[k] for k in COUNT_KEYS}
    assert sorted(r["prompt"] for r in rows) == sorted(goods)  # a duplicate before its original swaps roles
    assert_rows_are_clean(rows)


@pytest.mark.parametrize("auto", [False, True], ids=["named", "auto"])
@pytest.mark.parametrize("fmt", FORMATS)
@PROPS
@given(data=st.data())
def test_random_bytes_never_raise_and_every_line_is_counted(fmt: str, auto: bool, data: st.DataObject) -> None:
    goods = data.draw(good_prompts)
    junk = [junk_line(data.draw, fmt) for _ in range(data.draw(st.integers(0, 12)))]
    lines = data.draw(st.permutations([line_for(fmt, p).encode() for p in goods] + junk))
    rep, rows = read(fmt, lines, auto)
    assert sum(rep[k] for k in COUNT_KEYS) == len(lines)
    assert rep["good"] == len(rows)
    kept = [r["prompt"] for r in rows]
    assert all(kept.count(p) == 1 for p in goods)
    assert_rows_are_clean(rows)


@PROPS
@given(
    junk=st.lists(st.binary(max_size=60).map(lambda b: b"\xff" + b.replace(b"\n", b"")), max_size=5),
    depth=st.integers(1_000, 60_000),
)
def test_detection_reads_past_junk_and_deep_json(junk: list[bytes], depth: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mine.jsonl"
        path.write_bytes(b"\n".join([*junk, b"[" * depth, BOM.encode() + line_for("geneval", "a cat").encode()]))
        assert detect_format(path) == "geneval"


@settings(max_examples=200, deadline=None)
@given(st.text(st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr))))
def test_prompt_id_never_raises(text: str) -> None:
    pid = prompt_id(text)
    assert len(pid) == 12 and int(pid, 16) >= 0
    if not any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        assert pid == hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def counts(rep: dict) -> dict[str, int]:
    """Only the non-zero counts, so a unit test names exactly what it expects."""
    return {k: rep[k] for k in COUNT_KEYS if rep[k]}


@pytest.mark.parametrize("fmt", ["jsonl", "geneval"])
def test_fifty_thousand_brackets_are_malformed_not_a_crash(fmt: str) -> None:
    lines = [b"[" * 50_000, line_for(fmt, "a cat").encode(), b'{"prompt": "b", "m": ' + b"[" * 50_000 + b"}"]
    assert counts(read(fmt, lines)[0]) == {"good": 1, "malformed": 2}
    assert counts(read(fmt, lines, auto=True)[0]) == {"good": 1, "malformed": 2}
    assert counts(read("text", lines[:1], max_chars=2000)[0]) == {"too_long": 1}  # as text: just long


def test_lone_surrogate_escape_is_bad_unicode() -> None:
    lines = [
        rb'{"prompt": "a cat \ud800"}',
        rb'{"prompt": "a dog", "note": "\udfff"}',
        rb'{"prompt": "a smile \ud83d\ude00"}',
        b'{"prompt": "a \\u00e9t\\u00e9"}',
    ]
    rep, rows = read("jsonl", lines)
    assert counts(rep) == {"good": 2, "bad_unicode": 2}
    assert [r["prompt"] for r in rows] == ["a smile \U0001f600", "a été"]  # a surrogate pair is one character
    assert_rows_are_clean(rows)
    assert counts(read("text", [b"a cat \xed\xa0\x80"])[0]) == {"bad_utf8": 1}  # raw surrogate bytes: not UTF-8


def test_nul_and_control_lines_are_empty_and_controls_leave_prompts() -> None:
    lines = [b"\x00" * 40, b"a cat", b"a c\x00a\x07t\x1b", b"\x00 \t\x7f\xc2\x85\xc2\x9f", b"a\tdog", b"a dog"]
    rep, rows = read("text", lines)
    assert counts(rep) == {"good": 2, "empty": 2, "duplicate": 2}
    assert [r["prompt"] for r in rows] == ["a cat", "a dog"]
    rep, rows = read("jsonl", [b"\x00" * 8, b'{"prompt": "\\u0000\\u0000"}', b'{"prompt": "a\\tcat\\u0007"}'])
    assert counts(rep) == {"good": 1, "empty": 2} and rows[0]["prompt"] == "a cat"


def test_bom_anywhere_is_stripped_so_duplicates_meet() -> None:
    bom = BOM.encode()
    lines = [bom + b"a cat", b"a cat", bom + b"a cat" + bom, b"a d" + bom + b"og", b"a dog", bom]
    rep, rows = read("text", lines)
    assert counts(rep) == {"good": 2, "duplicate": 3, "empty": 1}
    assert [r["prompt"] for r in rows] == ["a cat", "a dog"]
    cat = b'{"prompt": "a cat"}'
    rep, _ = read("jsonl", [cat, bom + cat, b'{"prompt": "a\\ufeff cat"}'])  # a BOM escaped in JSON too
    assert counts(rep) == {"good": 1, "duplicate": 2}
    rep, rows = read("partiprompts", [bom + b"a cat\tAnimals\t\t", b"a cat" + bom + b"\tAnimals\t\t"])
    assert counts(rep) == {"good": 1, "duplicate": 1} and rows[0]["category"] == "Animals"


def test_one_mib_prompt_is_too_long_unless_allowed() -> None:
    huge = b"a" * (1 << 20)
    assert counts(read("text", [huge, b"a cat"], max_chars=2000)[0]) == {"good": 1, "too_long": 1}
    rep, rows = read("jsonl", [b'{"prompt": "' + huge + b'"}'], max_chars=2_000_000)
    assert counts(rep) == {"good": 1} and len(rows[0]["prompt"]) == 1 << 20
    edge = [b"x" * 10, b"y" * 11, b"  " + b"z" * 10 + b"\x00\x00  "]  # the limit counts cleaned characters
    assert counts(read("text", edge, max_chars=10)[0]) == {"good": 2, "too_long": 1}


def test_max_prompt_chars_config_and_default() -> None:
    assert SampleConfig().max_prompt_chars == 2000
    with pytest.raises(ValidationError):
        SampleConfig(max_prompt_chars=0)
    with pytest.raises(ValueError):
        read_sources([], max_prompt_chars=0)
    assert set(COUNT_KEYS) == {"good", *SKIP_REASONS} and {"too_long", "bad_unicode"} <= set(SKIP_REASONS)


def test_partiprompts_without_a_prompt_column_is_malformed_not_a_crash() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.tsv"
        path.write_bytes(b"\xff\xfe\n\nNot\tA\tHeader\na cat\tAnimals\n")
        res = read_sources([PromptSource(path=str(path))])
    assert res.rows == [] and counts(res.report) == {"bad_utf8": 1, "empty": 1, "malformed": 2}


@pytest.mark.slow
def test_stage_passes_the_limit_and_reports_every_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.sample import sample_flow
    from synrank import stamp as stage_stamp
    from synrank.config import Paths, TrackingConfig
    from synrank.fingerprint import STAMP

    monkeypatch.setattr(stage_stamp, "code_hash", lambda *_: "fixed")  # other code in the tree may change meanwhile
    monkeypatch.delenv("SYNRANK_PARENT_RUN_ID", raising=False)
    (tmp_path / "p.jsonl").write_bytes(
        b"\n".join(
            [
                b'{"prompt": "a cat", "category": "x"}',
                b'{"prompt": "a longer prompt"}',
                rb'{"prompt": "a \ud800"}',
                b"[" * 50_000,
                b"\x00\x00",
                b"\xef\xbb\xbf" + b'{"prompt": "a cat", "category": "x"}',
                b"\xff",
                b'{"prompt": "a dog", "category": "y"}',
            ]
        )
    )
    cfg = SampleConfig(sources=[PromptSource(path=str(tmp_path / "p.jsonl"), categories=["x"])], max_prompt_chars=10)
    out = Path(
        sample_flow(
            cfg,
            Paths(prompts=str(tmp_path / "prompts")),
            TrackingConfig(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="readers"),
        )
    )
    assert (
        "skipped lines: empty=1, duplicate=1, bad_utf8=1, malformed=1, bad_unicode=1, too_long=1, "
        "other_category=1" in capsys.readouterr().out
    )
    assert pd.read_parquet(out / "prompts.parquet")["prompt"].tolist() == ["a cat"]
    stamp = json.loads((out / STAMP).read_text())
    assert {k: stamp["metrics"][f"skipped_{k}"] for k in SKIP_REASONS} == dict.fromkeys(SKIP_REASONS, 1.0)
    assert {k: stamp["report"][k] for k in COUNT_KEYS} == dict.fromkeys(COUNT_KEYS, 1)


def test_categories_keep_only_their_lines_and_a_mistyped_one_is_named(tmp_path: Path) -> None:
    path = tmp_path / "meta.jsonl"
    path.write_text(
        "".join(
            json.dumps({"tag": t, "include": [], "prompt": p}) + "\n"
            for t, p in [("counting", "two cats"), ("colors", "a red cat"), ("counting", "three dogs")]
        )
    )
    res = read_sources([PromptSource(path=str(path), categories=["counting"])])
    assert [(r["prompt"], r["category"]) for r in res.rows] == [("two cats", "counting"), ("three dogs", "counting")]
    assert counts(res.report) == {"good": 2, "other_category": 1}
    with pytest.raises(ValueError, match=r"no line has category 'cuonting'; its categories are colors, counting$"):
        read_sources([PromptSource(path=str(path), categories=["counting", "cuonting"])])
    limited = read_sources([PromptSource(path=str(path), categories=["counting", "cuonting"], limit=1)])
    assert [r["prompt"] for r in limited.rows] == ["two cats"]  # stopped by the limit: the rest is unread
