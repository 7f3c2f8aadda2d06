"""ImageNet-C defocus blur's disk filter compiled for the CPU: ``corruptions3d.functional.blur.disk_filter``.

The reference correlates with an anti-aliased disk ``K`` (a binary disk blurred by a 3- or 5-tap Gaussian inside
its own grid), 17×17 to 21×21 dense taps per pixel. Here ``K = G ⊛ D + C``: the disk ``D`` is a sum of column
spans, each read as the difference of two running column sums (two loads per column of the disk instead of a tap
per pixel), the Gaussian ``G`` runs separably on that, and ``C``, the few taps where OpenCV's reflect-101 inside
the kernel grid differs from the untruncated blur (only disks that touch the grid's edge have any), is added as
sparse taps. The image is reflect-101 padded once per plane. Images run on the threads of
:func:`corruptions3d.parallel.parallel_map`. Results equal the FFT correlation to float rounding (the running sums
carry float32 rounding of their magnitude, ~H·1e-7).
"""

from __future__ import annotations

from functools import lru_cache

import numba
import numpy as np
import torch
import torch.nn.functional as F

from corruptions3d import filters, memory
from corruptions3d.functional import blur
from corruptions3d.kernels.rows import axpy
from corruptions3d.parallel import parallel_map

__all__ = ["disk_filter"]


@lru_cache(maxsize=64)
def disk_plan(radius: int, alias_sigma: float) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """The factors of :func:`corruptions3d.functional.blur.disk_kernel`: column half-heights ``(2r+1,)`` int64 of
    the disk, its weight ``1/area``, the Gaussian taps ``(k,)`` and the correction taps ``(T, 3)`` float64 rows
    ``(dy, dx, weight)``."""
    disk, g = blur.disk_pieces(radius, alias_sigma)
    n, gr = disk.shape[0] // 2, g.shape[0] // 2
    full = F.conv2d(F.pad(disk, (2 * gr,) * 4)[None, None], torch.outer(g, g)[None, None])[0, 0]
    correction = F.pad(blur._disk(radius, alias_sigma), (gr,) * 4) - full  # (2(n+gr)+1)²
    dy, dx = torch.nonzero(correction.abs() > 1e-15, as_tuple=True)
    taps = torch.stack((dy - n - gr, dx - n - gr, correction[dy, dx]), 1).to(torch.float64).numpy()
    cols = torch.arange(-radius, radius + 1, dtype=torch.float64)
    heights = torch.floor(torch.sqrt(radius**2 - cols**2) + 1e-9).long().numpy()
    return heights, float(1 / disk.gt(0).sum()), g.numpy(), taps


@numba.njit(nogil=True, cache=True, inline="always")
def _span_pair(acc, top_a, bottom_a, top_b, bottom_b, single):  # pragma: no cover
    """``acc += (top_a - bottom_a) + (top_b - bottom_b)``, or only the first span when ``single``."""
    if single:
        for j in range(acc.shape[0]):
            acc[j] += top_a[j] - bottom_a[j]
    else:
        for j in range(acc.shape[0]):
            acc[j] += (top_a[j] - bottom_a[j]) + (top_b[j] - bottom_b[j])


@numba.njit(nogil=True, cache=True)
def _disk_planes(x, iy, ix, heights, inv_area, g, taps, out):  # pragma: no cover
    """``out`` ``(C,H,W)`` = ``x`` correlated with ``G ⊛ D + C`` (see the module), clipped to [0, 1]; padded
    row/column ``r`` of the plane reads source ``iy[r]``/``ix[r]`` (reflect-101 indices, pad ``n + gr`` per side)."""
    n_ch, h, w = x.shape
    pad = (iy.shape[0] - h) // 2
    r, gr = heights.shape[0] // 2, g.shape[0] // 2
    hp, wp = iy.shape[0], ix.shape[0]
    xp = np.empty((hp, wp), x.dtype)
    csum = np.empty((hp + 1, wp), x.dtype)  # csum[y] = sum of padded rows < y
    dh, dw = h + 2 * gr, w + 2 * gr  # the disk sums around the output, for the Gaussian's reach
    disk = np.empty((dh, dw), x.dtype)
    rows = np.empty((dh, w), x.dtype)
    scale = x.dtype.type(inv_area)
    gk = g.astype(x.dtype)
    zero, one = x.dtype.type(0), x.dtype.type(1)
    for c in range(n_ch):
        for y in range(hp):
            src, dst = x[c, iy[y]], xp[y]
            dst[pad : pad + w] = src
            for j in range(pad):
                dst[j] = src[ix[j]]
                dst[wp - 1 - j] = src[ix[wp - 1 - j]]
        csum[0] = 0
        for y in range(hp):
            row, prev = csum[y + 1], csum[y]
            for j in range(wp):
                row[j] = prev[j] + xp[y, j]
        c0 = pad - gr - r  # padded column of disk column 0's leftmost span
        for y in range(dh):
            acc = disk[y]
            acc[:] = 0
            yc = pad - gr + y  # padded row of this disk row's centre
            for k in range(r + 1):  # columns k and 2r-k have the same span (the disk is symmetric): one pass for both
                top, bottom = csum[yc + heights[k] + 1], csum[yc - heights[k]]
                a, b = c0 + k, c0 + 2 * r - k
                _span_pair(acc, top[a : a + dw], bottom[a : a + dw], top[b : b + dw], bottom[b : b + dw], k == r)
            for j in range(dw):
                acc[j] *= scale
        for y in range(dh):
            rows[y] = 0
            for t in range(2 * gr + 1):
                axpy(rows[y], gk[t], disk[y, t : t + w])
        for y in range(h):
            o = out[c, y]
            o[:] = 0
            for t in range(2 * gr + 1):
                axpy(o, gk[t], rows[y + t])
            for k in range(taps.shape[0]):
                yy, xx = pad + y + int(taps[k, 0]), pad + int(taps[k, 1])
                axpy(o, x.dtype.type(taps[k, 2]), xp[yy, xx : xx + w])
            for j in range(w):
                o[j] = min(max(o[j], zero), one)


def disk_filter(rgb: torch.Tensor, radius: torch.Tensor, alias_sigma: torch.Tensor) -> torch.Tensor:
    """Compiled ``corruptions3d.functional.blur.disk_filter``: same arguments and result (CPU float32 tensors)."""
    if rgb.dtype != torch.float32 or (torch.is_grad_enabled() and rgb.requires_grad):
        return blur.disk_filter.reference(rgb, radius, alias_sigma)
    src = rgb.contiguous()
    out = memory.empty_like(src)
    h, w = rgb.shape[-2:]
    pairs = [(round(r), float(s)) for r, s in zip(radius.tolist(), alias_sigma.tolist())]

    def image(i: int) -> None:
        heights, inv_area, g, taps = disk_plan(*pairs[i])
        pad = max(8, pairs[i][0]) + g.shape[0] // 2
        iy, ix = (filters.border_index(torch.arange(-pad, n + pad), n, "reflect101").numpy() for n in (h, w))
        _disk_planes(src[i].numpy(), iy, ix, heights, inv_area, g, taps, out[i].numpy())

    for pr in set(pairs):  # plans are built once, outside the threads
        disk_plan(*pr)
    parallel_map(image, range(len(pairs)))
    return out
