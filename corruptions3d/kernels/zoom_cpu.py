"""Zoom blur's mean of centre zooms compiled for the CPU: ``corruptions3d.functional.blur.zoom_mean`` in one pass.

Every output pixel accumulates the image and its linear-interpolation zooms (rows first, then columns, as the
reference's two gathers) in the reference's float operations and order, so the result is bit-identical to the
torch ops; no per-zoom image is materialised. Images run on the threads of
:func:`corruptions3d.parallel.parallel_map`.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from corruptions3d import memory
from corruptions3d.functional.blur import zoom_plan
from corruptions3d.parallel import parallel_map

__all__ = ["zoom_mean"]


@numba.njit(nogil=True, cache=True)
def _zoom_mean(x, rows0, rows1, fy, gy, cols0, cols1, fx, gx, out):  # pragma: no cover
    """``out`` ``(C,H,W)`` = mean of ``x`` and its K zooms; plans ``(K,H)`` / ``(K,W)`` (``g = 1 - f``)."""
    n = rows0.shape[0] + 1
    acc = np.empty(x.shape[2], x.dtype)
    row = np.empty(x.shape[2], x.dtype)
    for c in range(x.shape[0]):
        for y in range(x.shape[1]):
            acc[:] = x[c, y]
            for k in range(n - 1):
                src0, src1 = x[c, rows0[k, y]], x[c, rows1[k, y]]
                for j in range(row.shape[0]):
                    row[j] = src0[j] * gy[k, y] + src1[j] * fy[k, y]
                for j in range(acc.shape[0]):
                    acc[j] += row[cols0[k, j]] * gx[k, j] + row[cols1[k, j]] * fx[k, j]
            for j in range(acc.shape[0]):
                out[c, y, j] = acc[j] / n


def zoom_mean(rgb: torch.Tensor, zooms: tuple[float, ...]) -> torch.Tensor:
    """Compiled ``corruptions3d.functional.blur.zoom_mean``: same arguments and result (CPU tensors)."""
    _, _, h, w = rgb.shape
    z = torch.tensor(zooms, dtype=torch.float64)
    plans = []
    for n in (h, w):
        i0, i1, frac = zoom_plan(n, z)
        frac = frac.to(rgb.dtype)
        plans += [i0.numpy(), i1.numpy(), frac.numpy(), (1 - frac).numpy()]
    out = memory.empty_like(rgb)
    x = rgb.contiguous()
    parallel_map(lambda i: _zoom_mean(x[i].numpy(), *plans, out[i].numpy()), range(rgb.shape[0]))
    return out
