"""Images live in tar shards, not one file each: DVC and S3 handle a few large files far better than
millions of small ones. A shard is written under a temporary name and published with an atomic
rename, so a reader (or a resumed run) sees a whole shard or none."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from PIL import Image


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")  # PIL writes no timestamp: same pixels, same bytes
    return buf.getvalue()


def write_shard(path: Path, members: Iterable[tuple[str, bytes]]) -> Path:
    """Write (name, bytes) members to a tar; fixed metadata so equal content gives equal bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, path)
    return path


def read_shard(path: Path) -> Iterator[tuple[str, bytes]]:
    with tarfile.open(path, "r") as tar:
        for info in tar:
            f = tar.extractfile(info)
            if f is not None:
                yield info.name, f.read()


def load_images(root: Path, rows: Iterable[tuple[str, str]]) -> list[Image.Image]:
    """Images for (shard, member) pairs, opening each shard once."""
    rows = list(rows)
    wanted: dict[str, dict[str, bytes]] = {s: {} for s, _ in rows}
    for shard, members in wanted.items():
        names = {m for s, m in rows if s == shard}
        for name, data in read_shard(root / shard):
            if name in names:
                members[name] = data
    out = []
    for shard, member in rows:
        try:
            out.append(Image.open(io.BytesIO(wanted[shard][member])).convert("RGB"))
        except KeyError:
            raise FileNotFoundError(f"image '{member}' is missing from shard '{root / shard}'") from None
    return out
