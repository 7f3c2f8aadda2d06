"""Depth-layered defocus compiled for the CPU: ``corruptions3d.functional.defocus.depth_defocus`` in numba.

Per image, each depth layer's separable Gaussian (the reference's truncated taps, replicate border) is computed
one plane at a time into a scratch plane and mixed into the output at once, so no blurred batch is ever
materialised. A pixel takes only its two layers, so a layer is blurred only on the rows that hold one of its
pixels (the row pass also on the rows its column taps reach). The depth fill and its quantiles' order statistics
come from one compiled pass and a radix select per image. Images run on the threads of
:func:`corruptions3d.parallel.parallel_map`. Results equal the torch ops to float rounding (another summation order).
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from corruptions3d import memory
from corruptions3d.functional import defocus
from corruptions3d.geometry import INVALID_DEPTH
from corruptions3d.kernels.rows import axpy, axpy4
from corruptions3d.parallel import parallel_map

__all__ = ["depth_defocus"]


@numba.njit(nogil=True, cache=True, inline="always")
def _row_taps(o, k, pad):  # pragma: no cover
    """``o[j] += Σ_t k[t]·pad[t + j]``, four taps per pass."""
    w, n, t = o.shape[0], k.shape[0], 0
    while t + 4 <= n:
        axpy4(
            o,
            k[t],
            k[t + 1],
            k[t + 2],
            k[t + 3],
            pad[t : t + w],
            pad[t + 1 : t + 1 + w],
            pad[t + 2 : t + 2 + w],
            pad[t + 3 : t + 3 + w],
        )
        t += 4
    while t < n:
        axpy(o, k[t], pad[t : t + w])
        t += 1


@numba.njit(nogil=True, cache=True, inline="always")
def _column_taps(o, k, rows, y0):  # pragma: no cover
    """``o += Σ_t k[t]·rows[clamp(y0 + t)]`` (replicate border), four taps per pass."""
    h, n, t = rows.shape[0], k.shape[0], 0
    while t + 4 <= n:
        r0, r1 = min(max(y0 + t, 0), h - 1), min(max(y0 + t + 1, 0), h - 1)
        r2, r3 = min(max(y0 + t + 2, 0), h - 1), min(max(y0 + t + 3, 0), h - 1)
        axpy4(o, k[t], k[t + 1], k[t + 2], k[t + 3], rows[r0], rows[r1], rows[r2], rows[r3])
        t += 4
    while t < n:
        axpy(o, k[t], rows[min(max(y0 + t, 0), h - 1)])
        t += 1


@numba.njit(nogil=True, cache=True)
def _fill_select(depth, unit, valid_below, kth, d, stats):  # pragma: no cover
    """Step 1 for one image: ``d`` = ``depth`` ``(H,W)`` metres with invalid pixels (not finite, <= 0, or from
    ``valid_below`` up) set to the image's largest valid depth (1 m if none), divided by ``unit``; ``stats`` ``(K,)``
    its order statistics at the sorted ranks ``kth``. The selection is a radix select on the float bits (positive
    floats order as their bit patterns): a histogram of the top 16 bits locates each rank's bucket, and only the
    values in those buckets are sorted."""
    flat_in, flat = depth.ravel(), d.ravel()
    far = np.float32(0)
    for v in flat_in:
        if np.isfinite(v) and v > 0 and v < valid_below:
            far = max(far, v)
    if far <= 0:
        far = np.float32(1)
    hist = np.zeros(1 << 16, np.int64)
    bits = flat.view(np.uint32)
    for i in range(flat.shape[0]):
        v = flat_in[i]
        flat[i] = (v if np.isfinite(v) and v > 0 and v < valid_below else far) / unit
        hist[bits[i] >> 16] += 1
    bucket = np.empty(kth.shape[0], np.int64)  # each rank's bucket and its rank inside it
    inside = np.empty(kth.shape[0], np.int64)
    below, b = 0, 0
    for k in range(kth.shape[0]):
        while below + hist[b] <= kth[k]:
            below += hist[b]
            b += 1
        bucket[k], inside[k] = b, kth[k] - below
    values = np.empty(0, np.float32)
    for k in range(kth.shape[0]):
        if k > 0 and bucket[k] == bucket[k - 1]:
            stats[k] = values[inside[k]]
            continue
        values = np.empty(hist[bucket[k]], np.float32)
        n = 0
        for i in range(flat.shape[0]):
            if bits[i] >> 16 == bucket[k]:
                values[n] = flat[i]
                n += 1
        values.sort()
        stats[k] = values[inside[k]]


@numba.njit(nogil=True, cache=True)
def _layer_weights(d, q, layer, w_lo, w_hi):  # pragma: no cover
    """Step 4 per pixel of ``d`` ``(H,W)`` with quantiles ``q`` ``(L,)``: lower layer (``searchsorted - 1``,
    clamped) and normalised weights, in the torch ops' float operations."""
    one = d.dtype.type(1)
    top = q.shape[0] - 2
    for y in range(d.shape[0]):
        for j in range(d.shape[1]):
            v = d[y, j]
            below = 0
            for k in range(q.shape[0]):
                below += q[k] < v
            lo = min(max(below - 1, 0), top)
            t = (v - q[lo]) / (q[lo + 1] - q[lo])
            a, b = one - t * t, one - (one - t) * (one - t)
            layer[y, j] = lo
            w_lo[y, j] = a / (a + b)
            w_hi[y, j] = b / (a + b)


