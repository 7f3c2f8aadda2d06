"""Per-image separable convolution compiled for the CPU: ``corruptions3d.filters.conv_separable`` in numba.

Each image's planes are filtered row-wise (one padded row at a time, border indices as the reference's padding)
and column-wise with loops over contiguous pixels, which the compiler vectorises without reordering any sum
(each output accumulates its taps in order). Images run on the threads of :func:`corruptions3d.parallel.parallel_map`.
Results equal the torch ops to float rounding (a different summation order than the convolution library's).
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from corruptions3d import filters, memory
from corruptions3d.parallel import parallel_map

__all__ = ["conv_separable"]


@numba.njit(nogil=True, cache=True)
def _filter_row(buf, k, out):  # pragma: no cover
    """``out[j] = Σ_t k[t]·buf[t + j]``, taps in order."""
    w = out.shape[0]
    out[:] = 0
    for t in range(k.shape[0]):
        kt, a = k[t], buf[t : t + w]
        for j in range(w):
            out[j] += kt * a[j]


@numba.njit(nogil=True, cache=True)
def _filter_column(rows, k, out):  # pragma: no cover
    """``out[j] = Σ_t k[t]·rows[t, j]``, taps in order."""
    out[:] = 0
    for t in range(k.shape[0]):
        kt, a = k[t], rows[t]
        for j in range(out.shape[0]):
            out[j] += kt * a[j]


@numba.njit(nogil=True, cache=True)
def _conv_planes(x, iy, ix, kx, ky, out):  # pragma: no cover
    """``out`` ``(C,H,W)`` = ``x`` ``(C,H,W)`` correlated with ``kx`` along rows and ``ky`` along columns; the padded
    row/column ``r`` reads source index ``iy[r]`` / ``ix[r]`` (-1: zero, the constant border)."""
    buf = np.empty(ix.shape[0], x.dtype)
    tmp = np.empty((iy.shape[0], out.shape[2]), x.dtype)
    for c in range(out.shape[0]):
        for r in range(iy.shape[0]):
            if iy[r] < 0:
                tmp[r] = 0
                continue
            row = x[c, iy[r]]
            for j in range(buf.shape[0]):
                buf[j] = row[ix[j]] if ix[j] >= 0 else 0
            _filter_row(buf, kx, tmp[r])
        for r in range(out.shape[1]):
            _filter_column(tmp[r : r + ky.shape[0]], ky, out[c, r])


def _source_index(n: int, before: int, after: int, border: str) -> np.ndarray:
    """Source index of every padded position ``-before .. n+after-1`` (-1 outside for the constant border)."""
    i = torch.arange(-before, n + after)
    if border == "constant":
        return torch.where((i >= 0) & (i < n), i, -1).numpy()
    return filters.border_index(i, n, border).numpy()


def conv_separable(
    x: torch.Tensor, kx: torch.Tensor, ky: torch.Tensor | None = None, border: str = "replicate"
) -> torch.Tensor:
    """Compiled ``corruptions3d.filters.conv_separable``: same arguments and result (CPU tensors, no autograd)."""
    ky = kx if ky is None else ky
    if torch.is_grad_enabled() and (x.requires_grad or kx.requires_grad or ky.requires_grad):
        return filters.conv_separable.reference(x, kx, ky, border)
    if border not in filters.BORDERS:
        raise ValueError(f"unknown border {border!r}; expected one of {filters.BORDERS}")
    _, _, h, w = x.shape
    rx, ry = kx.shape[1] // 2, ky.shape[1] // 2
    iy, ix = _source_index(h, ry, ry, border), _source_index(w, rx, rx, border)
    kxn, kyn = kx.to(x.dtype).contiguous().numpy(), ky.to(x.dtype).contiguous().numpy()
    src = x.contiguous()
    out = memory.empty_like(src)

    def image(i: int) -> None:
        _conv_planes(src[i].numpy(), iy, ix, kxn[i], kyn[i], out[i].numpy())

    parallel_map(image, range(x.shape[0]))
    return out
