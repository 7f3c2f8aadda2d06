"""Spatter's water drops compiled for the CPU: ``corruptions3d.functional.weather.liquid_levels``,
``edge_distance`` and ``water_drops``.

Per image, one pass computes the Sobel gradients (replicate border) and the non-maximum suppression of the torch
ops; a flood fill from the strong edges through 8-connected weak ones replaces their repeated dilations (the same
fixed point); the capped squared distance runs the same two separable minimum passes over shifted rows. The
square root and the cap run in torch. On 8-bit levels every value is an exact small integer until that square
root, so the result is bit-identical to the torch ops. The shading (box filters with the compiled separable
convolution's kernel, histogram equalisation, emboss, normalisation and blend) then runs in one compiled call per
image in the torch ops' float32 operations. Images run on the threads of
:func:`corruptions3d.parallel.parallel_map`.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from corruptions3d import filters, memory
from corruptions3d.functional import weather
from corruptions3d.kernels import conv_cpu
from corruptions3d.kernels.rows import min_plus
from corruptions3d.parallel import parallel_map

__all__ = ["edge_distance", "liquid_levels", "water_drops"]


@numba.njit(nogil=True, cache=True)
def _canny(img, low, high, edges):  # pragma: no cover
    """``edges`` ``(H,W)`` bool: :func:`corruptions3d.functional.weather._canny` of ``img`` ``(H,W)``: Sobel over a
    replicate-padded copy, the four suppression tests then a select per pixel, and the hysteresis flood fill."""
    h, w = img.shape
    p = np.empty((h + 2, w + 2), img.dtype)  # replicate border for the Sobel taps
    for y in range(h + 2):
        src = img[min(max(y - 1, 0), h - 1)]
        p[y, 1 : w + 1] = src
        p[y, 0], p[y, w + 1] = src[0], src[w - 1]
    gx, gy, mag = np.empty((h, w), img.dtype), np.empty((h, w), img.dtype), np.zeros((h + 2, w + 2), img.dtype)
    for y in range(h):
        up, mid, down, gxr, gyr, mr = p[y], p[y + 1], p[y + 2], gx[y], gy[y], mag[y + 1, 1 : w + 1]
        for x in range(w):
            a = (up[x + 2] - up[x]) + 2 * (mid[x + 2] - mid[x]) + (down[x + 2] - down[x])
            b = (down[x] - up[x]) + 2 * (down[x + 1] - up[x + 1]) + (down[x + 2] - up[x + 2])
            gxr[x], gyr[x] = a, b
            mr[x] = abs(a) + abs(b)  # zero border for the suppression
    tan22, tan67 = np.float32(0.4142135), np.float32(2.4142135)
    weak = np.empty((h, w), np.bool_)
    for y in range(h):
        up, mid, down, gxr, gyr, wr, er = mag[y], mag[y + 1], mag[y + 2], gx[y], gy[y], weak[y], edges[y]
        for x in range(w):
            ax, ay, m = abs(gxr[x]), abs(gyr[x]), mid[x + 1]
            k_h = (m > mid[x]) & (m >= mid[x + 2])
            k_v = (m > up[x + 1]) & (m >= down[x + 1])
            k_d = (m > up[x]) & (m > down[x + 2])
            k_a = (m > up[x + 2]) & (m > down[x])
            keep = k_h if ay <= ax * tan22 else (k_v if ay > ax * tan67 else (k_d if gxr[x] * gyr[x] > 0 else k_a))
            wr[x] = keep & (m > low)
            er[x] = keep & (m > high)
    stack = np.empty(h * w, np.int64)
    top = 0
    for y in range(h):
        for x in range(w):
            if edges[y, x]:
                stack[top] = y * w + x
                top += 1
    while top > 0:  # grow the strong edges through 8-connected weak pixels
        top -= 1
        y, x = stack[top] // w, stack[top] % w
        for yy in range(max(y - 1, 0), min(y + 2, h)):
            for xx in range(max(x - 1, 0), min(x + 2, w)):
                if weak[yy, xx] and not edges[yy, xx]:
                    edges[yy, xx] = True
                    stack[top] = yy * w + xx
                    top += 1


@numba.njit(nogil=True, cache=True)
def _squared_distance(edges, cap, out):  # pragma: no cover
    """``out`` = the squared distances of :func:`corruptions3d.functional.weather._distance_to` for ``edges``
    ``(H,W)``: separable minima of ``f + d²`` over ``|d| <= cap`` (columns, then rows), ``f`` 0 on edges and
    ``big = 2·cap²+1`` elsewhere. Down a column that minimum is the squared distance to the nearest edge within
    ``cap`` rows, else ``big``: two sweeps find it. Along rows, offsets past the image read ``big``, which never
    wins (every value is at most that), so they are skipped; on these exact small integers
    ``min(a, b) + d² = min(a + d², b + d²)``."""
    h, w = edges.shape
    big = np.float32(2 * cap * cap + 1)
    g = np.empty((h, w), np.float32)  # columns: the squared distance to the nearest edge within cap rows, else big
    seen = np.full(w, -(cap + 1), np.int64)  # row of the last edge above (or on) the current row
    for y in range(h):
        for x in range(w):
            seen[x] = y if edges[y, x] else seen[x]
            d = y - seen[x]
            g[y, x] = np.float32(d * d) if d <= cap else big
    seen[:] = h + cap + 1  # row of the next edge below (or on) the current row
    for y in range(h - 1, -1, -1):
        for x in range(w):
            seen[x] = y if edges[y, x] else seen[x]
            d = seen[x] - y
            g[y, x] = min(g[y, x], np.float32(d * d) if d <= cap else big)
    out[:] = g
    for y in range(h):
        src, row = g[y], out[y]
        for d in range(1, min(cap, w - 1) + 1):
            dd = np.float32(d * d)
            min_plus(row[d:], src[: w - d], dd)
            min_plus(row[: w - d], src[d:], dd)


def edge_distance(img: torch.Tensor, low: float, high: float, cap: int) -> torch.Tensor:
    """Compiled ``corruptions3d.functional.weather.edge_distance``: same arguments and result (CPU tensors)."""
    if img.dtype != torch.float32:
        return weather.edge_distance.reference(img, low, high, cap)
    src = img.contiguous()
    out = memory.empty_like(src)
    lo, hi = np.float32(low), np.float32(high)

    def image(i: int) -> None:
        edges = np.empty(src.shape[-2:], np.bool_)
        _canny(src[i, 0].numpy(), lo, hi, edges)
        _squared_distance(edges, cap, out[i, 0].numpy())

    parallel_map(image, range(src.shape[0]))
    return out.sqrt_().clamp_(max=cap)  # torch's float32 square root, as the torch ops


@numba.njit(nogil=True, cache=True)
def _equalize(img, out):  # pragma: no cover
    """``out`` = :func:`corruptions3d.functional.weather._equalize_hist` of integer-valued ``img`` ``(H,W)``, in its
    float32 operations."""
    hist = np.zeros(256, np.float32)
    for v in img.ravel():
        hist[int(v)] += 1
    total = hist.sum()
    first = 0
    while hist[first] == 0:
        first += 1
    h_first = hist[first]
    lut = np.empty(256, np.float32)
    cdf = np.float32(0)
    denom = max(total - h_first, np.float32(1))
    for i in range(256):
        cdf += hist[i]
        lut[i] = min(max(np.rint((cdf - h_first) * np.float32(255) / denom), np.float32(0)), np.float32(255))
    if h_first == total:
        lut[:] = first
    for y in range(img.shape[0]):
        for x in range(img.shape[1]):
            out[y, x] = lut[int(img[y, x])]


@numba.njit(nogil=True, cache=True)
def _water(rgb, levels, dist, iy, ix, box, intensity, color, out):  # pragma: no cover
    """``out`` ``(3,H,W)`` = :func:`corruptions3d.functional.weather.water_drops` for one image: ``levels`` and
    ``dist`` ``(1,H,W)``, ``iy``/``ix`` the reflect-101 indices of the 3×3 box (``box`` its taps)."""
    _, h, w = levels.shape
    a = np.empty((1, h, w), np.float32)
    conv_cpu._conv_planes(dist, iy, ix, box, box, a)
    f = np.floor(a[0])
    e = np.empty((h + 2, w + 2), np.float32)  # equalised, reflect-101 padded for the emboss
    _equalize(f, e[1 : h + 1, 1 : w + 1])
    for y in range(1, h + 1):
        e[y, 0], e[y, w + 1] = e[y, 2], e[y, w - 1]
    e[0], e[h + 1] = e[2], e[h - 1]
    emb = np.empty((1, h, w), np.float32)
    for y in range(h):
        for x in range(w):  # the emboss taps; exact on these integers in any order
            v = (
                -2 * e[y, x] - e[y, x + 1] - e[y + 1, x] + e[y + 1, x + 1] + e[y + 1, x + 2] + e[y + 2, x + 1]
            ) + 2 * e[y + 2, x + 2]
            emb[0, y, x] = min(max(v, np.float32(0)), np.float32(255))
    conv_cpu._conv_planes(emb, iy, ix, box, box, a)
    m = levels[0] * a[0]
    peak = max(m.max(), np.float32(1e-12))
    for y in range(h):
        for x in range(w):
            shade = m[y, x] / peak * intensity
            for c in range(3):
                out[c, y, x] = min(max(rgb[c, y, x] + shade * color[c], np.float32(0)), np.float32(1))


def water_drops(rgb: torch.Tensor, levels: torch.Tensor, dist: torch.Tensor, intensity: torch.Tensor) -> torch.Tensor:
    """Compiled ``corruptions3d.functional.weather.water_drops``: same arguments and result (CPU float32 tensors)."""
    if any(t.dtype != torch.float32 for t in (rgb, levels, dist)) or min(rgb.shape[-2:]) < 2:
        return weather.water_drops.reference(rgb, levels, dist, intensity)
    h, w = rgb.shape[-2:]
    iy, ix = (filters.border_index(torch.arange(-1, n + 1), n, "reflect101").numpy() for n in (h, w))
    box = np.full(3, 1 / 3, np.float32)
    color = np.array(weather.WATER, np.float32)
    src, lev, dis = rgb.contiguous(), levels.contiguous(), dist.contiguous()
    out = memory.empty_like(src)
    inten = intensity.to(torch.float32).tolist()

    def image(i: int) -> None:
        _water(src[i].numpy(), lev[i].numpy(), dis[i].numpy(), iy, ix, box, np.float32(inten[i]), color, out[i].numpy())

    parallel_map(image, range(src.shape[0]))
    return out


@numba.njit(nogil=True, cache=True)
def _levels(liquid, threshold, out):  # pragma: no cover
    """``out = floor(255·x) mod 256`` of ``x = liquid`` (0 below ``threshold``), in float32."""
    k255, k256, zero = np.float32(255), np.float32(256), np.float32(0)
    for i in range(liquid.shape[0]):
        v = liquid[i]
        out[i] = np.floor((zero if v < threshold else v) * k255) % k256


def liquid_levels(liquid: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Compiled ``corruptions3d.functional.weather.liquid_levels``: same arguments and result (CPU float32)."""
    if liquid.dtype != torch.float32:
        return weather.liquid_levels.reference(liquid, threshold)
    src = liquid.contiguous()
    out = memory.empty_like(src)
    thr = threshold.to(torch.float32).tolist()
    parallel_map(
        lambda i: _levels(src[i].view(-1).numpy(), np.float32(thr[i]), out[i].view(-1).numpy()), range(len(thr))
    )
    return out
