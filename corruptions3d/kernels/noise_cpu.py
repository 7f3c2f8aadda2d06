"""Salt-and-pepper noise compiled for the CPU: ``corruptions3d.functional.noise.salt_and_pepper`` per image.

Each value's 31-bit draw is computed where it is used, from the counter-based stream of
:func:`corruptions3d.random.random_bits` (:func:`corruptions3d.kernels.random_cpu.splitmix64` of its index), then
clipped or replaced in the same pass: bit-identical to the torch ops, without the batch-sized draw and mask
tensors. Images run on the threads of :func:`corruptions3d.parallel.parallel_map`.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from corruptions3d.kernels.random_cpu import splitmix64
from corruptions3d.parallel import parallel_map
from corruptions3d.random import mix

__all__ = ["salt_and_pepper"]


@numba.njit(nogil=True, cache=True)
def _salt_and_pepper(x, key, low, high, out):  # pragma: no cover
    for i in range(x.shape[0]):
        bits = np.int64(splitmix64(key, i) >> np.uint64(33))
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
