"""Images live in tar shards, not one file each: DVC and S3 handle a few large files far better than
millions of small ones. A shard's location is a path relative to the images folder, or an
`s3://bucket/key` (see synrank.storage); it is written all at once (temporary name + rename, or one
S3 put), so a reader or a resumed run sees a whole shard or none."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from PIL import Image

from synrank import storage


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")  # PIL writes no timestamp: same pixels, same bytes
    return buf.getvalue()


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
    storage.write_bytes(location, tar_bytes(members), root)
    return location


def read_shard(location: str, root: Path) -> Iterator[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(storage.read_bytes(location, root)), mode="r") as tar:
        for info in tar:
            f = tar.extractfile(info)
            if f is not None:
                yield info.name, f.read()


def load_images(root: Path | str, rows: Iterable[tuple[str, str]]) -> list[Image.Image]:
    """Images for (shard location, member) pairs, reading each shard once."""
    rows, root = list(rows), Path(root)
    wanted: dict[str, dict[str, bytes]] = {s: {} for s, _ in rows}
    for shard, members in wanted.items():
        names = {m for s, m in rows if s == shard}
        members.update((n, d) for n, d in read_shard(shard, root) if n in names)
    out = []
    for shard, member in rows:
        try:
            out.append(Image.open(io.BytesIO(wanted[shard][member])).convert("RGB"))
        except KeyError:
            raise FileNotFoundError(f"image '{member}' is missing from shard '{shard}' (root {root})") from None
    return out
