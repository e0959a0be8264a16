"""Content ids: what every cached, skipped or resumed result is keyed by.

A result is reused only when the content that produced it is unchanged, never because a name is:
- a file's id is the sha256 of its bytes; a folder's id hashes its files' relative names and ids;
- a generator's id hashes its spec (steps, guidance, size, dtype...) and the ids of its weights
  (the pipeline folder and the LoRA folder); a reward's id its spec and its weights' ids;
- a generation shard's id hashes its generator's id and every row it renders (prompt, seed, index);
  the id is part of the shard's file name, so a changed input never meets an old output.

Hashing a large model or image folder on every run would be slow, so file ids are cached keyed by
(path, size, mtime_ns, inode, ctime_ns). The first four are what DVC's state database and git's index
trust; they are not enough: `tar -x` and `cp -p` write new bytes into the same inode and set the old mtime
back, so a re-extracted model of the same size looks untouched. The ctime (inode change time) is set by
the kernel on every write and cannot be set back from user space, so any rewrite re-hashes the file.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from synrank.config import ROOT, GeneratorSpec, RewardSpec
from synrank.models_io import resolve_model_path

CACHE_FILE = ROOT / ".synrank" / "digests.json"
STAMP = "_stage.json"  # a stage's bookkeeping (synrank.stage), never content
_cache: dict[str, list[Any]] | None = None
_dirty = False
_lock = threading.Lock()


def sha256_text(*parts: str) -> str:
    """sha256 of the parts joined with NUL (which no part contains), as hex."""
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def _load_cache() -> dict[str, list[Any]]:
    global _cache
    if _cache is None:
        try:
            _cache = json.loads(CACHE_FILE.read_text())
        except (OSError, ValueError):
            _cache = {}
    return _cache


def save_cache() -> None:
    """Persist the file-id cache (atomically; a lost update only costs a re-hash)."""
    global _dirty
    with _lock:
        if not _dirty or _cache is None:
            return
        from synrank.storage import write_bytes

        CACHE_FILE.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(str(CACHE_FILE), json.dumps(_cache).encode(), CACHE_FILE.parent)
        _dirty = False


def file_id(path: Path) -> str:
    """sha256 of a file's bytes, cached by (path, size, mtime_ns, inode, ctime_ns): see the module docstring."""
    global _dirty
    st = path.stat()
    key, stat = str(path.resolve()), [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]
    with _lock:
        hit = _load_cache().get(key)
        if hit and hit[:4] == stat:
            return str(hit[4])
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    with _lock:
        _load_cache()[key] = [*stat, h.hexdigest()]
        _dirty = True
    return h.hexdigest()


def _hidden(rel: Path) -> bool:
    # Temporary files (".name.tmp"), lock files, stage stamps and __pycache__ are not content.
    return rel.name == STAMP or any(part.startswith(".") or part == "__pycache__" for part in rel.parts)


def tree_files(path: Path, exclude: Iterable[str] = ()) -> list[Path]:
    """The content files of a folder, sorted; hidden names (temporaries, locks, stamps) and `exclude` left out."""
    skip = set(exclude)
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and not _hidden(p.relative_to(path)) and p.relative_to(path).as_posix() not in skip
    )


def path_id(path: Path, exclude: Iterable[str] = ()) -> str:
    """Content id of a file, or of a folder (relative names and file ids), or '<missing>'."""
    if path.is_file():
        return file_id(path)
    if not path.is_dir():
        return "<missing>"
    h = hashlib.sha256()
    for p in tree_files(path, exclude):
        h.update(p.relative_to(path).as_posix().encode() + b"\0" + file_id(p).encode() + b"\n")
    return h.hexdigest()


def weights_id(location: str) -> str:
    """Id of a model location: its content if it is a local file or folder (relative to the project
    root), else the location itself (a hub id; its revision is whatever the local cache holds)."""
    if not location:
        return ""
    local = Path(location).expanduser()
    local = local if local.is_absolute() else ROOT / local
    return path_id(local) if local.exists() else f"id:{location}"


def cached_weights_id(location: str) -> str:
    """weights_id, with a hub id's locally cached snapshot hashed by content (new weights under the same id
    change it); 'id:<location>' when there is no local copy."""
    try:
        return weights_id(resolve_model_path(location, location))
    except FileNotFoundError:
        return f"id:{location}"


def _spec_json(spec: GeneratorSpec | RewardSpec, **content: str) -> str:
    # Local weight locations are replaced by their content ids: moving a model folder changes nothing.
    return json.dumps({**spec.model_dump(mode="json"), **content}, sort_keys=True)


def generator_id(spec: GeneratorSpec) -> str:
    """Everything that decides a generator's images: its spec, with its weights' content in place of
    where they are stored (the pipeline folder and the LoRA folder)."""
    return sha256_text("generator", _spec_json(spec, path=weights_id(spec.path), lora=weights_id(spec.lora)))


def _location_id(value: str) -> str:
    """A spec value that names a local file or folder (`local-dir:` folders, config JSON, checkpoint
    files) -> its content id; built-in names and tags stay as they are."""
    prefix = "local-dir:" if value.startswith("local-dir:") else ""
    location = value.removeprefix(prefix)
    if location and ("/" in location or Path(location).suffix):
        return prefix + weights_id(location)
    return value


def reward_id(spec: RewardSpec) -> str:
    """Everything that decides a reward's scores (besides the code): its spec, with its weights'
    content in place of where they are stored."""
    return sha256_text(
        "reward", _spec_json(spec, arch=_location_id(spec.arch), pretrained=_location_id(spec.pretrained))
    )


def shard_id(generator: str, rows: Iterable[tuple[str, str, int, int]]) -> str:
    """Id of one generation shard: the generator's id and each (image_id, prompt, index, seed) it renders."""
    return sha256_text("shard", generator, *(f"{i}\t{p}\t{k}\t{s}" for i, p, k, s in rows))
