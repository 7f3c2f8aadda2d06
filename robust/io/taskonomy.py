"""Taskonomy-format datasets: index, reader (torch ``Dataset``), collate and atomic writer.

Supported layouts (found automatically, mixed freely):

- ``<root>/<domain>/point_P_view_V_domain_<domain>.png`` (one building, named ``""``)
- ``<root>/<building>/<domain>/...`` (Taskonomy release)
- ``<root>/<building>_<domain>/<domain>/...`` (per-building archives, as XTC unpacks them)
- ``<root>/<domain>/<building>/...`` and ``<root>/<domain>/<component>/<building>/...`` (Omnidata)

Views pair by ``(building, point, view)``, never by sort order. Camera intrinsics come from
``point_info/point_P_view_V_domain_fixatedpose.json`` when present.

Fast path: :class:`TaskonomyLoader` has its workers ship the integers read from disk (``uint8``/``uint16``,
4x/2x fewer bytes than float32 across processes) and converts whole batches on the device with
:func:`decode_batch`; the result is bit-identical to collating the float views of ``dataset[i]``.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import functools
import json
import math
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset, get_worker_info

from robust.io.atomic import atomic_write_text
from robust.io.png import DataError, read_png, write_png
from robust.tasks import Domain, get_domain, list_domains, mask_from_depth

RAW_DTYPES = (torch.uint8, torch.uint16)
"""Dtypes of undecoded (on-disk) values in a raw sample; no canonical domain uses them."""

FILE_RE = re.compile(r"point_(\d+)_view_(\d+)_domain_([A-Za-z0-9_]+)\.(png|json)$")
POINT_INFO = "point_info"


@dataclass(frozen=True, order=True)
class ViewKey:
    """Identity of one view: building (``""`` for a flat root), fixation point and view index."""

    building: str
    point: int
    view: int

    def file_name(self, suffix: str, ext: str = "png") -> str:
        return f"point_{self.point}_view_{self.view}_domain_{suffix}.{ext}"


def _domain_of_suffix(suffix: str) -> tuple[str, int | None] | None:
    """Map a file-name domain suffix to (domain, light index); None for unknown suffixes."""
    if suffix == "fixatedpose":
        return POINT_INFO, None
    m = re.fullmatch(r"(.+)_(\d+)", suffix)
    if m:
        try:
            d = get_domain(m.group(1))
            if d.per_light:
                return d.name, int(m.group(2))
        except KeyError:
            pass
    try:
        return get_domain(suffix).name, None
    except KeyError:
        return None


def _building_of(rel_dir: Path, domain: str) -> str:
    """Building name from a file's folder relative to the root: drop domain folders (``b_<domain>`` -> b)."""
    names = {domain, get_domain(domain).suffix} if domain != POINT_INFO else {POINT_INFO}
    parts = []
    for part in rel_dir.parts:
        if part in names:
            continue
        for n in names:
            if part.endswith("_" + n):
                part = part[: -len(n) - 1]
                break
        parts.append(part)
    return "/".join(parts)


@dataclass
class TaskonomyIndex:
    """Every file of a Taskonomy-format root, keyed by view then domain.

    ``files[key][domain]`` is a path, or for per-light domains a ``{k: path}`` dict.
    """

    root: Path
    files: dict[ViewKey, dict[str, Path | dict[int, Path]]]

    @classmethod
    def scan(cls, root: str | os.PathLike) -> TaskonomyIndex:
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"{root}: data root does not exist or is not a folder")
        files: dict[ViewKey, dict] = defaultdict(dict)
        for dirpath, _dirs, names in os.walk(root):
            rel = Path(dirpath).relative_to(root)
            for name in names:
                m = FILE_RE.search(name)
                if not m:
                    continue
                found = _domain_of_suffix(m.group(3))
                if found is None:
                    continue
                domain, light = found
                key = ViewKey(_building_of(rel, domain), int(m.group(1)), int(m.group(2)))
                path = Path(dirpath) / name
                if light is None:
                    files[key][domain] = path
                else:
                    files[key].setdefault(domain, {})[light] = path
        if not files:
            raise DataError(f"{root}: empty root: no Taskonomy files (point_P_view_V_domain_D.png) found")
        return cls(root, dict(files))

    @property
    def buildings(self) -> list[str]:
        return sorted({k.building for k in self.files})

    def domains(self) -> list[str]:
        return sorted({d for v in self.files.values() for d in v})

    def views(
        self, domains: Sequence[str], buildings: Iterable[str] | None = None, strict: bool = True
    ) -> list[ViewKey]:
        """Sorted views that have every domain in ``domains``.

        ``strict=True`` raises :class:`DataError` naming the first view that lacks a domain.
        """
        wanted = set(buildings) if buildings is not None else None
        if wanted is not None and (unknown := wanted - set(self.buildings)):
            raise DataError(f"{self.root}: buildings not found: {sorted(unknown)}")
        keys = []
        for key in sorted(self.files):
            if wanted is not None and key.building not in wanted:
                continue
            have = self.files[key]
            missing = [d for d in domains if d not in have]
            if missing:
                if strict:
                    some = next(iter(have.values()))
                    some = next(iter(some.values())) if isinstance(some, dict) else some
                    raise DataError(f"{some}: missing domain {missing[0]!r} for view {key} under {self.root}")
                continue
            keys.append(key)
        return keys


