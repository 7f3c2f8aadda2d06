"""Salt-and-pepper noise compiled for the CPU: ``corruptions3d.functional.noise.salt_and_pepper`` per image.

Each image draws its 31-bit integers from its own generator (the same stream and values as
:func:`corruptions3d.random.random_bits`), then one compiled pass clips and replaces: bit-identical to the torch
ops, without the batch-sized draw and mask tensors. Images run on the threads of
:func:`corruptions3d.parallel.parallel_map`.
"""

from __future__ import annotations

import numba
import torch

from corruptions3d.parallel import parallel_map
from corruptions3d.random import generators

__all__ = ["salt_and_pepper"]


@numba.njit(nogil=True, cache=True)
def _salt_and_pepper(x, bits, low, high, out):  # pragma: no cover
    for i in range(x.shape[0]):
        if bits[i] < low:
            out[i] = 0
        elif bits[i] > high:
            out[i] = 1
        else:
            out[i] = min(max(x[i], 0), 1)


def salt_and_pepper(rgb: torch.Tensor, seeds: torch.Tensor, cut: torch.Tensor) -> torch.Tensor:
    """Compiled ``corruptions3d.functional.noise.salt_and_pepper``: same arguments and result (CPU tensors)."""
    src = rgb.contiguous()
    out = torch.empty_like(src)
    cuts = cut.tolist()

    def image(i: int, g: torch.Generator) -> None:
        bits = torch.empty(src.shape[1:], dtype=torch.int32).random_(generator=g)
        _salt_and_pepper(
            src[i].view(-1).numpy(), bits.view(-1).numpy(), cuts[i], 2**31 - 1 - cuts[i], out[i].view(-1).numpy()
        )

    parallel_map(image, range(len(cuts)), generators(seeds, "cpu"))
    return out
