"""Token shards: webdataset tars, one sample per view (``__key__`` = ``building/point/view``), one
``<modality>.npy`` (uint16 ids) per modality; written atomically (temp name, then rename)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import webdataset as wds

from robust.io import DataError, ViewKey

SHARD_PATTERN = "shard-{:05d}.tar"
ROOT_BUILDING = "_"
"""Stands for the empty building name of a flat Taskonomy root in shard keys."""


def view_key(key: ViewKey) -> str:
    if "." in key.building:
        raise DataError(f"building name {key.building!r} contains '.', which webdataset keys cannot hold")
    return f"{key.building or ROOT_BUILDING}/{key.point}/{key.view}"


def parse_key(key: str) -> ViewKey:
    building, point, view = key.rsplit("/", 2)
    return ViewKey("" if building == ROOT_BUILDING else building, int(point), int(view))


def write_shard(path: str | os.PathLike, samples: Iterable[tuple[str, dict[str, np.ndarray]]]) -> Path:
    """Write ``(key, {modality: ids})`` samples to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f, wds.TarWriter(f) as sink:
        for key, tokens in samples:
            entry = {"__key__": key}
            for name, ids in tokens.items():
                ids = np.asarray(ids)
                if ids.size and (ids.min() < 0 or ids.max() > np.iinfo(np.uint16).max):
                    raise ValueError(f"{path}: {key} {name}: token ids outside uint16")
                entry[f"{name}.npy"] = ids.astype(np.uint16)
            sink.write(entry)
    os.replace(tmp, path)
    return path


def shard_paths(root: str | os.PathLike) -> list[Path]:
    paths = sorted(Path(root).glob("shard-*.tar"))
    if not paths:
        raise DataError(f"{root}: no token shards (shard-*.tar) found")
    return paths


def read_shards(
    paths: Sequence[str | os.PathLike], modalities: Sequence[str]
) -> list[tuple[str, dict[str, np.ndarray]]]:
    """All samples of ``paths`` as ``(key, {modality: int64 ids})``; every sample must hold every modality."""
    out = []
    for path in paths:
        for sample in wds.WebDataset(str(path), shardshuffle=False, empty_check=False):
            key = sample["__key__"]
            missing = [m for m in modalities if f"{m}.npy" not in sample]
            if missing:
                raise DataError(f"{path}: sample {key!r} lacks modality {missing[0]!r} (has {_names(sample)})")
            out.append((key, {m: np.load(io.BytesIO(sample[f"{m}.npy"])).astype(np.int64) for m in modalities}))
    return out


def _names(sample: dict) -> list[str]:
    return sorted(k[:-4] for k in sample if k.endswith(".npy"))
