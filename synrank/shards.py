"""Images live in tar shards, not one file each: DVC and S3 handle a few large files far better than
millions of small ones. A shard's location is a path relative to the images folder, or an
`s3://bucket/key` (see synrank.storage); it is written all at once (temporary name + rename, or one
S3 put), so a reader or a resumed run sees a whole shard or none.

Beside each image `<id>.png` a shard holds `<id>.latent.npy`, the latents its generator's decoder turned
into that PNG (float32, (C, h, w), numpy's .npy format), so that training never re-encodes the PNG."""

from __future__ import annotations

import io
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from synrank import storage

if TYPE_CHECKING:
    import pandas as pd

LATENT_SUFFIX = ".latent.npy"


def png_bytes(image: Image.Image) -> bytes:
    """`image` as RGB PNG bytes; deterministic (no timestamp), so the same pixels give the same bytes."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")  # PIL writes no timestamp: same pixels, same bytes
    return buf.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    """`array` in numpy's .npy format, C order; the header holds only dtype and shape: same values, same bytes."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def shape_text(shape: Iterable[int]) -> str:
    """(4, 8, 8) -> '4x8x8', how the manifest records a latent's shape."""
    return "x".join(str(int(d)) for d in shape)


def tar_bytes(members: Iterable[tuple[str, bytes]]) -> bytes:
    """A tar of (name, bytes) members with fixed metadata, so equal content gives equal bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_shard(location: str, members: Iterable[tuple[str, bytes]], root: Path) -> str:
    """Write the (name, bytes) members as one tar at `location`, whole or not at all (storage.write_bytes);
    returns `location`. OSError as storage raises it."""
    storage.write_bytes(location, tar_bytes(members), root)
    return location


def read_shard(location: str, root: Path) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of every file member of the shard at `location`, in tar order (the shard is read whole
    first). FileNotFoundError/OSError as storage.read_bytes raises them."""
    with tarfile.open(fileobj=io.BytesIO(storage.read_bytes(location, root)), mode="r") as tar:
        for info in tar:
            f = tar.extractfile(info)
            if f is not None:
                yield info.name, f.read()


UNREADABLE = (tarfile.TarError, EOFError, zlib.error)  # what a truncated or damaged tar raises


class ShardUnreadable(RuntimeError):
    """A shard that cannot be read, in one line: the shard and the command that re-renders it."""


def unreadable(shard: str, err: BaseException) -> ShardUnreadable:
    """The one message for a shard that cannot be read."""
    return ShardUnreadable(
        f"shard '{shard}' cannot be read ({type(err).__name__}: {err}); `synrank generate` checks every shard "
        "against the manifest and renders a damaged one again"
    )


def shard_problem(piece: pd.DataFrame, root: Path) -> str:
    """Why a finished shard no longer holds what its manifest piece says ('' if it does): the tar does not
    open, or a member is missing or its sha256 differs (the PNG, and the latents where recorded)."""
    import hashlib

    try:
        members = dict(read_shard(str(piece["shard"].iloc[0]), root))
    except (*UNREADABLE, OSError) as err:
        return f"does not open ({type(err).__name__}: {err})"
    checks = [("member", "sha256"), ("latent_member", "latent_sha256")]
    for row in piece.to_dict("records"):
        for name_col, sha_col in checks:
            name, sha = row.get(name_col) or "", row.get(sha_col) or ""
            if not name or not sha:
                continue
            if name not in members:
                return f"has no member '{name}'"
            if hashlib.sha256(members[name]).hexdigest() != sha:
                return f"member '{name}' differs from the manifest's sha256"
    return ""


def load_members(root: Path | str, rows: Iterable[tuple[str, str]]) -> list[bytes]:
    """The bytes of (shard location, member) pairs, in order, reading each shard once. ShardUnreadable names a
    shard that does not open."""
    rows, root = list(rows), Path(root)
    wanted: dict[str, dict[str, bytes]] = {s: {} for s, _ in rows}
    for shard, members in wanted.items():
        names = {m for s, m in rows if s == shard}
        try:
            members.update((n, d) for n, d in read_shard(shard, root) if n in names)
        except UNREADABLE as err:
            raise unreadable(shard, err) from None
    for shard, member in rows:
        if member not in wanted[shard]:
            raise FileNotFoundError(f"'{member}' is missing from shard '{shard}' (root {root})")
    return [wanted[shard][member] for shard, member in rows]


def load_images(root: Path | str, rows: Iterable[tuple[str, str]]) -> list[Image.Image]:
    """Images for (shard location, member) pairs, reading each shard once; ShardUnreadable names a shard that
    does not open or a member that is not a readable image."""
    rows = list(rows)
    images = []
    for (shard, member), data in zip(rows, load_members(root, rows)):
        try:
            images.append(Image.open(io.BytesIO(data)).convert("RGB"))
        except (OSError, SyntaxError, ValueError) as err:  # what PIL raises for damaged image bytes
            raise unreadable(f"{shard}' member '{member}", err) from None
    return images


def load_arrays(root: Path | str, rows: Iterable[tuple[str, str]]) -> list[np.ndarray]:
    """.npy members (e.g. stored latents) for (shard location, member) pairs, reading each shard once."""
    return [np.load(io.BytesIO(data), allow_pickle=False) for data in load_members(root, rows)]
