"""synrank.atomic: whole-or-nothing files and folders, one temporary-name scheme, fsync before the rename
and of the folder after."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from synrank import atomic
from synrank.fingerprint import tree_files


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _fail_replace(monkeypatch: pytest.MonkeyPatch, when: str) -> None:
    """os.replace raises for a source whose name contains `when`; every other rename goes through."""
    real = os.replace

    def replace(src: os.PathLike, dst: os.PathLike) -> None:
        if when in Path(src).name:
            raise OSError("disk gone")
        real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)


# -- files ---------------------------------------------------------------------------------------------


def test_write_bytes_gives_exactly_the_bytes_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "shard.tar"  # folders created
    data = bytes(range(256)) * 3
    atomic.write_bytes(target, data)
    atomic.write_bytes(target, b"second")  # replaces, never appends
    assert target.read_bytes() == b"second"
    atomic.write_bytes(target, data)
    assert target.read_bytes() == data
    assert _names(target.parent) == ["shard.tar"]


def test_write_text_and_json_bytes(tmp_path: Path) -> None:
    atomic.write_text(tmp_path / "t.md", "line\r\nzoë\n")
    assert (tmp_path / "t.md").read_bytes() == "line\r\nzoë\n".encode()  # UTF-8, no newline translation
    # The stamps' format: 2-space indent, sorted keys (non-string ones as strings), tuples as lists, final \n.
    atomic.write_json(tmp_path / "r.json", {"b": 1, 2: [1, (2, 3)], "a": {"y": 1.5, "x": None}})
    expected = '{\n  "2": [\n    1,\n    [\n      2,\n      3\n    ]\n  ],\n  "a": {\n    "x": null,\n'
    expected += '    "y": 1.5\n  },\n  "b": 1\n}\n'
    assert (tmp_path / "r.json").read_text() == expected
    assert _names(tmp_path) == ["r.json", "t.md"]


def test_a_write_that_fails_before_the_rename_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "scores.parquet"
    atomic.write_bytes(target, b"old")
    _fail_replace(monkeypatch, ".tmp")
    with pytest.raises(OSError, match="disk gone"):
        atomic.write_bytes(target, b"new")
    assert target.read_bytes() == b"old" and _names(tmp_path) == ["scores.parquet"]


def test_a_writer_that_fails_midway_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "prompts.parquet"
    atomic.write_bytes(target, b"old")
    with pytest.raises(RuntimeError, match="killed midway"), atomic.writing(target) as tmp:
        tmp.write_bytes(b"half of the n")
        raise RuntimeError("killed midway")
    assert target.read_bytes() == b"old" and _names(tmp_path) == ["prompts.parquet"]


def test_the_file_is_fsynced_before_the_rename_and_its_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync file")
        real_fsync(fd)

    def replace(src: os.PathLike, dst: os.PathLike) -> None:
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    atomic.write_bytes(tmp_path / "x.bin", b"data")
    assert events == ["fsync file", "rename", "fsync dir"]


def test_the_temporary_keeps_the_umask_permissions(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        atomic.write_bytes(tmp_path / "x.bin", b"data")
    finally:
        os.umask(old)
    assert (tmp_path / "x.bin").stat().st_mode & 0o777 == 0o640


# -- the temporary-name scheme ---------------------------------------------------------------------------


def test_temporary_names(tmp_path: Path) -> None:
    target = tmp_path / "shard-0001.tar"
    a, b = atomic.temp_path(target), atomic.temp_path(target)
    assert a != b and a.parent == b.parent == tmp_path  # same folder: the rename stays atomic
    assert a.name.startswith(f".shard-0001.tar.{os.getpid()}.") and a.name.endswith(".tmp")
    assert atomic.temp_path(target, unique=False) == tmp_path / ".shard-0001.tar.tmp"
    for p in (a, b, atomic.temp_path(target, unique=False)):
        p.write_bytes(b"half")
    target.write_bytes(b"whole")
    assert sorted(tmp_path.glob(atomic.TEMP_GLOB)) == sorted([a, b, tmp_path / ".shard-0001.tar.tmp"])
    assert tree_files(tmp_path) == [target]  # not content: a stage's output id leaves them out


def test_the_generate_sweep_removes_what_a_killed_writer_left(tmp_path: Path) -> None:
    from tasks.generate import sweep_temporaries

    shards = tmp_path / "shards" / "g"
    atomic.write_bytes(shards / "shard-0000.tar", b"done")
    stale = atomic.temp_path(shards / "shard-0001.tar")
    stale.write_bytes(b"half")  # what a SIGKILL between the write and the rename leaves
    sweep_temporaries(tmp_path, [SimpleNamespace(name="g")])
    assert _names(shards) == ["shard-0000.tar"]


# -- folders -------------------------------------------------------------------------------------------


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_building_dir_swaps_the_folder_in_whole(tmp_path: Path) -> None:
    dest = tmp_path / "data"
    (dest / "old").mkdir(parents=True)
    (dest / "old" / "gone.jsonl").write_bytes(b"old")
    stale = atomic.temp_path(dest, unique=False)
    (stale / "junk").mkdir(parents=True)  # a killed build's leftovers
    with atomic.building_dir(dest) as tmp:
        assert tmp == stale and not any(tmp.iterdir())
        (tmp / "prompts").mkdir()
        (tmp / "prompts" / "a.jsonl").write_bytes(b"new")
    assert _tree(dest) == {"prompts/a.jsonl": b"new"}
    assert _names(tmp_path) == ["data"]


def test_a_failed_build_leaves_the_old_folder_intact(tmp_path: Path) -> None:
    dest = tmp_path / "data"
    (dest / "prompts").mkdir(parents=True)
    (dest / "prompts" / "a.jsonl").write_bytes(b"old")
    with pytest.raises(RuntimeError, match="midway"), atomic.building_dir(dest) as tmp:
        (tmp / "half.jsonl").write_bytes(b"half")
        raise RuntimeError("midway")
    assert _tree(dest) == {"prompts/a.jsonl": b"old"} and _names(tmp_path) == ["data"]


def test_a_failed_swap_puts_the_old_folder_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "data"
    (dest / "prompts").mkdir(parents=True)
    (dest / "prompts" / "a.jsonl").write_bytes(b"old")
    _fail_replace(monkeypatch, ".data.tmp")  # moving the old folder aside works, the swap itself fails
    with pytest.raises(OSError, match="disk gone"), atomic.building_dir(dest) as tmp:
        (tmp / "prompts").mkdir()
        (tmp / "prompts" / "a.jsonl").write_bytes(b"new")
    assert _tree(dest) == {"prompts/a.jsonl": b"old"} and _names(tmp_path) == ["data"]


def test_replace_dir_into_a_new_name(tmp_path: Path) -> None:
    final = tmp_path / "checkpoints" / "step-0000003"
    tmp = atomic.temp_path(final, unique=False)
    (tmp / "model").mkdir(parents=True)
    (tmp / "model" / "weights.bin").write_bytes(b"w")
    atomic.replace_dir(tmp, final)
    assert _tree(final) == {"model/weights.bin": b"w"} and _names(final.parent) == ["step-0000003"]


def test_publish_dir_keeps_the_stamp_and_hidden_files_and_drops_the_rest(tmp_path: Path) -> None:
    out, new = tmp_path / "model", tmp_path / ".model.tmp"
    for rel, data in {"_stage.json": b"stamp", ".synrank.lock": b"lock", "stale.bin": b"x", "sub/old": b"o"}.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    (new / "sub").mkdir(parents=True)
    (new / "sub" / "w.safetensors").write_bytes(b"weights")
    (new / "tuned.json").write_bytes(b"{}")
    atomic.publish_dir(new, out, protected=("_stage.json",))
    assert _tree(out) == {
        "_stage.json": b"stamp",
        ".synrank.lock": b"lock",
        "sub/w.safetensors": b"weights",
        "tuned.json": b"{}",
    }
