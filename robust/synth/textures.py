"""Procedural solid textures: albedo as a function of the 3D hit point and the surface's texture.

Patterns (``Texture.pattern``): ``checker`` (3D checkerboard of cell ``scale``), ``stripes`` (bands of width
``scale`` across a per-texture direction), ``noise`` (3-octave value noise of period ``scale``, hashed from the
texture seed). Each mixes ``color_a`` and ``color_b``. The per-point loops are compiled (numba).
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

from robust.synth.scene import PATTERNS, Texture

PATTERN_CODES = {"checker": 0, "stripes": 1, "noise": 2}
assert set(PATTERN_CODES) == set(PATTERNS)
_MASK = np.uint64(0xFFFFFFFF)
_PRIMES = (np.uint64(73856093), np.uint64(19349663), np.uint64(83492791), np.uint64(2654435761))
_MIX = np.uint64(0x45D9F3B)
_SHIFT = np.uint64(16)


@numba.njit(cache=True, nogil=True)
def _hash01(h):  # pragma: no cover
    """Avalanche a lattice key (uint32 value in a uint64; products wrap mod 2³²) into a float in [0,1)."""
    h = ((h ^ (h >> _SHIFT)) * _MIX) & _MASK
    h = ((h ^ (h >> _SHIFT)) * _MIX) & _MASK
    h ^= h >> _SHIFT
    return np.float32(h & np.uint64(0xFFFFFF)) * np.float32(2**-24)


@numba.njit(cache=True, nogil=True)
def _lattice(v):  # pragma: no cover
    """``floor(v)`` as a two's-complement uint32 (in a uint64) and the smoothstep weight of ``v - floor(v)``."""
    base = np.floor(v)
    f = v - base
    return np.uint64(np.int64(base) & 0xFFFFFFFF), f * f * (3 - 2 * f)


@numba.njit(cache=True, nogil=True)
def value_noise(x, y, z, seed):  # pragma: no cover
    """Smooth value noise in [0,1] at one point (lattice units) for texture ``seed``.

    Lattice key ``ix·P0 ^ iy·P1 ^ iz·P2 ^ seed·P3`` (mod 2³²); the 8 corner values are blended trilinearly
    with smoothstep weights.
    """
    ix, fx = _lattice(x)
    iy, fy = _lattice(y)
    iz, fz = _lattice(z)
    key_s = ((np.uint64(seed) & _MASK) * _PRIMES[3]) & _MASK
    kx0 = (ix * _PRIMES[0]) & _MASK
    kx1 = (kx0 + _PRIMES[0]) & _MASK
    ky0 = (iy * _PRIMES[1]) & _MASK
    ky1 = (ky0 + _PRIMES[1]) & _MASK
    kz0 = ((iz * _PRIMES[2]) & _MASK) ^ key_s
    kz1 = ((((iz + np.uint64(1)) & _MASK) * _PRIMES[2]) & _MASK) ^ key_s
    a0, a1 = _hash01(kx0 ^ ky0 ^ kz0), _hash01(kx1 ^ ky0 ^ kz0)
    b0, b1 = _hash01(kx0 ^ ky1 ^ kz0), _hash01(kx1 ^ ky1 ^ kz0)
    c0, c1 = _hash01(kx0 ^ ky0 ^ kz1), _hash01(kx1 ^ ky0 ^ kz1)
    d0, d1 = _hash01(kx0 ^ ky1 ^ kz1), _hash01(kx1 ^ ky1 ^ kz1)
    near = a0 + fx * (a1 - a0) + fy * (b0 + fx * (b1 - b0) - (a0 + fx * (a1 - a0)))
    far = c0 + fx * (c1 - c0) + fy * (d0 + fx * (d1 - d0) - (c0 + fx * (c1 - c0)))
    return near + fz * (far - near)


@numba.njit(cache=True, nogil=True)
def mix_weight(x, y, z, pattern, scale, seed, direction):  # pragma: no cover
    """Weight of ``color_b`` in [0,1] at world point ``(x,y,z)`` m for one texture (``pattern`` code of
    :data:`PATTERN_CODES`, ``scale`` m, ``seed``, stripe ``direction`` (3,))."""
    qx, qy, qz = x / scale, y / scale, z / scale
    if pattern == 0:  # checker
        return np.float32((int(np.floor(qx + 1e-4)) + int(np.floor(qy + 1e-4)) + int(np.floor(qz + 1e-4))) & 1)
    if pattern == 1:  # stripes
        return np.float32(int(np.floor(qx * direction[0] + qy * direction[1] + qz * direction[2])) & 1)
    total = 0.0  # 3-octave value noise
    for o in range(3):
        total += value_noise(qx * 2**o, qy * 2**o, qz * 2**o, seed + o) / 2**o
    return np.float32(total / 1.75)


@numba.njit(cache=True, nogil=True)
def _albedo(points, texture_index, tex, out):  # pragma: no cover
    pattern, scale, seeds, direction, color_a, color_b = tex
    for n in range(points.shape[0]):
        t = texture_index[n]
        w = mix_weight(points[n, 0], points[n, 1], points[n, 2], pattern[t], scale[t], seeds[t], direction[t])
        for c in range(3):
            out[n, c] = color_a[t, c] * (1 - w) + color_b[t, c] * w


def texture_table(textures: Sequence[Texture]) -> tuple[np.ndarray, ...]:
    """The textures as arrays for the compiled kernels: ``(pattern code (T,), scale (T,) m, seed (T,),
    stripe direction (T,3), color_a (T,3), color_b (T,3))``."""
    pattern = np.array([PATTERN_CODES[t.pattern] for t in textures], np.int64)
    scale = np.array([t.scale for t in textures], np.float64)
    seeds = np.array([t.seed for t in textures], np.int64)
    angle = (seeds % 360) * (np.pi / 180)
    direction = np.stack([np.cos(angle), np.sin(angle), np.full_like(angle, 0.7)], axis=1)
    color_a = np.array([t.color_a for t in textures], np.float32).reshape(-1, 3)
    color_b = np.array([t.color_b for t in textures], np.float32).reshape(-1, 3)
    return pattern, scale, seeds, direction, color_a, color_b


def albedo(points: np.ndarray, texture_index: np.ndarray, textures: Sequence[Texture]) -> np.ndarray:
    """RGB albedo ``(N,3)`` float32 in [0,1] at world points ``(N,3)`` m, surface ``texture_index`` ``(N,)``."""
    out = np.empty((len(points), 3), np.float32)
    pts = np.ascontiguousarray(points, np.float64)
    _albedo(pts, np.ascontiguousarray(texture_index, np.int64), texture_table(textures), out)
    return out
