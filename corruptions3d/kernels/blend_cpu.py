"""Final blends compiled for the CPU: ``corruptions3d.functional.weather.frost_blend`` and ``snow_blend``, and
``corruptions3d.functional.lighting.relight_ranked`` (shadow).

One pass per image reads its inputs in place (frost: its crop window of the texture bank; snow: the layer and its
180° rotation; shadow: the chosen relighting, after one pass over the picked ones for their brightness) and
writes the clipped blend in the torch ops' order of float operations (bit-identical), without the intermediate
batch-sized temporaries. Images run on the threads of :func:`corruptions3d.parallel.parallel_map`.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from corruptions3d import memory
from corruptions3d.functional import lighting, weather
from corruptions3d.parallel import parallel_map

__all__ = ["frost_blend", "relight_ranked", "snow_blend"]


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
    out = memory.empty_like(rgb)
    dtype = rgb.numpy().dtype.type
    fc, ic = frost_coeff.to(rgb.dtype).tolist(), image_coeff.to(rgb.dtype).tolist()

    def image(i: int, t: int, y: int, x: int) -> None:
        crop = bank[t, :, y : y + h, x : x + w].numpy()
        _blend(crop, rgb[i].numpy(), dtype(fc[i]), dtype(ic[i]), out[i].numpy())

    parallel_map(image, range(len(fc)), *windows.T.tolist())
    return out


@numba.njit(nogil=True, cache=True)
def _snow(rgb, layer, blend, out):  # pragma: no cover
    """``out = clip(b·x + (1-b)·max(x, 1.5·gray + 0.5) + L + flip(L))`` for ``(3,H,W)``, ``L = round(255·layer)/255``
    of ``(H,W)``; the float operations of the torch ops, in their order and precision."""
    t = rgb.dtype.type
    h, w = layer.shape
    k255, k15, k05 = t(255), t(1.5), t(0.5)
    g0, g1, g2 = t(weather.GRAY[0]), t(weather.GRAY[1]), t(weather.GRAY[2])
    rest = t(1) - blend
    for y in range(h):
        for x in range(w):
            gray = rgb[0, y, x] * g0 + rgb[1, y, x] * g1 + rgb[2, y, x] * g2
            lift = gray * k15 + k05
            snow = np.rint(layer[y, x] * k255) / k255
            snow_flip = np.rint(layer[h - 1 - y, w - 1 - x] * k255) / k255
            for c in range(3):
                v = rgb[c, y, x]
                v = blend * v + rest * max(v, lift) + snow + snow_flip
                out[c, y, x] = min(max(v, t(0)), t(1))


def snow_blend(rgb: torch.Tensor, layer: torch.Tensor, blend: torch.Tensor) -> torch.Tensor:
    """Compiled ``corruptions3d.functional.weather.snow_blend``: same arguments and result (CPU tensors)."""
    if layer.dtype != rgb.dtype or rgb.shape[1] != 3:
        return weather.snow_blend.reference(rgb, layer, blend)
    src, lay = rgb.contiguous(), layer.contiguous()
    out = memory.empty_like(src)
    dtype = src.numpy().dtype.type
    b = blend.to(rgb.dtype).tolist()
    parallel_map(lambda i: _snow(src[i].numpy(), lay[i, 0].numpy(), dtype(b[i]), out[i].numpy()), range(len(b)))
    return out


@numba.njit(nogil=True, cache=True)
def _relight_ranked(rgb, lights, picked, rank, gain, out):  # pragma: no cover
    """``out = clip(rgb · (L·gain))``, ``L`` the ``rank``-th brightest of ``lights[picked]`` ``(P,H,W)`` (pixel
    means accumulated in float64 per column, then summed; ties keep the pick order)."""
    h, w = lights.shape[1], lights.shape[2]
    means = np.empty(picked.shape[0])
    column = np.empty(w)
    for i in range(picked.shape[0]):
        column[:] = 0
        for y in range(h):
            row = lights[picked[i], y]
            for x in range(w):
                column[x] += row[x]
        means[i] = column.sum() / (h * w)
    order = np.argsort(-means, kind="mergesort")  # stable: equal means keep the pick order
    light = lights[picked[order[rank - 1]]]
    zero, one = rgb.dtype.type(0), rgb.dtype.type(1)
    for c in range(rgb.shape[0]):
        for y in range(h):
            for x in range(w):
                out[c, y, x] = min(max(rgb[c, y, x] * (light[y, x] * gain), zero), one)


def relight_ranked(
    rgb: torch.Tensor, lights: torch.Tensor, picked: torch.Tensor, rank: torch.Tensor, gain: torch.Tensor
) -> torch.Tensor:
    """Compiled ``corruptions3d.functional.lighting.relight_ranked``: same arguments and result (CPU tensors) but
    for lights whose pixel means agree to float32 rounding (~1e-7 relative), which the two may rank differently."""
    if lights.dtype != rgb.dtype or (torch.is_grad_enabled() and rgb.requires_grad):
        return lighting.relight_ranked.reference(rgb, lights, picked, rank, gain)
    src, lit = rgb.contiguous(), lights.contiguous()
    out = memory.empty_like(src)
    dtype = src.numpy().dtype.type
    g, r, p = gain.to(rgb.dtype).tolist(), rank.tolist(), picked.cpu().numpy()

    def image(i: int) -> None:
        _relight_ranked(src[i].numpy(), lit[i].numpy(), np.ascontiguousarray(p[i]), r[i], dtype(g[i]), out[i].numpy())

    parallel_map(image, range(len(g)))
    return out
