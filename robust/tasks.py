"""The one registry of domains: channels, Taskonomy file encodings, invalid values, losses, metrics.

Every other module looks a domain up here (``get_domain("depth_euclidean").decode(array)``); nothing else
re-implements a decode. In memory every domain follows the data contract of ``DESIGN.md``:

========================  ===================================================  ==============================
domain                    in memory                                            on disk (Taskonomy)
========================  ===================================================  ==============================
rgb                       float32 (3,H,W) in [0,1]                             8-bit RGB PNG
depth_euclidean/zbuffer   float32 (1,H,W) metres; invalid = 65535/512 m        16-bit PNG, value/512 m
mask_valid                bool (1,H,W)                                         8-bit PNG, 255 = valid
normal                    float32 (3,H,W), camera frame (+x right, +y down,    8-bit RGB, v/127.5 - 1
                          +z towards the viewer)
reshading                 float32 (1,H,W) in [0,1]                             8-bit gray (stored as RGB)
relighting                float32 (K,H,W) in [0,1]                             K files ``relighting_{k}``
segment_semantic          int64 (H,W); 255 = ignore (disk 0 = "uncertain")     8-bit PNG, ``segmentsemantic``
edge_texture/occlusion,   float32 (1,H,W) in [0,1]                             16-bit gray, v/65535
keypoints2d/3d
principal_curvature       float32 (2,H,W) in [0,1] (k1, k2; 0.5 = flat)        8-bit RGB, blue unused
intrinsics                float32 (3,3) pixels                                 ``point_info`` JSON
========================  ===================================================  ==============================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

DEPTH_SCALE = 512.0
"""Taskonomy depth unit: one 16-bit step is 1/512 m."""
INVALID_DEPTH_RAW = 65535
INVALID_DEPTH = INVALID_DEPTH_RAW / DEPTH_SCALE
"""Depth (metres) that invalid pixels decode to; ``mask_valid`` is ``depth < INVALID_DEPTH``."""
IGNORE_INDEX = 255
"""Label that losses and metrics ignore in ``segment_semantic``."""


@dataclass(frozen=True)
class Codec:
    """How one on-disk array maps to a canonical tensor and back (bit-exact round trip)."""

    bit_depth: int
    decode: Callable[[np.ndarray], torch.Tensor]
    encode: Callable[[torch.Tensor], np.ndarray]


def _unit(scale: float, dtype: type) -> Codec:
    bits = 8 if dtype is np.uint8 else 16

    def decode(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.float32) / np.float32(scale))

    def encode(t: torch.Tensor) -> np.ndarray:
        v = (t.detach().float().cpu() * scale).round().clamp(0, np.iinfo(dtype).max)
        return v.numpy().astype(dtype)

    return Codec(bits, decode, encode)


def _depth_codec() -> Codec:
    def decode(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.float32) / np.float32(DEPTH_SCALE))

    def encode(t: torch.Tensor) -> np.ndarray:
        t = t.detach().float().cpu()
        v = (t * DEPTH_SCALE).round().clamp(0, INVALID_DEPTH_RAW)
        v = torch.where(torch.isfinite(t), v, torch.full_like(v, INVALID_DEPTH_RAW))
        return v.numpy().astype(np.uint16)

    return Codec(16, decode, encode)


def _normal_codec() -> Codec:
    def decode(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.float32) / np.float32(127.5) - 1.0)

    def encode(t: torch.Tensor) -> np.ndarray:
        return ((t.detach().float().cpu() + 1.0) * 127.5).round().clamp(0, 255).numpy().astype(np.uint8)

    return Codec(8, decode, encode)


def _label_codec() -> Codec:
    def decode(a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(a.astype(np.int64))
        return torch.where(t == 0, IGNORE_INDEX, t)

    def encode(t: torch.Tensor) -> np.ndarray:
        t = t.detach().cpu()
        return torch.where(t == IGNORE_INDEX, 0, t).clamp(0, 255).numpy().astype(np.uint8)

    return Codec(8, decode, encode)


def _mask_codec() -> Codec:
    def decode(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a > 0)

    def encode(t: torch.Tensor) -> np.ndarray:
        return (t.detach().cpu().numpy() > 0).astype(np.uint8) * 255

    return Codec(8, decode, encode)


@dataclass(frozen=True)
class Domain:
    """One domain of the data contract.

    ``decode`` takes the array read from one PNG, ``(H,W)`` or ``(H,W,C)``, and returns the canonical
    ``(C,H,W)`` tensor (``(H,W)`` for labels); ``encode`` is its exact inverse on canonical values.
    """

    name: str
    channels: int
    codec: Codec | None
    disk_channels: int = 1
    """Channels in the PNG: 1 (gray), 3 (RGB, or gray stored in 3 identical channels)."""
    file_domain: str = ""
    """Domain suffix in file names, if it differs from ``name`` (``segmentsemantic``)."""
    invalid: float | None = None
    interpolation: str = "nearest"
    """``bilinear`` for smooth signals, ``nearest`` for geometry, labels and masks."""
    loss: str = "l1"
    metrics: tuple[str, ...] = ()
    per_light: bool = False
    """Stored as one file per channel, ``{file_domain}_{k}`` (relighting)."""
    aliases: tuple[str, ...] = field(default=())

    @property
    def suffix(self) -> str:
        return self.file_domain or self.name

    @property
    def on_disk(self) -> bool:
        return self.codec is not None

    def decode(self, array: np.ndarray) -> torch.Tensor:
        """Decode one on-disk array (gray-in-RGB keeps the first channel)."""
        if self.codec is None:
            raise ValueError(f"domain {self.name!r} has no PNG encoding")
        if self.per_light or self.channels == 1 or self.name == "segment_semantic" or self.name == "mask_valid":
            a = array[..., 0] if array.ndim == 3 else array
            t = self.codec.decode(np.ascontiguousarray(a))
            return t if self.name == "segment_semantic" else t.unsqueeze(0)
        # Transpose the integer array (cheap) rather than a float tensor (a strided float copy).
        return self.codec.decode(np.ascontiguousarray(np.moveaxis(array, -1, 0)[: self.channels]))

    def encode(self, tensor: torch.Tensor) -> np.ndarray:
        """Encode a canonical ``(C,H,W)`` tensor (``(H,W)`` for labels) to the on-disk array."""
        if self.codec is None:
            raise ValueError(f"domain {self.name!r} has no PNG encoding")
        a = self.codec.encode(tensor)
        if self.name != "segment_semantic":
            a = a[0] if a.shape[0] == 1 else np.moveaxis(a, 0, -1)
        if self.disk_channels == 3 and a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=-1)
        elif self.disk_channels == 3 and a.shape[-1] < 3:
            a = np.concatenate([a, np.zeros((*a.shape[:2], 3 - a.shape[-1]), a.dtype)], axis=-1)
        return np.ascontiguousarray(a)


_DOMAINS: dict[str, Domain] = {}
_ALIASES: dict[str, str] = {}


def register_domain(domain: Domain) -> Domain:
    """Add a domain to the registry (one entry per domain)."""
    if domain.name in _DOMAINS:
        raise ValueError(f"domain {domain.name!r} is already registered")
    _DOMAINS[domain.name] = domain
    for alias in (domain.suffix, *domain.aliases):
        _ALIASES[alias] = domain.name
    return domain


def get_domain(name: str) -> Domain:
    """Look a domain up by name, file suffix or alias; raises ``KeyError`` listing the known ones."""
    key = _ALIASES.get(name, name)
    if key not in _DOMAINS:
        raise KeyError(f"unknown domain {name!r}; known domains: {', '.join(list_domains())}")
    return _DOMAINS[key]


def list_domains(on_disk: bool | None = None) -> list[str]:
    """Names of all registered domains (``on_disk=True``: only those stored as PNG)."""
    return [n for n, d in _DOMAINS.items() if on_disk is None or d.on_disk == on_disk]


_U8, _U16 = _unit(255.0, np.uint8), _unit(65535.0, np.uint16)
_DEPTH_METRICS = ("l1", "abs_rel", "delta1")
for _d in (
    Domain("rgb", 3, _U8, disk_channels=3, interpolation="bilinear", metrics=("psnr",)),
    Domain("depth_euclidean", 1, _depth_codec(), invalid=INVALID_DEPTH, metrics=_DEPTH_METRICS),
    Domain("depth_zbuffer", 1, _depth_codec(), invalid=INVALID_DEPTH, metrics=_DEPTH_METRICS),
    Domain("mask_valid", 1, _mask_codec(), loss="none"),
    Domain(
        "normal",
        3,
        _normal_codec(),
        disk_channels=3,
        invalid=0.0,
        aliases=("normals",),
        metrics=("angle_mean", "angle_median", "within_11.25", "within_22.5", "within_30"),
    ),
    Domain("reshading", 1, _U8, disk_channels=3, interpolation="bilinear", metrics=("l1",)),
    Domain("relighting", 10, _U8, disk_channels=3, interpolation="bilinear", per_light=True, metrics=("l1",)),
    Domain(
        "segment_semantic",
        1,
        _label_codec(),
        file_domain="segmentsemantic",
        invalid=IGNORE_INDEX,
        loss="cross_entropy",
        metrics=("miou",),
    ),
    Domain("edge_texture", 1, _U16, interpolation="bilinear", metrics=("l1",)),
    Domain("edge_occlusion", 1, _U16, interpolation="bilinear", metrics=("l1",)),
    Domain("principal_curvature", 2, _U8, disk_channels=3, interpolation="bilinear", metrics=("l1",)),
    Domain("keypoints2d", 1, _U16, interpolation="bilinear", metrics=("l1",)),
    Domain("keypoints3d", 1, _U16, interpolation="bilinear", metrics=("l1",)),
    Domain("intrinsics", 9, None, loss="none"),
):
    register_domain(_d)


def mask_from_depth(depth: torch.Tensor) -> torch.Tensor:
    """``mask_valid`` for depth in metres, any shape: finite, positive and not the 65535 code."""
    return torch.isfinite(depth) & (depth > 0) & (depth < INVALID_DEPTH - 0.5 / DEPTH_SCALE)
