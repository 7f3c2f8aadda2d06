"""Procedural solid textures: albedo as a function of the 3D hit point and the surface's texture, vectorised.

Patterns (``Texture.pattern``): ``checker`` (3D checkerboard of cell ``scale``), ``stripes`` (bands of width
``scale`` across a per-texture direction), ``noise`` (3-octave value noise of period ``scale``, hashed from the
texture seed). Each mixes ``color_a`` and ``color_b``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from robust.synth.scene import PATTERNS, Texture

_PRIMES = (np.uint32(73856093), np.uint32(19349663), np.uint32(83492791), np.uint32(2654435761))
_MIX = np.uint32(0x45D9F3B)


def _hash01(h: np.ndarray) -> np.ndarray:
    """Avalanche a combined lattice key ``(N,)`` uint32 into a float in [0,1) (uint32 arithmetic wraps mod 2³²)."""
    h = (h ^ (h >> 16)) * _MIX
    h = (h ^ (h >> 16)) * _MIX
    h ^= h >> 16
    return (h & np.uint32(0xFFFFFF)).astype(np.float32) * np.float32(2**-24)


def value_noise(p: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """Smooth value noise in [0,1] at points ``p`` ``(N,3)`` (lattice units), one seed per point ``(N,)``.

    Lattice key ``ix·P0 ^ iy·P1 ^ iz·P2 ^ seed·P3`` (mod 2³²); the 8 corner values are blended trilinearly
    with smoothstep weights.
    """
    base = np.floor(p)
    f = (p - base).astype(np.float32)
    f = f * f * (3 - 2 * f)  # smoothstep
    i = base.astype(np.int64).astype(np.uint32)  # two's complement wrap, as the hash's mod-2³² products need
    key_s = seed.astype(np.uint32) * _PRIMES[3]
    kx = [i[:, 0] * _PRIMES[0]]
    kx.append(kx[0] + _PRIMES[0])
    ky = [i[:, 1] * _PRIMES[1]]
    ky.append(ky[0] + _PRIMES[1])
    kz = [i[:, 2] * _PRIMES[2] ^ key_s]
    kz.append((i[:, 2] + np.uint32(1)) * _PRIMES[2] ^ key_s)
    fx, fy, fz = f[:, 0], f[:, 1], f[:, 2]
    planes = []
    for z in kz:
        rows = []
        for y in ky:
            yz = y ^ z
            v0, v1 = _hash01(kx[0] ^ yz), _hash01(kx[1] ^ yz)
            rows.append(v0 + fx * (v1 - v0))
        planes.append(rows[0] + fy * (rows[1] - rows[0]))
    return planes[0] + fz * (planes[1] - planes[0])


def albedo(points: np.ndarray, texture_index: np.ndarray, textures: Sequence[Texture]) -> np.ndarray:
    """RGB albedo ``(N,3)`` float32 in [0,1] at world points ``(N,3)`` m, surface ``texture_index`` ``(N,)``."""
    pattern = np.array([PATTERNS.index(t.pattern) for t in textures])
    scale = np.array([t.scale for t in textures], np.float64)
    seeds = np.array([t.seed for t in textures], np.int64)
    angle = (seeds % 360) * (np.pi / 180)
    direction = np.stack([np.cos(angle), np.sin(angle), np.full_like(angle, 0.7)], axis=1)
    mix = np.empty(len(points), np.float32)
    for k, name in enumerate(PATTERNS):
        sel = np.flatnonzero(pattern[texture_index] == k)
        tex = texture_index[sel]
        q = points[sel].astype(np.float64) / scale[tex][:, None]
        if name == "checker":
            mix[sel] = np.floor(q + 1e-4).astype(np.int64).sum(1) & 1
        elif name == "stripes":
            d = direction[tex]
            mix[sel] = np.floor(q[:, 0] * d[:, 0] + q[:, 1] * d[:, 1] + q[:, 2] * d[:, 2]).astype(np.int64) & 1
        else:
            mix[sel] = sum(value_noise(q * 2**o, seeds[tex] + o) / 2**o for o in range(3)) / 1.75
    mix = mix[:, None]
    color_a = np.array([t.color_a for t in textures], np.float32)[texture_index]
    color_b = np.array([t.color_b for t in textures], np.float32)[texture_index]
    return color_a * (1 - mix) + color_b * mix
