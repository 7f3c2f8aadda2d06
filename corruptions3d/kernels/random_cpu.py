"""The counter-based stream of :func:`corruptions3d.random.splitmix` compiled for the CPU (numba).

:func:`splitmix64` draws element ``j`` of a stream alone, so other compiled kernels (salt-and-pepper noise) call it
where they use the number; :func:`splitmix_uniform_` fills float64 uniforms. Both are bit-identical to the torch
ops.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from corruptions3d.random import SPLITMIX_GAMMA, SPLITMIX_MUL

__all__ = ["splitmix64", "splitmix_uniform_"]

_GAMMA, _MUL1, _MUL2 = np.uint64(SPLITMIX_GAMMA), np.uint64(SPLITMIX_MUL[0]), np.uint64(SPLITMIX_MUL[1])


@numba.njit(nogil=True, cache=True)
def splitmix64(key, j):  # pragma: no cover
    """Element ``j`` of stream ``key`` (uint64)."""
    z = key + np.uint64(j + 1) * _GAMMA
    z = (z ^ (z >> np.uint64(30))) * _MUL1
    z = (z ^ (z >> np.uint64(27))) * _MUL2
    return z ^ (z >> np.uint64(31))


@numba.njit(nogil=True, cache=True)
def _uniforms(key, out):  # pragma: no cover
    for j in range(out.shape[0]):
        out[j] = np.float64(splitmix64(key, j) >> np.uint64(11)) * 2.0**-53


def splitmix_uniform_(out: torch.Tensor, key: int) -> torch.Tensor:
    """Compiled ``corruptions3d.random.splitmix_uniform_``: same arguments and result (CPU tensor)."""
    direct = out.is_contiguous() and out.dtype == torch.float64
    flat = out.view(-1) if direct else torch.empty(out.numel(), dtype=torch.float64)
    _uniforms(np.uint64(key), flat.numpy())
    return out if direct else out.copy_(flat.view(out.shape))
