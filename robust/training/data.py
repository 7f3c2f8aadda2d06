"""Train/val data for the trainer: building or fraction splits and a resumable, shardable view stream."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Dataset, Sampler

from robust.io import DataError, ResizeCrop, TaskonomyDataset, TaskonomyIndex, read_split


def split_views(
    root: str | os.PathLike,
    domains: Sequence[str],
    val_buildings: Sequence[str] = (),
    split_csv: str | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> tuple[TaskonomyDataset, list[int], list[int]]:
    """Dataset over all views with ``domains`` and its (train, val) view indices.

    Priority: ``val_buildings`` (all other buildings train), then ``split_csv`` (``train``/``val``
    columns), then a seeded random ``val_fraction`` of views (at least one view each side).
    """
    index = TaskonomyIndex.scan(root)
    ds = TaskonomyDataset(root, domains, index=index)
    buildings = [k.building for k in ds.keys]
    if val_buildings:
        unknown = set(val_buildings) - set(buildings)
        if unknown:
            raise DataError(f"{root}: --val-buildings not found: {sorted(unknown)} (have {sorted(set(buildings))})")
        val = [i for i, b in enumerate(buildings) if b in set(val_buildings)]
        train = [i for i, b in enumerate(buildings) if b not in set(val_buildings)]
    elif split_csv:
        tr, va = set(read_split(split_csv, "train")), set(read_split(split_csv, "val"))
        train = [i for i, b in enumerate(buildings) if b in tr or b.split("/")[-1] in tr]
        val = [i for i, b in enumerate(buildings) if b in va or b.split("/")[-1] in va]
    else:
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0,1), got {val_fraction}")
        perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed)).tolist()
        n_val = min(max(round(val_fraction * len(ds)), 1 if val_fraction > 0 else 0), len(ds) - 1)
        val, train = sorted(perm[:n_val]), sorted(perm[n_val:])
    if not train:
        raise DataError(f"{root}: the split leaves no training views")
    return ds, train, val


class ViewStream(Dataset):
    """Views ``indices`` of ``dataset`` addressed by a global sample number ``j`` (epoch-major).

    Sample ``j`` is view ``indices[j % n]`` transformed with index ``j``, so random crops differ per epoch
    and stay reproducible.
    """

    def __init__(self, dataset: TaskonomyDataset, indices: Sequence[int], transform: ResizeCrop) -> None:
        self.dataset, self.indices, self.transform = dataset, list(indices), transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> dict:
        key = self.dataset.keys[self.indices[j % len(self.indices)]]
        sample = self.transform(self.dataset.load(key), j)
        sample["key"] = key
        return sample


class ResumableSampler(Sampler[int]):
    """Endless epoch-major sample numbers: each epoch a seeded permutation, sharded over ranks, from ``start``.

    Sample ``s`` of the global stream (all ranks interleaved) belongs to rank ``s % world_size``;
    ``start`` counts global samples already consumed, so resuming at step ``k`` continues the exact stream.
    (Replaces ``DistributedSampler``, which cannot resume mid-epoch.)
    """

    def __init__(self, n: int, seed: int = 0, start: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.seed, self.start, self.rank, self.world_size = n, seed, start, rank, world_size

    def __iter__(self) -> Iterator[int]:
        s = self.start + self.rank
        while True:
            epoch, pos = divmod(s, self.n)
            perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch))
            while pos < self.n:
                yield epoch * self.n + int(perm[pos])
                pos += self.world_size
                s += self.world_size

    def __len__(self) -> int:  # endless; DataLoader only needs it for len(loader)
        return 2**62
