"""Ranked groups on disk: latents and text conditioning written once, read one batch at a time.

A group build (models.train_data.build_groups) writes a folder

    groups.pt           the small per-group tensors: index, phi, tau, mask [, advantage, stored, category]
    latents.npy         (N, C, h, w) float32, one row per image
    cond.<name>.npy     (P, ...) float32 per conditioning tensor (encoder_hidden_states, pooled ...)

and training reads only the rows of each batch (`take`). A read maps the file (numpy's memory map), copies
the rows out and unmaps it, so the pages it touched leave the process: a rank holds one batch, whatever the
size of the data (scripts/bench_memory.py, docs/benchmarks.md), and the ranks of a node share one copy in
the page cache. The build writes each file sequentially, chunk by chunk, so it holds one chunk too.

A field of RankedGroups is either such a file (DiskRows) or, for small groups built in tests, a tensor;
`take` and `subset` treat both alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

SMALL = "groups.pt"  # the per-group tensors; the folder is complete when it holds this (written last)


@dataclass(frozen=True)
class DiskRows:
    """The rows `rows` (all when None) of the .npy file at `path`, read only by `take`."""

    path: Path
    rows: torch.Tensor | None = None  # (R,) long: which of the file's rows this view holds

    @cached_property
    def _file_shape(self) -> tuple[int, ...]:
        """The file's (rows, *row shape), read once from its header (shape is asked for on every step)."""
        with open(self.path, "rb") as f:
            np.lib.format.read_magic(f)
            shape, _, _ = np.lib.format.read_array_header_1_0(f)
        return tuple(shape)

    @property
    def shape(self) -> tuple[int, ...]:
        """(len(self), *row shape), from the file's header."""
        full = self._file_shape
        return full if self.rows is None else (len(self.rows), *full[1:])

    def __len__(self) -> int:
        return self.shape[0]

    def take(self, index: torch.Tensor) -> torch.Tensor:
        """The rows at `index` (any shape, into this view) as a float tensor (*index.shape, *row shape)."""
        file_rows = index if self.rows is None else self.rows[index]
        wanted, inverse = np.unique(file_rows.reshape(-1).numpy(), return_inverse=True)
        mapped = np.load(self.path, mmap_mode="r")
        got = torch.from_numpy(np.array(mapped[wanted]))  # ascending rows: one forward pass over the file
        del mapped  # unmapped here: the pages read leave this process's resident memory
        return got[torch.from_numpy(inverse)].reshape(*index.shape, *got.shape[1:])

    def subset(self, which: torch.Tensor) -> DiskRows:
        """The view of this view's rows at `which` ((R,) long or (len,) bool); reads nothing."""
        which = which.nonzero().flatten() if which.dtype == torch.bool else which
        return DiskRows(self.path, which if self.rows is None else self.rows[which])


Rows = torch.Tensor | DiskRows  # a (N, ...) table of rows: in memory or on disk


def take(rows: Rows, index: torch.Tensor) -> torch.Tensor:
    """rows[index] for an index tensor of any shape, read from disk when `rows` is there."""
    return rows.take(index) if isinstance(rows, DiskRows) else rows[index]


def subset(rows: Rows, which: torch.Tensor) -> Rows:
    """The rows at `which`: a tensor is indexed, a file gets a view (nothing read)."""
    return rows.subset(which) if isinstance(rows, DiskRows) else rows[which]


class NpyRows:
    """Writes an (n_rows, ...) float32 .npy file chunk by chunk: the header when the first chunk gives the
    row shape, then the chunks' bytes in order; `close` checks that exactly n_rows came."""

    def __init__(self, path: Path, n_rows: int) -> None:
        self.path, self.n_rows, self.written = path, n_rows, 0
        self.file: BinaryIO = open(path, "wb")

    def write(self, chunk: np.ndarray | torch.Tensor) -> None:
        """Append the rows of `chunk` (n, *row shape), as float32."""
        arr = np.ascontiguousarray(chunk.numpy() if isinstance(chunk, torch.Tensor) else chunk, dtype="<f4")
        if self.written == 0:
            header = {"descr": "<f4", "fortran_order": False, "shape": (self.n_rows, *arr.shape[1:])}
            np.lib.format.write_array_header_1_0(self.file, header)
        self.file.write(arr.tobytes())
        self.written += len(arr)

    def close(self) -> None:
        """Close the file; ValueError when the rows written are not the n_rows announced."""
        self.file.close()
        if self.written != self.n_rows:
            raise ValueError(f"{self.path.name}: {self.written} rows written, {self.n_rows} announced")


@contextmanager
def npy_rows(path: Path, n_rows: int) -> Iterator[NpyRows]:
    """An NpyRows for `path`, closed (and checked) at the end of the block."""
    out = NpyRows(path, n_rows)
    try:
        yield out
    finally:
        out.file.close()
    out.close()


def save_small(groups, folder: Path) -> None:
    """Write the per-group tensors of `groups` (every field but latents and cond) to folder/groups.pt."""
    small = {f.name: getattr(groups, f.name) for f in fields(groups) if f.name not in ("latents", "cond")}
    with open(folder / SMALL, "wb") as fh:  # an open file: torch names the archive after the path otherwise
        torch.save(small, fh)


def load_fields(folder: Path) -> dict:
    """The RankedGroups fields of a built folder: the small tensors, and latents and cond as DiskRows."""
    out = torch.load(folder / SMALL)
    cond = {p.name.removeprefix("cond.").removesuffix(".npy"): DiskRows(p) for p in sorted(folder.glob("cond.*.npy"))}
    return {**out, "latents": DiskRows(folder / "latents.npy"), "cond": cond}
