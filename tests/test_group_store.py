"""Ranked groups on disk (models.group_store): the files numpy writes, rows read by index, views that read
nothing, and batches equal to the in-memory ones whatever the process count."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from models.group_store import DiskRows, load_fields, npy_rows, save_small, subset, take
from models.objectives import OBJECTIVES
from models.parametrization import Parametrization
from models.preference_batch import preference_batch
from models.train_data import RankedGroups


def _write(path: Path, array: np.ndarray, chunk: int) -> Path:
    with npy_rows(path, len(array)) as out:
        for start in range(0, len(array), chunk):
            out.write(torch.from_numpy(array[start : start + chunk]))
    return path


def test_rows_written_in_chunks_are_the_file_numpy_saves(tmp_path: Path) -> None:
    array = np.random.default_rng(0).standard_normal((7, 4, 3, 5)).astype(np.float32)
    saved = io.BytesIO()
    np.save(saved, array)
    assert _write(tmp_path / "a.npy", array, chunk=3).read_bytes() == saved.getvalue()


def test_a_short_write_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^latents\.npy: 2 rows written, 3 announced$"):
        with npy_rows(tmp_path / "latents.npy", 3) as out:
            out.write(np.zeros((2, 4), np.float32))


def test_take_and_subset_index_like_a_tensor(tmp_path: Path) -> None:
    array = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    disk, mem = DiskRows(_write(tmp_path / "x.npy", array, chunk=4)), torch.from_numpy(array)
    index = torch.tensor([[9, 0, 0], [3, 9, 2]])  # any shape, repeats, any order
    assert torch.equal(take(disk, index), mem[index]) and disk.shape == (10, 3) and len(disk) == 10
    view = subset(subset(disk, torch.tensor([8, 1, 5, 7])), torch.tensor([False, True, True, False]))
    assert view.rows.tolist() == [1, 5] and view.shape == (2, 3)
    assert torch.equal(take(view, torch.tensor([1, 0, 1])), mem[[5, 1, 5]])


def _groups(n_groups: int = 8, k: int = 3) -> RankedGroups:
    gen = torch.Generator().manual_seed(0)
    return RankedGroups(
        index=torch.arange(n_groups * k).view(n_groups, k),
        phi=torch.rand(n_groups, k, generator=gen),
        tau=torch.arange(1, k + 1).repeat(n_groups, 1),
        mask=torch.ones(n_groups, k, dtype=torch.bool),
        cond={"encoder_hidden_states": torch.randn(n_groups, 2, 4, generator=gen)},
        latents=torch.randn(n_groups * k, 4, 2, 2, generator=gen),
    )


def _to_disk(groups: RankedGroups, folder: Path) -> RankedGroups:
    folder.mkdir()
    _write(folder / "latents.npy", groups.latents.numpy(), chunk=5)
    _write(folder / "cond.encoder_hidden_states.npy", groups.cond["encoder_hidden_states"].numpy(), chunk=3)
    save_small(replace(groups, cond={}, latents=torch.empty(0)), folder)
    return RankedGroups(**load_fields(folder))


@pytest.mark.parametrize("objective", ["rankdpo", "sudo"])
def test_a_batch_read_from_disk_and_its_shards_are_the_in_memory_batch(objective: str, tmp_path: Path) -> None:
    mem = _groups()
    disk = _to_disk(mem, tmp_path / "groups")
    from diffusers import DDPMScheduler

    obj = OBJECTIVES.get(objective)
    param = Parametrization.from_scheduler(DDPMScheduler(num_train_timesteps=100))
    rows = torch.tensor([5, 1, 1, 6])

    def batch(groups: RankedGroups, shard: tuple[int, int]):
        return preference_batch(groups, obj, rows, torch.Generator().manual_seed(3), param, "cpu", shard)

    whole = batch(mem, (0, 1))
    halves = [batch(disk, (i, 2)) for i in range(2)]
    for name in ("latents", "label", "tau", "mask", "t", "noise"):
        assert torch.equal(getattr(whole, name), torch.cat([getattr(h, name) for h in halves])), name
    text = torch.cat([h.cond["encoder_hidden_states"] for h in halves])
    assert torch.equal(whole.cond["encoder_hidden_states"], text)
