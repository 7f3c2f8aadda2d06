"""Frost's texture blend compiled for the CPU: ``corruptions3d.functional.weather.frost_blend``.

One pass per image reads its crop window of the texture bank in place and the image, and writes
``clip(frost_coeff·crop + image_coeff·rgb)`` in the torch ops' order of float operations (bit-identical), without
the stacked crops and the scaled-image temporary. Images run on the threads of
:func:`corruptions3d.parallel.parallel_map`.
"""

from __future__ import annotations

import numba
import torch

from corruptions3d.functional import weather
from corruptions3d.parallel import parallel_map

__all__ = ["frost_blend"]


@numba.njit(nogil=True, cache=True)
def _blend(crop, rgb, frost_coeff, image_coeff, out):  # pragma: no cover
    """``out = clip(frost_coeff·crop + image_coeff·rgb)`` for ``(3,H,W)`` arrays (``crop`` may be strided)."""
    for c in range(rgb.shape[0]):
        for y in range(rgb.shape[1]):
            for x in range(rgb.shape[2]):
                out[c, y, x] = min(max(crop[c, y, x] * frost_coeff + image_coeff * rgb[c, y, x], 0), 1)


def frost_blend(
    rgb: torch.Tensor, bank: torch.Tensor, windows: torch.Tensor, frost_coeff: torch.Tensor, image_coeff: torch.Tensor
) -> torch.Tensor:
    """Compiled ``corruptions3d.functional.weather.frost_blend``: same arguments and result (CPU tensors)."""
    if bank.dtype != rgb.dtype or not rgb.is_contiguous():
        return weather.frost_blend.reference(rgb, bank, windows, frost_coeff, image_coeff)
    h, w = rgb.shape[-2:]
    out = torch.empty_like(rgb)
    dtype = rgb.numpy().dtype.type
    fc, ic = frost_coeff.to(rgb.dtype).tolist(), image_coeff.to(rgb.dtype).tolist()

    def image(i: int, t: int, y: int, x: int) -> None:
        crop = bank[t, :, y : y + h, x : x + w].numpy()
        _blend(crop, rgb[i].numpy(), dtype(fc[i]), dtype(ic[i]), out[i].numpy())

    parallel_map(image, range(len(fc)), *windows.T.tolist())
    return out
