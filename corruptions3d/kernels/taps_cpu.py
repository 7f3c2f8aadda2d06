"""Sparse shifted-sum correlation compiled for the CPU: ``corruptions3d.functional.blur.tap_filter`` in numba.

Each output row accumulates its taps in order, each tap a clamped source row read at a constant column shift: the
pixels whose column falls off the image take the edge pixel, the rest are a contiguous run the compiler vectorises.
No FFT, no dense kernel: a motion blur's 21–41 taps cost 21–41 multiply-adds per pixel. Images run on the threads of
:func:`corruptions3d.parallel.parallel_map`. Results equal the FFT correlation to float rounding.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from corruptions3d import memory
from corruptions3d.kernels.rows import add, axpy
from corruptions3d.parallel import parallel_map

__all__ = ["tap_filter"]


@numba.njit(nogil=True, cache=True)
def _tap_planes(x, oy, ox, w, out):  # pragma: no cover
    """``out[c,y,j] = Σ_t w[t]·x[c, clamp(y+oy[t]), clamp(j+ox[t])]`` for ``(C,H,W)`` planes; zero weights skipped."""
    h, wd = x.shape[1], x.shape[2]
    for c in range(x.shape[0]):
        for y in range(h):
            o = out[c, y]
            o[:] = 0
            for t in range(w.shape[0]):
                wt = w[t]
                if wt == 0:
                    continue
                row = x[c, min(max(y + oy[t], 0), h - 1)]
                d = ox[t]
                lo = min(max(-d, 0), wd)  # columns j < lo read column 0
                hi = max(min(wd - d, wd), lo)  # columns j >= hi read column W-1
                first, last = wt * row[0], wt * row[wd - 1]
                add(o[:lo], first)
                axpy(o[lo:hi], wt, row[lo + d : hi + d])
                add(o[hi:], last)


def tap_filter(x: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Compiled ``corruptions3d.functional.blur.tap_filter``: same arguments and result (CPU tensors, no autograd)."""
    from corruptions3d.functional import blur

    if torch.is_grad_enabled() and x.requires_grad:
        return blur.tap_filter.reference(x, oy, ox, w)
    src = x.contiguous()
    out = memory.empty_like(src)
    oyn, oxn = oy.to(torch.int64).numpy(), ox.to(torch.int64).numpy()
    wn = w.to(x.dtype).numpy()

    def image(i: int) -> None:
        _tap_planes(src[i].numpy(), np.ascontiguousarray(oyn[i]), np.ascontiguousarray(oxn[i]), wn[i], out[i].numpy())

    parallel_map(image, range(x.shape[0]))
    return out