def read_split(path: str | os.PathLike, split: str) -> list[str]:
    """Buildings flagged 1 in column ``split`` of a Taskonomy split CSV (``id,train,val,test``).

    The official files use CR-only line endings; universal newlines handle them.
    """
    path = Path(path)
    with open(path, newline=None) as f:
        rows = list(csv.DictReader(f.read().splitlines()))
    if not rows or split not in rows[0]:
        raise DataError(f"{path}: split CSV has no column {split!r} (columns: {list(rows[0]) if rows else []})")
    return [r["id"] for r in rows if r[split].strip() == "1"]


def intrinsics_from_fov(fov_rad: float, width: int, height: int) -> torch.Tensor:
    """Pinhole ``(3,3)`` intrinsics in pixels for a horizontal field of view; principal point at the centre."""
    f = (width / 2.0) / math.tan(fov_rad / 2.0)
    return torch.tensor([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]], dtype=torch.float32)


def read_point_info(path: str | os.PathLike) -> dict:
    """Load a ``fixatedpose`` JSON, checking the fields the reader needs."""
    path = Path(path)
    try:
        info = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: unreadable point_info JSON ({e})") from e
    for k in ("field_of_view_rads", "resolution"):
        if k not in info:
            raise DataError(f"{path}: point_info lacks field {k!r}")
    return info


@functools.cache
def _raw_domain(name: str) -> Domain:
    """``name`` with an identity codec: ``decode`` then lays out channels as the registry does, keeping the integers."""
    d = get_domain(name)
    return dataclasses.replace(d, codec=dataclasses.replace(d.codec, decode=_writable_tensor))


def _writable_tensor(a: np.ndarray) -> torch.Tensor:
    """``a`` as a tensor; PIL's arrays are read-only and are copied (a tensor must own writable memory)."""
    return torch.from_numpy(a if a.flags.writeable else a.copy())


def read_domain(paths: Path | dict[int, Path], domain: Domain, raw: bool = False) -> torch.Tensor:
    """Read and decode one domain of one view (per-light domains stack their files in k order).

    ``raw=True`` keeps the on-disk integers (``uint8``/``uint16``) in the canonical layout; :func:`decode_values`
    converts them later.
    """
    layout = _raw_domain(domain.name) if raw else domain
    if isinstance(paths, dict):
        arrays = [read_png(paths[k], domain.codec.bit_depth) for k in sorted(paths)]
        shapes = {a.shape[:2] for a in arrays}
        if len(shapes) > 1:
            raise DataError(f"{paths[min(paths)]}: mismatched sizes across {domain.name} files: {sorted(shapes)}")
        return torch.cat([layout.decode(a) for a in arrays], dim=0)
    return layout.decode(read_png(paths, domain.codec.bit_depth))


@functools.cache
def _lookup_table(name: str, device: torch.device) -> torch.Tensor:
    """The registry's decode of every on-disk value of ``name`` (codecs map each integer on its own)."""
    codec = get_domain(name).codec
    values = np.arange(2**codec.bit_depth, dtype=np.uint8 if codec.bit_depth == 8 else np.uint16)
    return codec.decode(values).to(device)


def decode_values(raw: torch.Tensor, name: str) -> torch.Tensor:
    """Canonical values of on-disk integers of domain ``name``, any shape, on ``raw``'s device.

    The registry's decode is elementwise: on the CPU it runs on the whole batch at once; elsewhere a lookup in
    a table that it made, bit-identical to it (a division on the GPU may become a multiplication by the
    reciprocal, which is not).
    """
    if raw.dtype not in RAW_DTYPES:
        raise TypeError(f"{name}: expected on-disk uint8/uint16 values, got {raw.dtype}")
    name = get_domain(name).name
    if raw.device.type == "cpu":
        return get_domain(name).codec.decode(raw.numpy())
    return _decode_by_table(raw, name)