@numba.njit(nogil=True, cache=True)
def _defocus_image(x, d, q, bank, out):  # pragma: no cover
    """``out`` ``(C,H,W)``: per pixel ``w_lo·blur_l + w_hi·blur_{l+1}`` for its depth ``d`` ``(H,W)`` between
    quantiles ``q[l]`` and ``q[l+1]``, ``blur_i`` the separable replicate-border correlation with ``bank[i]``
    (``(L, 2R+1)`` taps, zero-padded)."""
    n_ch, h, w = x.shape
    n_layers, taps = bank.shape
    big_r = taps // 2
    layer = np.empty((h, w), np.int64)
    w_lo, w_hi = np.empty((h, w), x.dtype), np.empty((h, w), x.dtype)
    _layer_weights(d, q, layer, w_lo, w_hi)
    out[:] = 0
    rows = np.zeros((n_layers, h), np.bool_)  # layer i is needed on row y
    for y in range(h):
        for j in range(w):
            rows[layer[y, j], y] = True
            rows[layer[y, j] + 1, y] = True
    pad = np.empty(w + 2 * big_r, x.dtype)
    tmp = np.empty((h, w), x.dtype)
    weight = np.empty((h, w), x.dtype)  # layer i's weight per pixel (0 where unused)
    acc = np.empty(w, x.dtype)
    zero = x.dtype.type(0)
    for i in range(n_layers):
        r = 0
        for t in range(taps):
            if bank[i, t] != 0:
                r = big_r - t
                break
        k = bank[i, big_r - r : big_r + r + 1]
        reach = np.zeros(h, np.bool_)  # rows the column taps of a needed row read (replicate-clamped)
        for y in range(h):
            if rows[i, y]:
                for dy in range(-r, r + 1):
                    reach[min(max(y + dy, 0), h - 1)] = True
                for j in range(w):
                    lo = layer[y, j]
                    weight[y, j] = w_lo[y, j] if lo == i else (w_hi[y, j] if lo + 1 == i else zero)
        for c in range(n_ch):
            for y in range(h):
                if not reach[y]:
                    continue
                src = x[c, y]
                pad[:r] = src[0]
                pad[r : r + w] = src
                pad[r + w : 2 * r + w] = src[w - 1]
                tmp[y] = 0
                _row_taps(tmp[y], k, pad)
            for y in range(h):
                if not rows[i, y]:
                    continue
                acc[:] = 0
                _column_taps(acc, k, tmp, y - r)
                o, wy = out[c, y], weight[y]
                for j in range(w):
                    o[j] += wy[j] * acc[j]


def depth_defocus(
    rgb: torch.Tensor, depth_euclidean: torch.Tensor, focus: torch.Tensor, aperture: torch.Tensor
) -> torch.Tensor:
    """Compiled ``corruptions3d.functional.defocus.depth_defocus``: same arguments and result (CPU tensors)."""
    if (torch.is_grad_enabled() and rgb.requires_grad) or rgb.dtype != torch.float32:
        return defocus.depth_defocus.reference(rgb, depth_euclidean, focus, aperture)
    b, _, h, w = rgb.shape
    raw = depth_euclidean.to(torch.float32).contiguous()
    ranks = defocus.quantile_ranks(h * w)
    kth = ranks[0].numpy()
    d, stats = torch.empty(b, h, w), torch.empty(b, len(kth))
    unit, valid_below = np.float32(defocus.DEPTH_UNIT_M), np.float32(INVALID_DEPTH - 1e-3)

    def prepare(i: int) -> None:
        _fill_select(raw[i, 0].numpy(), unit, valid_below, kth, d[i].numpy(), stats[i].numpy())

    parallel_map(prepare, range(b))
    q = defocus.widen_quantiles(defocus.interpolate_quantiles(stats, ranks))
    bank = defocus.sigma_bank(defocus.coc_sigmas(q, focus, aperture)).to(rgb.dtype).numpy()
    src = rgb.contiguous()
    out = memory.empty_like(src)
    qn = q.contiguous().numpy()

    def image(i: int) -> None:
        _defocus_image(src[i].numpy(), d[i].numpy(), qn[i], np.ascontiguousarray(bank[i]), out[i].numpy())

    parallel_map(image, range(b))
    return out
