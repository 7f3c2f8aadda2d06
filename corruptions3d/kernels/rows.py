"""Row loops shared by the compiled CPU kernels (numba, inlined where they are called).

Each loops over 1D slices with indices counted from 0, so numba emits no negative-index wrap-around and the
compiler vectorises the loop; the callers slice the rows they need.
"""

from __future__ import annotations

import numba

__all__ = ["add", "axpy", "axpy4", "min_plus"]


@numba.njit(nogil=True, cache=True, inline="always")
def add(o, v):  # pragma: no cover
    """``o += v`` (a scalar)."""
    for j in range(o.shape[0]):
        o[j] += v


@numba.njit(nogil=True, cache=True, inline="always")
def axpy(o, a, x):  # pragma: no cover
    """``o += a·x``."""
    for j in range(o.shape[0]):
        o[j] += a * x[j]


@numba.njit(nogil=True, cache=True, inline="always")
def axpy4(o, k0, k1, k2, k3, x0, x1, x2, x3):  # pragma: no cover
    """``o += ((k0·x0 + k1·x1) + k2·x2) + k3·x3``: four taps per pass (a quarter of the loads and stores)."""
    for j in range(o.shape[0]):
        o[j] += ((k0 * x0[j] + k1 * x1[j]) + k2 * x2[j]) + k3 * x3[j]


@numba.njit(nogil=True, cache=True, inline="always")
def min_plus(o, x, a):  # pragma: no cover
    """``o = min(o, x + a)``."""
    for j in range(o.shape[0]):
        o[j] = min(o[j], x[j] + a)
