"""Per-image separable convolution compiled for the CPU: ``corruptions3d.filters.conv_separable`` in numba.

The border is padded by the same torch op as the reference; then each image's planes are filtered row-wise and
column-wise with loops over contiguous pixels, which the compiler vectorises without reordering any sum (each
output accumulates its taps in order). Images run on the threads of :func:`corruptions3d.parallel.parallel_map`.
Results equal the torch ops to float rounding (a different summation order than the convolution library's).
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from corruptions3d.parallel import parallel_map

__all__ = ["conv_separable"]


@numba.njit(nogil=True, cache=True)
def _conv_planes(y, kx, ky, out):  # pragma: no cover
    """``out`` ``(C,H,W)`` = padded ``y`` ``(C, H+Ky-1, W+Kx-1)`` correlated with ``kx`` along rows, ``ky`` columns."""
    w = out.shape[2]
    tmp = np.empty((y.shape[1], w), y.dtype)
    for c in range(out.shape[0]):
        for r in range(y.shape[1]):
            row, acc = y[c, r], tmp[r]
            acc[:] = 0
            for t in range(kx.shape[0]):
                k = kx[t]
                for j in range(w):
                    acc[j] += k * row[j + t]
        for r in range(out.shape[1]):
            acc = out[c, r]
            acc[:] = 0
            for t in range(ky.shape[0]):
                k, src = ky[t], tmp[r + t]
                for j in range(w):
                    acc[j] += k * src[j]


def conv_separable(
    x: torch.Tensor, kx: torch.Tensor, ky: torch.Tensor | None = None, border: str = "replicate"
) -> torch.Tensor:
    """Compiled ``corruptions3d.filters.conv_separable``: same arguments and result (CPU tensors, no autograd)."""
    from corruptions3d import filters

    ky = kx if ky is None else ky
    if torch.is_grad_enabled() and (x.requires_grad or kx.requires_grad or ky.requires_grad):
        return filters.conv_separable.reference(x, kx, ky, border)
    rx, ry = kx.shape[1] // 2, ky.shape[1] // 2
    y = filters.pad(x, rx, rx, ry, ry, border).contiguous()
    kx, ky = kx.to(x.dtype).contiguous().numpy(), ky.to(x.dtype).contiguous().numpy()
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    parallel_map(lambda i: _conv_planes(y[i].numpy(), kx[i], ky[i], out[i].numpy()), range(x.shape[0]))
    return out
