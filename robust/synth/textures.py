"""Procedural solid textures: albedo as a function of the 3D hit point and the surface's texture, vectorised.

Patterns (``Texture.pattern``): ``checker`` (3D checkerboard of cell ``scale``), ``stripes`` (bands of width
``scale`` across a per-texture direction), ``noise`` (3-octave value noise of period ``scale``, hashed from the
texture seed). Each mixes ``color_a`` and ``color_b``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from robust.synth.scene import PATTERNS, Texture

_M32 = np.uint64(0xFFFFFFFF)


def _hash01(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """Deterministic pseudo-random float in [0,1) per integer lattice point and seed (all ``(N,)`` int64)."""
    h = (
        ix.astype(np.uint64) * np.uint64(73856093)
        ^ iy.astype(np.uint64) * np.uint64(19349663)
        ^ iz.astype(np.uint64) * np.uint64(83492791)
        ^ seed.astype(np.uint64) * np.uint64(2654435761)
    ) & _M32
    h = ((h ^ (h >> np.uint64(16))) * np.uint64(0x45D9F3B)) & _M32
    h = ((h ^ (h >> np.uint64(16))) * np.uint64(0x45D9F3B)) & _M32
    h ^= h >> np.uint64(16)
    return (h & np.uint64(0xFFFFFF)).astype(np.float32) / np.float32(2**24)


def value_noise(p: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """Smooth value noise in [0,1] at points ``p`` ``(N,3)`` (lattice units), one seed per point ``(N,)``."""
    base = np.floor(p)
    f = (p - base).astype(np.float32)
    f = f * f * (3 - 2 * f)  # smoothstep
    i = base.astype(np.int64)
    out = np.zeros(len(p), np.float32)
    for corner in range(8):
        o = [(corner >> a) & 1 for a in range(3)]
        w = np.prod([f[:, a] if o[a] else 1 - f[:, a] for a in range(3)], axis=0)
        out += w * _hash01(i[:, 0] + o[0], i[:, 1] + o[1], i[:, 2] + o[2], seed)
    return out


def albedo(points: np.ndarray, texture_index: np.ndarray, textures: Sequence[Texture]) -> np.ndarray:
    """RGB albedo ``(N,3)`` float32 in [0,1] at world points ``(N,3)`` m, surface ``texture_index`` ``(N,)``."""
    table = {
        "pattern": np.array([PATTERNS.index(t.pattern) for t in textures]),
        "a": np.array([t.color_a for t in textures], np.float32),
        "b": np.array([t.color_b for t in textures], np.float32),
        "scale": np.array([t.scale for t in textures], np.float64),
        "seed": np.array([t.seed for t in textures], np.int64),
    }
    seed = table["seed"][texture_index]
    q = points.astype(np.float64) / table["scale"][texture_index][:, None]
    angle = (seed % 360) * (np.pi / 180)
    direction = np.stack([np.cos(angle), np.sin(angle), np.full_like(angle, 0.7)], axis=1)
    pattern = table["pattern"][texture_index]
    mix = np.empty(len(points), np.float32)
    for k, name in enumerate(PATTERNS):
        sel = pattern == k
        qk = q[sel]
        if name == "checker":
            mix[sel] = np.floor(qk + 1e-4).astype(np.int64).sum(1) & 1
        elif name == "stripes":
            mix[sel] = np.floor((qk * direction[sel]).sum(1)).astype(np.int64) & 1
        else:
            mix[sel] = sum(value_noise(qk * 2**o, seed[sel] + o) / 2**o for o in range(3)) / 1.75
    mix = mix[:, None]
    return table["a"][texture_index] * (1 - mix) + table["b"][texture_index] * mix
