"""ImageNet-C fog compiled for the CPU: ``corruptions3d.functional.weather.plasma_fog`` in numba.

Per image, one pass per diamond-square level draws its uniforms in place from the image's counter-based stream
(:func:`corruptions3d.kernels.random_cpu.splitmix64`, the same numbers as the torch ops) and updates the plasma
points in the torch ops' float32 operations and order; one more pass blends the plasma into the image and clips.
Bit-identical to the torch ops, without a batch of per-level temporaries. Images run on the threads of
:func:`corruptions3d.parallel.parallel_map`.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from corruptions3d import memory
from corruptions3d.functional import weather
from corruptions3d.kernels.random_cpu import splitmix64
from corruptions3d.parallel import parallel_map

__all__ = ["plasma_fog"]


@numba.njit(nogil=True, cache=True, inline="always")
def _signed(key, j):  # pragma: no cover
    """``float32(2u - 1)`` of uniform ``j`` of stream ``key``."""
    return np.float32(np.float64(splitmix64(key, j) >> np.uint64(11)) * 2.0**-53 * 2 - 1)


@numba.njit(nogil=True, cache=True)
def _plasma(key, decay, m):  # pragma: no cover
    """Fill ``m`` ``(S,S)`` float32 with the normalised plasma of stream ``key`` and wibble decay ``decay``."""
    size = m.shape[0]
    m[:] = 0
    four = np.float32(4)
    wibble = np.float32(100)
    step, j = size, 0
    while step >= 2:
        half, n = step // 2, size // step
        ww = wibble * wibble
        for i in range(n):  # squares: the mean of the 4 corners
            i1 = (i + 1) % n
            for k in range(n):
                k1 = (k + 1) % n
                c00, c10 = m[i * step, k * step], m[i1 * step, k * step]
                c01, c11 = m[i * step, k1 * step], m[i1 * step, k1 * step]
                m[i * step + half, k * step + half] = ((c00 + c10) + (c01 + c11)) / four + ww * _signed(key, j)
                j += 1
        for i in range(n):  # diamonds between horizontally adjacent corners
            i0 = (i - 1) % n
            for k in range(n):
                k1 = (k + 1) % n
                dr, dr_up = m[i * step + half, k * step + half], m[i0 * step + half, k * step + half]
                total = ((dr + dr_up) + m[i * step, k * step]) + m[i * step, k1 * step]
                m[i * step, k * step + half] = total / four + ww * _signed(key, j)
                j += 1
        for i in range(n):  # diamonds between vertically adjacent corners
            i1 = (i + 1) % n
            for k in range(n):
                k0 = (k - 1) % n
                dr, dr_left = m[i * step + half, k * step + half], m[i * step + half, k0 * step + half]
                total = ((dr + dr_left) + m[i * step, k * step]) + m[i1 * step, k * step]
                m[i * step + half, k * step] = total / four + ww * _signed(key, j)
                j += 1
        step, wibble = half, wibble / decay
    low = m.min()
    top = m.max() - low
    for i in range(size):
        for k in range(size):
            m[i, k] = (m[i, k] - low) / top


@numba.njit(nogil=True, cache=True)
def _fog(x, plasma, strength, out):  # pragma: no cover
    """``out = clip((x + strength·P) · max/(max + strength))`` for ``(C,H,W)``, ``P`` the top-left H×W of
    ``plasma``."""
    peak = x.max()
    scale = peak / (peak + strength)
    zero, one = np.float32(0), np.float32(1)
    for c in range(x.shape[0]):
        for y in range(x.shape[1]):
            for j in range(x.shape[2]):
                out[c, y, j] = min(max((x[c, y, j] + strength * plasma[y, j]) * scale, zero), one)


def plasma_fog(
    rgb: torch.Tensor, keys: torch.Tensor, strength: torch.Tensor, wibble_decay: torch.Tensor
) -> torch.Tensor:
    """Compiled ``corruptions3d.functional.weather.plasma_fog``: same arguments and result (CPU float32 tensors)."""
    if rgb.dtype != torch.float32:
        return weather.plasma_fog.reference(rgb, keys, strength, wibble_decay)
    h, w = rgb.shape[-2:]
    size = weather.plasma_size(h, w)
    src = rgb.contiguous()
    out = memory.empty_like(src)
    key = keys.cpu().numpy().astype(np.uint64)
    decay, c = (t.to(torch.float32).tolist() for t in (wibble_decay, strength))

    def image(i: int) -> None:
        m = np.empty((size, size), np.float32)
        _plasma(key[i], np.float32(decay[i]), m)
        _fog(src[i].numpy(), m, np.float32(c[i]), out[i].numpy())

    parallel_map(image, range(rgb.shape[0]))
    return out