def _decode_by_table(raw: torch.Tensor, name: str) -> torch.Tensor:
    """``decode_values`` off the CPU: gather from the registry-made table on ``raw``'s device."""
    return _lookup_table(name, raw.device).index_select(0, raw.reshape(-1).int()).view(raw.shape)


def decode_batch(batch: dict, device: str | torch.device | None = None) -> dict:
    """Canonical float batch from a batch of raw views (see :class:`TaskonomyLoader`), on ``device``.

    ``uint8``/``uint16`` tensors are decoded after the transfer (pinned host memory moves asynchronously); other
    tensors (already canonical) and ``"key"`` pass through. Equals ``collate_views`` of the float views bit for bit.
    """
    out = {}
    for name, value in batch.items():
        if not isinstance(value, torch.Tensor):
            out[name] = value
            continue
        value = value.to(device or value.device, non_blocking=value.is_pinned())
        out[name] = decode_values(value, name) if value.dtype in RAW_DTYPES else value
    return out


@functools.cache
def _valid_depth_table(name: str) -> np.ndarray:
    """``mask_valid`` of every raw value of a depth domain, ``(65536,)`` bool."""
    return mask_from_depth(_lookup_table(name, torch.device("cpu"))).numpy()


def _resize(t: torch.Tensor, size: tuple[int, int], domain: Domain) -> torch.Tensor:
    if tuple(t.shape[-2:]) == size:
        return t
    x = t.unsqueeze(0) if t.dim() == 3 else t[None, None]
    if domain.interpolation == "bilinear":
        y = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    else:
        y = F.interpolate(x.float(), size=size, mode="nearest-exact").to(t.dtype)
    return y[0] if t.dim() == 3 else y[0, 0]


@dataclass
class ResizeCrop:
    """Resize the shorter side to ``size`` then crop ``crop`` (square), identically for every domain.

    ``mode``: ``center`` or ``random`` crop; random crops draw from ``seed`` and the view index, so an
    epoch is reproducible. Intrinsics follow the same scale and offset.
    """

    size: int | None = None
    crop: int | None = None
    mode: str = "center"
    seed: int = 0

    def resized(self, h: int, w: int) -> tuple[int, int]:
        """Size ``(h, w)`` after the resize step (before the crop)."""
        if self.size is None:
            return h, w
        s = self.size / min(h, w)
        return max(1, round(h * s)), max(1, round(w * s))

    def __call__(self, sample: dict[str, torch.Tensor], index: int) -> dict[str, torch.Tensor]:
        h0, w0 = next(v.shape[-2:] for k, v in sample.items() if k != "intrinsics")
        h, w = self.resized(h0, w0)
        sy, sx = h / h0, w / w0
        y0 = x0 = 0
        ch = cw = None
        if self.crop is not None:
            ch, cw = min(self.crop, h), min(self.crop, w)
            if self.mode == "random":
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
                y0 = int(torch.randint(0, h - ch + 1, (1,), generator=g))
                x0 = int(torch.randint(0, w - cw + 1, (1,), generator=g))
            else:
                y0, x0 = (h - ch) // 2, (w - cw) // 2
        out = {}
        for name, t in sample.items():
            if name == "intrinsics":
                k = t.clone()
                k[0] *= sx
                k[1] *= sy
                k[0, 2] -= x0
                k[1, 2] -= y0
                out[name] = k
                continue
            t = _resize(t, (h, w), get_domain(name))
            if ch is not None:
                t = t[..., y0 : y0 + ch, x0 : x0 + cw]
            out[name] = t
        return out


