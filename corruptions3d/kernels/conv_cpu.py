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

from corruptions3d.parallel import parallel_map

__all__ = ["conv_separable"]


@numba.njit(nogil=True, cache=True)
def _conv_planes(x, iy, ix, kx, ky, out):  # pragma: no cover
    """``out`` ``(C,H,W)`` = ``x`` ``(C,H,W)`` correlated with ``kx`` along rows and ``ky`` along columns; the padded
    row/column ``r`` reads source index ``iy[r]`` / ``ix[r]`` (-1: zero, the constant border)."""
    w = out.shape[2]
    buf = np.empty(ix.shape[0], x.dtype)
    tmp = np.empty((iy.shape[0], w), x.dtype)
    for c in range(out.shape[0]):
        for r in range(iy.shape[0]):
            acc = tmp[r]
            acc[:] = 0
            if iy[r] < 0:
                continue
            row = x[c, iy[r]]
            for j in range(buf.shape[0]):
                buf[j] = row[ix[j]] if ix[j] >= 0 else 0
            for t in range(kx.shape[0]):
                k = kx[t]
                for j in range(w):
                    acc[j] += k * buf[j + t]
        for r in range(out.shape[1]):
            acc = out[c, r]
            acc[:] = 0
            for t in range(ky.shape[0]):
                k, src = ky[t], tmp[r + t]
                for j in range(w):
                    acc[j] += k * src[j]


def _source_index(n: int, before: int, after: int, border: str) -> np.ndarray:
    """Source index of every padded position ``-before .. n+after-1`` (-1 outside for the constant border)."""
    from corruptions3d.filters import border_index

    i = torch.arange(-before, n + after)
    if border == "constant":
        return torch.where((i >= 0) & (i < n), i, -1).numpy()
    return border_index(i, n, border).numpy()


def conv_separable(
    x: torch.Tensor, kx: torch.Tensor, ky: torch.Tensor | None = None, border: str = "replicate"
) -> torch.Tensor:
    """Compiled ``corruptions3d.filters.conv_separable``: same arguments and result (CPU tensors, no autograd)."""
    from corruptions3d import filters

    ky = kx if ky is None else ky
    if torch.is_grad_enabled() and (x.requires_grad or kx.requires_grad or ky.requires_grad):
        return filters.conv_separable.reference(x, kx, ky, border)
    if border not in filters.BORDERS:
        raise ValueError(f"unknown border {border!r}; expected one of {filters.BORDERS}")
    _, _, h, w = x.shape
    rx, ry = kx.shape[1] // 2, ky.shape[1] // 2
    iy, ix = _source_index(h, ry, ry, border), _source_index(w, rx, rx, border)
    kx, ky = kx.to(x.dtype).contiguous().numpy(), ky.to(x.dtype).contiguous().numpy()
    src = x.contiguous()
    out = torch.empty_like(src)
    parallel_map(lambda i: _conv_planes(src[i].numpy(), iy, ix, kx[i], ky[i], out[i].numpy()), range(x.shape[0]))
    return out
