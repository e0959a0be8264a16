"""Images live in tar shards, not one file each: DVC and S3 handle a few large files far better than
millions of small ones. A shard's location is a path relative to the images folder, or an
`s3://bucket/key` (see synrank.storage); it is written all at once (temporary name + rename, or one
S3 put), so a reader or a resumed run sees a whole shard or none.

Beside each image `<id>.png` a shard holds `<id>.latent.npy`, the latents its generator's decoder turned
into that PNG (float32, (C, h, w), numpy's .npy format), so that training never re-encodes the PNG."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from synrank import storage

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


def load_members(root: Path | str, rows: Iterable[tuple[str, str]]) -> list[bytes]:
    """The bytes of (shard location, member) pairs, in order, reading each shard once."""
    rows, root = list(rows), Path(root)
    wanted: dict[str, dict[str, bytes]] = {s: {} for s, _ in rows}
    for shard, members in wanted.items():
        names = {m for s, m in rows if s == shard}
        members.update((n, d) for n, d in read_shard(shard, root) if n in names)
    for shard, member in rows:
        if member not in wanted[shard]:
            raise FileNotFoundError(f"'{member}' is missing from shard '{shard}' (root {root})")
    return [wanted[shard][member] for shard, member in rows]


def load_images(root: Path | str, rows: Iterable[tuple[str, str]]) -> list[Image.Image]:
    """Images for (shard location, member) pairs, reading each shard once."""
    return [Image.open(io.BytesIO(data)).convert("RGB") for data in load_members(root, rows)]


def load_arrays(root: Path | str, rows: Iterable[tuple[str, str]]) -> list[np.ndarray]:
    """.npy members (e.g. stored latents) for (shard location, member) pairs, reading each shard once."""
    return [np.load(io.BytesIO(data), allow_pickle=False) for data in load_members(root, rows)]