class TaskonomyDataset(Dataset):
    """Views of a Taskonomy-format root as dicts of canonical tensors (see ``robust.tasks``).

    Args:
        root: data root (any supported layout).
        domains: domains to load; ``mask_valid`` is derived from depth when not on disk and
            ``intrinsics`` from ``point_info``.
        buildings: restrict to these buildings; ``split_csv`` + ``split`` select them from a split file.
        transform: a :class:`ResizeCrop` (or any ``(sample, index) -> sample``).
        strict: raise on views that lack a domain (default) instead of skipping them.
        raw: keep on-disk integers (``uint8``/``uint16``) where the transform is exact on them (crops,
            nearest resizing); :func:`decode_batch` decodes them. :class:`TaskonomyLoader` sets it.

    Each item also has ``"key"``: the :class:`ViewKey`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        domains: Sequence[str] = ("rgb",),
        buildings: Iterable[str] | None = None,
        split_csv: str | os.PathLike | None = None,
        split: str = "train",
        transform: ResizeCrop | None = None,
        strict: bool = True,
        index: TaskonomyIndex | None = None,
        raw: bool = False,
    ) -> None:
        self.index = index or TaskonomyIndex.scan(root)
        self.domains = [get_domain(d).name for d in domains]
        if split_csv is not None:
            listed = set(read_split(split_csv, split))
            buildings = [b for b in self.index.buildings if b in listed or b.split("/")[-1] in listed]
        needed = [d for d in self.domains if d not in ("mask_valid", "intrinsics")]
        if "intrinsics" in self.domains:
            needed.append(POINT_INFO)
        derive_mask = "mask_valid" in self.domains and "mask_valid" not in self.index.domains()
        if derive_mask and not any(d.startswith("depth") for d in needed):
            raise DataError(f"{self.index.root}: mask_valid is derived from depth: request a depth domain too")
        self.keys = self.index.views(needed, buildings, strict=strict)
        if not self.keys:
            raise DataError(f"{self.index.root}: no view has all of {needed}")
        self.transform = transform
        self.raw = raw

    def __len__(self) -> int:
        return len(self.keys)

    def as_raw(self) -> TaskonomyDataset:
        """A shallow copy that yields raw views (``raw=True``), sharing the index."""
        out = copy.copy(self)
        out.raw = True
        return out

    def load(self, key: ViewKey, raw: bool = False) -> dict[str, torch.Tensor]:
        """One view at its stored size; ``raw=True`` keeps on-disk integers (``mask_valid`` is bool either way)."""
        files = self.index.files[key]
        sample: dict[str, torch.Tensor] = {}
        for name in self.domains:
            if name == "intrinsics" or (name == "mask_valid" and name not in files):
                continue
            sample[name] = read_domain(files[name], get_domain(name), raw=raw and name != "mask_valid")
        sizes = {tuple(t.shape[-2:]) for t in sample.values()}
        if len(sizes) > 1:
            detail = ", ".join(f"{k} {tuple(v.shape[-2:])}" for k, v in sample.items())
            raise DataError(f"{self.index.root}: mismatched sizes for view {key}: {detail}")
        if "mask_valid" in self.domains and "mask_valid" not in sample:
            name = next(d for d in sample if d.startswith("depth"))
            depth = sample[name]
            if depth.dtype in RAW_DTYPES:
                sample["mask_valid"] = torch.from_numpy(_valid_depth_table(name)[depth.numpy()])
            else:
                sample["mask_valid"] = mask_from_depth(depth)
        if "intrinsics" in self.domains:
            info = read_point_info(files[POINT_INFO])
            h, w = next(iter(sizes))
            sample["intrinsics"] = intrinsics_from_fov(float(info["field_of_view_rads"]), w, h)
        return sample

    def _decode_inexact(self, sample: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Decode the raw tensors that the transform would not treat exactly as integers.

        :class:`ResizeCrop` is exact on integers when it only crops or resizes by nearest neighbour; bilinear
        resizing and any other transform get decoded tensors, as in the float path.
        """
        if self.transform is None:
            return sample
        if isinstance(self.transform, ResizeCrop):
            h, w = next(v.shape[-2:] for k, v in sample.items() if k != "intrinsics")
            if self.transform.resized(h, w) == (h, w):
                return sample
            inexact = {k for k in sample if get_domain(k).interpolation == "bilinear"}
        else:
            inexact = set(sample)
        return {k: decode_values(v, k) if k in inexact and v.dtype in RAW_DTYPES else v for k, v in sample.items()}

    def __getitem__(self, i: int) -> dict:
        sample = self.load(self.keys[i], raw=self.raw)
        if self.raw:
            sample = self._decode_inexact(sample)
        if self.transform is not None:
            sample = self.transform(sample, i)
        sample["key"] = self.keys[i]
        return sample


def collate_views(samples: list[dict]) -> dict:
    """Stack per-view tensors into a batch; ``"key"`` becomes a list of :class:`ViewKey`.

    In a DataLoader worker the batch is stacked straight into shared memory, as ``default_collate`` does (no
    extra copy on the way out).
    """
    in_worker = get_worker_info() is not None
    out: dict = {"key": [s["key"] for s in samples]}
    for name in samples[0]:
        if name == "key":
            continue
        parts = [s[name] for s in samples]
        dest = None
        if in_worker:
            storage = parts[0]._typed_storage()._new_shared(len(parts) * parts[0].numel(), device=parts[0].device)
            dest = parts[0].new(storage).resize_(len(parts), *parts[0].shape)
        out[name] = torch.stack(parts, out=dest)
    return out


