"""Pixelate's block means compiled for the CPU: ``corruptions3d.functional.digital.box_pixelate`` in numba.

Row sums then column sums over each block (lines added one by one from zero, each sum divided by its count), the
clip, and the nearest read-back, in one pass per image without intermediate tensors. ``index_add_`` may order the
block sums differently, so values agree with the torch ops to a float rounding (≤ 1 ulp seen). Images run on the
threads of :func:`corruptions3d.parallel.parallel_map`.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from corruptions3d import memory
from corruptions3d.parallel import parallel_map

__all__ = ["box_pixelate"]


@numba.njit(nogil=True, cache=True)
def _pixelate(x, lo_h, hi_h, near_h, lo_w, hi_w, near_w, out):  # pragma: no cover
    w = x.shape[2]
    rows = np.empty(w, x.dtype)
    small = np.empty((lo_h.shape[0], lo_w.shape[0]), x.dtype)
    for c in range(x.shape[0]):
        for i in range(lo_h.shape[0]):
            rows[:] = 0
            for r in range(lo_h[i], hi_h[i]):
                src = x[c, r]
                for j in range(w):
                    rows[j] += src[j]
            n_rows = x.dtype.type(hi_h[i] - lo_h[i])
            for j in range(w):
                rows[j] /= n_rows
            for j in range(lo_w.shape[0]):
                s = rows[0] * 0
                for k in range(lo_w[j], hi_w[j]):
                    s += rows[k]
                small[i, j] = min(max(s / x.dtype.type(hi_w[j] - lo_w[j]), 0), 1)
        for y in range(x.shape[1]):
            src, dst = small[near_h[y]], out[c, y]
            for j in range(w):
                dst[j] = src[near_w[j]]


def box_pixelate(
    x: torch.Tensor,
    lo_h: torch.Tensor,
    hi_h: torch.Tensor,
    near_h: torch.Tensor,
    lo_w: torch.Tensor,
    hi_w: torch.Tensor,
    near_w: torch.Tensor,
) -> torch.Tensor:
    """Compiled ``corruptions3d.functional.digital.box_pixelate``: same arguments and result (CPU tensors)."""
    plans = [t.contiguous().numpy() for t in (lo_h, hi_h, near_h, lo_w, hi_w, near_w)]
    src = x.contiguous()
    out = memory.empty_like(src)
    parallel_map(lambda i: _pixelate(src[i].numpy(), *plans, out[i].numpy()), range(x.shape[0]))
    return out
