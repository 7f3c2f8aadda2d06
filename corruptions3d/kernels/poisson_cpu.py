"""Exact Poisson inversion compiled for the CPU: ``corruptions3d.random._poisson_inversion`` in one numba pass.

Per value: one look-up in the (rate cell, uniform cell) table; in an undecided cell the CDF at the exact rate is
computed from the row below with the reference's float64 products and sums in the reference's order, so every
comparison, and therefore every sample, is identical to the torch ops.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch

from corruptions3d import memory
from corruptions3d import random as rnd

__all__ = ["poisson_inversion"]


@numba.njit(nogil=True, cache=True)
def _invert(lam, u, cdf, cells, cols, step_inv, n_cells, terms, span_cap, out):  # pragma: no cover
    step = 1.0 / step_inv
    w = np.empty(terms)
    for n in range(lam.shape[0]):
        x = cells[int(u[n] * n_cells) + int(lam[n] * step_inv) * n_cells]
        if x >= 0:
            out[n] = x
            continue
        la = np.float64(lam[n])
        j = int(la * step_inv)
        r = la - j * step
        w[0] = math.exp(-r)
        for i in range(1, terms):
            w[i] = w[i - 1] * r / i
        code = -np.int64(x) - 1
        k, span = code // 8, code % 8
        last = k + span if span < span_cap else cols - terms
        base = j * cols + terms - 1
        while True:  # X in [k, last]: X > k while the CDF at k is <= u (and not 1 within rounding)
            f = 0.0
            for i in range(terms):
                f += w[i] * cdf[base + k - i]
            if not (f <= u[n] and f < 1 - 2.0**-52):
                break
            k += 1
            if k >= last:
                break
        out[n] = k


def poisson_inversion(lam: torch.Tensor, u: torch.Tensor, lam_max: float | None = None) -> torch.Tensor:
    """Compiled ``corruptions3d.random._poisson_inversion``: same arguments and result (CPU tensors)."""
    cdf, cells, cols = rnd.poisson_tables_for(lam, lam_max)
    out = memory.empty_like(lam)
    _invert(
        lam.contiguous().numpy(),
        u.contiguous().numpy(),
        cdf.numpy(),
        cells.numpy(),
        cols,
        1.0 / rnd.POISSON_STEP,
        rnd.POISSON_CELLS,
        rnd.POISSON_RESIDUAL_TERMS,
        rnd.POISSON_SPAN_CAP,
        out.numpy(),
    )
    return out
