"""Salt-and-pepper noise compiled for the CPU: ``corruptions3d.functional.noise.salt_and_pepper`` per image.

Each value's 31-bit draw is computed where it is used, from the counter-based stream of
:func:`corruptions3d.random.random_bits` (splitmix64 of the value's index), then clipped or replaced in the same
pass: bit-identical to the torch ops, without the batch-sized draw and mask tensors. Images run on the threads of
:func:`corruptions3d.parallel.parallel_map`.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from corruptions3d.parallel import parallel_map
from corruptions3d.random import SPLITMIX_GAMMA, SPLITMIX_MUL, mix

__all__ = ["salt_and_pepper"]

_GAMMA, _MUL1, _MUL2 = np.uint64(SPLITMIX_GAMMA), np.uint64(SPLITMIX_MUL[0]), np.uint64(SPLITMIX_MUL[1])


@numba.njit(nogil=True, cache=True)
def _salt_and_pepper(x, key, low, high, out):  # pragma: no cover
    for i in range(x.shape[0]):
        z = key + np.uint64(i + 1) * _GAMMA
        z = (z ^ (z >> np.uint64(30))) * _MUL1
        z = (z ^ (z >> np.uint64(27))) * _MUL2
        bits = np.int64((z ^ (z >> np.uint64(31))) >> np.uint64(33))
        out[i] = 0 if bits < low else (1 if bits > high else min(max(x[i], 0), 1))


def salt_and_pepper(rgb: torch.Tensor, seeds: torch.Tensor, cut: torch.Tensor) -> torch.Tensor:
    """Compiled ``corruptions3d.functional.noise.salt_and_pepper``: same arguments and result (CPU tensors)."""
    src = rgb.contiguous()
    out = torch.empty_like(src)
    cuts = cut.tolist()

    def image(i: int, seed: int) -> None:
        key = np.uint64(mix(seed, 0))
        _salt_and_pepper(src[i].view(-1).numpy(), key, cuts[i], 2**31 - 1 - cuts[i], out[i].view(-1).numpy())

    parallel_map(image, range(len(cuts)), seeds.tolist())
    return out