class TaskonomyLoader:
    """Batches of canonical tensors on ``device``, with workers that ship raw integers (the fast path).

    Same batches as ``DataLoader(dataset, collate_fn=collate_views)`` (bit-identical), but workers send the
    on-disk ``uint8``/``uint16`` values and :func:`decode_batch` converts whole batches after the transfer
    (pinned, non-blocking on CUDA). Workers persist across epochs.

    Args:
        dataset: a :class:`TaskonomyDataset` or a ``Subset`` of one.
        batch_size: views per batch.
        device: where batches are decoded and returned.
        num_workers, shuffle, drop_last, **loader_kw: as for ``torch.utils.data.DataLoader`` (``generator``,
            ``worker_init_fn``, ``prefetch_factor``, ...).
    """

    def __init__(
        self,
        dataset: TaskonomyDataset | Subset,
        batch_size: int = 16,
        device: str | torch.device = "cpu",
        num_workers: int = 2,
        shuffle: bool = False,
        drop_last: bool = False,
        **loader_kw,
    ) -> None:
        if isinstance(dataset, Subset) and isinstance(dataset.dataset, TaskonomyDataset):
            raw = Subset(dataset.dataset.as_raw(), dataset.indices)
        elif isinstance(dataset, TaskonomyDataset):
            raw = dataset.as_raw()
        else:
            raise TypeError(f"TaskonomyLoader needs a TaskonomyDataset (or a Subset of one), got {type(dataset)}")
        self.device = torch.device(device)
        self.loader = DataLoader(
            raw,
            batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=num_workers,
            collate_fn=collate_views,
            pin_memory=self.device.type == "cuda",
            persistent_workers=num_workers > 0,
            **loader_kw,
        )

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict]:
        for batch in self.loader:
            yield decode_batch(batch, self.device)


def domain_path(root: str | os.PathLike, key: ViewKey, domain: str, light: int | None = None) -> Path:
    """Where ``domain`` of ``key`` lives in the ``<root>/[<building>/]<domain>/`` layout."""
    d = get_domain(domain) if domain != POINT_INFO else None
    suffix = "fixatedpose" if d is None else d.suffix + ("" if light is None else f"_{light}")
    folder = Path(root) / key.building if key.building else Path(root)
    ext = "json" if d is None else "png"
    return folder / (d.name if d else POINT_INFO) / key.file_name(suffix, ext)


def write_view(
    root: str | os.PathLike, key: ViewKey, sample: dict[str, torch.Tensor], point_info: dict | None = None
) -> list[Path]:
    """Write one view's domains (canonical ``(C,H,W)`` tensors) in Taskonomy format, each file atomically.

    ``intrinsics`` is not written as a PNG; pass ``point_info`` to write the ``fixatedpose`` JSON.
    """
    written = []
    for name, t in sample.items():
        if name in ("key", "intrinsics"):
            continue
        d = get_domain(name)
        if d.per_light:
            for k in range(t.shape[0]):
                written.append(write_png(domain_path(root, key, name, k), d.encode(t[k : k + 1])))
        else:
            written.append(write_png(domain_path(root, key, name), d.encode(t)))
    if point_info is not None:
        path = domain_path(root, key, POINT_INFO)
        written.append(atomic_write_text(path, json.dumps(point_info, indent=1, default=_json_default)))
    return written


def write_batch(root: str | os.PathLike, batch: dict) -> list[Path]:
    """Write every view of a collated batch (needs ``batch["key"]``)."""
    keys = batch["key"]
    written = []
    for i, key in enumerate(keys):
        written += write_view(root, key, {k: v[i] for k, v in batch.items() if k != "key"})
    return written


def _json_default(o):
    if isinstance(o, (np.generic, torch.Tensor)):
        return o.tolist()
    raise TypeError(type(o))


__all__ = [
    "POINT_INFO",
    "DataError",
    "ResizeCrop",
    "TaskonomyDataset",
    "TaskonomyIndex",
    "TaskonomyLoader",
    "ViewKey",
    "collate_views",
    "decode_batch",
    "decode_values",
    "domain_path",
    "intrinsics_from_fov",
    "list_domains",
    "read_domain",
    "read_point_info",
    "read_split",
    "write_batch",
    "write_view",
]
