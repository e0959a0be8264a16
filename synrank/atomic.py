"""Crash-safe local writes of files and folders: a reader, a resumed run or a stage stamp sees the old
content or the new, never half of one. (S3 objects are atomic by themselves: see synrank.storage.)

One temporary-name scheme for all of them (temp_path): `.<name>.<pid>.<8 hex>.tmp` beside the target, or
`.<name>.tmp` for a temporary that several processes share or that a rerun must find again.
- beside the target: the final rename stays within one filesystem, where rename(2) is atomic;
- pid and random hex: two writers of the same target never share a temporary;
- hidden: content ids (synrank.fingerprint), publish_dir and the stage stamps leave it out;
- ending in `.tmp` (TEMP_GLOB): a sweep finds the ones a killed run left (tasks.generate.sweep_temporaries).

Durability (fsync): a killed process loses nothing that reached the page cache, but a machine that goes
down (power, kernel) can. So each file is fsynced before its rename, since with delayed allocation
(ext4, xfs) the new name can otherwise survive a crash pointing at an empty or partial file; and the
folder is fsynced after the rename, since until then the rename itself can be lost, and with it a result
that the stage would otherwise have to recompute.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TEMP_SUFFIX = ".tmp"
TEMP_GLOB = f".*{TEMP_SUFFIX}"  # every name temp_path gives, for Path.glob


def temp_path(target: Path, unique: bool = True) -> Path:
    """The temporary name for `target`, in its folder: `.<name>.<pid>.<8 hex>.tmp`, or `.<name>.tmp` with
    `unique=False` (a folder every process of a multi-GPU run writes into, or one a rerun removes first)."""
    tag = f".{os.getpid()}.{secrets.token_hex(4)}" if unique else ""
    return target.with_name(f".{target.name}{tag}{TEMP_SUFFIX}")


def fsync_dir(folder: Path) -> None:
    """Make the renames and new names in `folder` durable. A filesystem that cannot sync a folder (EINVAL,
    some network and FUSE mounts) is skipped: there the rename is as durable as it gets."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)  # fsync flushes the inode, whichever descriptor names it
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def writing(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (created empty, so the name is ours) for the caller to write by
    any means (pq.write_table, open(); torch.save only through an open file, as a path would put the
    temporary's name into the archive); on a clean exit the file is fsynced, renamed over `path` and its
    folder fsynced; on an exception it is removed and `path` keeps its old content. Creates the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # 0o666 less the umask, as open() does
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` whole or not at all (see writing), fsynced."""
    with writing(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_text(path: Path, text: str, encoding: str = "utf-8") -> None:
    """Write `text` to `path` whole or not at all, encoded (no newline translation), fsynced."""
    write_bytes(path, text.encode(encoding))


def write_json(path: Path, obj: Any) -> None:
    """Write `obj` as the project's JSON (2-space indent, sorted keys, a final newline) whole or not at all.

    It goes through JSON once first: non-string keys become strings before sorting, so a report written
    fresh and the same report read back from a stamp give the same bytes. Raises TypeError for what JSON
    cannot hold."""
    plain = json.loads(json.dumps(obj))
    write_bytes(path, (json.dumps(plain, indent=2, sort_keys=True) + "\n").encode())


def sync_tree(folder: Path) -> None:
    """fsync every file and folder under `folder` (itself included), deepest first."""
    for p in sorted(folder.rglob("*"), reverse=True):
        if p.is_file() and not p.is_symlink():
            _fsync_file(p)
        elif p.is_dir() and not p.is_symlink():
            fsync_dir(p)
    fsync_dir(folder)


def replace_dir(built: Path, target: Path) -> None:
    """Swap the finished folder `built` (beside `target`, see temp_path) in as `target`.

    `built` is fsynced first (sync_tree) and `target`'s parent after, as for a file. A folder cannot be
    renamed over a non-empty one, so an existing `target` is first moved aside under a temporary name and
    removed after the swap: a failed swap puts it back; a crash between the two renames leaves no `target`
    but both folders under hidden temporary names. Nothing must hold files open in `target` (a stage's
    output folder: use publish_dir, which keeps its stamp)."""
    sync_tree(built)
    old = temp_path(target) if target.exists() else None
    if old is not None:
        os.replace(target, old)
    try:
        os.replace(built, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old)


@contextmanager
def building_dir(target: Path) -> Iterator[Path]:
    """Yield an empty folder `.<name>.tmp` beside `target` (what a killed build left there is removed
    first) to fill; on a clean exit it replaces `target` (replace_dir), on an exception it is removed and
    `target` stays as it was. One builder per target at a time."""
    tmp = temp_path(target, unique=False)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish_dir(new: Path, out: Path, protected: tuple[str, ...] = ()) -> None:
    """Move every file of `new` into `out` (each rename atomic) and remove what `new` does not have;
    the `protected` names (a stage's stamp) and hidden files stay, which is why `out` is not swapped
    whole (replace_dir); nor is a folder a reader may have open replaced under it. A crash half-way leaves a
    folder whose content id no longer matches the old stamp, so the next run redoes the work rather
    than trusting it; until the first rename, `out` is untouched. Each file is fsynced before its rename
    and each folder of `out` after, as in writing."""
    keep = {f.relative_to(new) for f in new.rglob("*")}
    out.mkdir(parents=True, exist_ok=True)
    for rel in sorted(keep):
        if (new / rel).is_file():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            _fsync_file(new / rel)
            os.replace(new / rel, out / rel)
    for f in sorted(out.rglob("*"), reverse=True):  # a folder's files before the folder
        rel = f.relative_to(out)
        if rel in keep or rel.as_posix() in protected or rel.parts[0].startswith("."):
            continue
        if f.is_file():
            f.unlink()
        elif not any(f.iterdir()):
            f.rmdir()
    for folder in sorted({(out / rel).parent for rel in keep} | {out}, reverse=True):
        if folder.is_dir():
            fsync_dir(folder)
