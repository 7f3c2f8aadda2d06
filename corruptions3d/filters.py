"""Batched linear filters with per-image kernels (grouped convolutions) and explicit border modes.

Border names follow their library of origin so a port can say what it reproduces:

- ``replicate``: edge pixel repeated (scikit-image ``mode='nearest'``, torch ``replicate``).
- ``reflect101``: mirror without repeating the edge (OpenCV default ``BORDER_REFLECT_101``, scipy ``mirror``).
- ``symmetric``: mirror repeating the edge (scipy/scikit-image ``reflect``, OpenCV ``BORDER_REFLECT``).
- ``constant``: zeros.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from corruptions3d.kernels import fused_kernel

BORDERS = ("replicate", "reflect101", "symmetric", "constant")


def pad(x: torch.Tensor, left: int, right: int, top: int, bottom: int, border: str) -> torch.Tensor:
    """Pad the last two dims of ``(B,C,H,W)`` with one of :data:`BORDERS` (pads may exceed the size)."""
    if border not in BORDERS:
        raise ValueError(f"unknown border {border!r}; expected one of {BORDERS}")
    if max(left, right, top, bottom) == 0:
        return x
    if border == "constant":
        return F.pad(x, (left, right, top, bottom))
    h, w = x.shape[-2:]
    torch_mode = {"replicate": "replicate", "reflect101": "reflect"}.get(border)
    fits = border == "replicate" or (max(top, bottom) < h and max(left, right) < w)  # torch's reflect: pad < size
    if torch_mode and fits and x.is_floating_point() and 3 <= x.dim() <= 5:
        return F.pad(x, (left, right, top, bottom), mode=torch_mode)  # native padding kernels (faster than a gather)
    iy = border_index(torch.arange(-top, h + bottom, device=x.device), h, border)
    ix = border_index(torch.arange(-left, w + right, device=x.device), w, border)
    return x.index_select(-2, iy).index_select(-1, ix)


def border_index(i: torch.Tensor, n: int, border: str) -> torch.Tensor:
    """Source index in ``[0, n)`` of (padded) positions ``i`` under ``border`` (not ``constant``)."""
    if border == "replicate" or n == 1:
        return i.clamp(0, n - 1)
    if border == "reflect101":
        period = 2 * (n - 1)
        i = i.remainder(period)
        return torch.where(i >= n, period - i, i)
    period = 2 * n  # symmetric
    i = i.remainder(period)
    return torch.where(i >= n, period - 1 - i, i)


def gaussian_kernel1d(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Normalised Gaussian taps ``(B, 2·radius+1)`` for per-image ``sigma`` ``(B,)`` in pixels.

    ``sigma <= 0`` gives a delta (identity filter).
    """
    n = torch.arange(-radius, radius + 1, device=sigma.device, dtype=torch.float32)
    s = sigma.to(torch.float32).clamp(min=1e-6).view(-1, 1)
    k = torch.exp(-(n**2) / (2 * s**2))
    k = k / k.sum(1, keepdim=True)
    delta = (n == 0).to(k).expand_as(k)
    return torch.where((sigma <= 0).view(-1, 1), delta, k)


@fused_kernel("conv_separable")
def conv_separable(
    x: torch.Tensor, kx: torch.Tensor, ky: torch.Tensor | None = None, border: str = "replicate"
) -> torch.Tensor:
    """Filter each image of ``(B,C,H,W)`` with its own separable kernel: rows ``kx`` ``(B,Kx)``,
    columns ``ky`` ``(B,Ky)`` (default ``kx``). Kernels are odd-length and centred (correlation)."""
    ky = kx if ky is None else ky
    b, c, h, w = x.shape
    rx, ry = kx.shape[1] // 2, ky.shape[1] // 2
    y = pad(x, rx, rx, ry, ry, border).reshape(1, b * c, h + 2 * ry, w + 2 * rx)
    wx = kx.to(x.dtype).repeat_interleave(c, 0).view(b * c, 1, 1, -1)
    wy = ky.to(x.dtype).repeat_interleave(c, 0).view(b * c, 1, -1, 1)
    y = F.conv2d(y, wx, groups=b * c)
    y = F.conv2d(y, wy, groups=b * c)
    return y.view(b, c, h, w)


def stencil(x: torch.Tensor, kernel: Sequence[Sequence[float]], border: str = "replicate") -> torch.Tensor:
    """Correlate every plane of ``(B,C,H,W)`` with one small odd-sized kernel (nested lists, rows first) as a sum
    of shifted views of the padded batch, zero taps skipped. Integer-valued data with integer taps stay exact (a
    Sobel or emboss filter of 8-bit levels); on the CPU this is several times faster than a one-channel convolution.
    """
    kh, kw = len(kernel), len(kernel[0])
    if kh % 2 == 0 or kw % 2 == 0 or any(len(row) != kw for row in kernel):
        raise ValueError(f"stencil: the kernel must be a rectangular odd-sized nested list, got {kernel!r}")
    h, w = x.shape[-2:]
    xp = pad(x, kw // 2, kw // 2, kh // 2, kh // 2, border)
    out = torch.zeros_like(x)
    for dy, row in enumerate(kernel):
        for dx, k in enumerate(row):
            if k != 0:
                out.add_(xp[..., dy : dy + h, dx : dx + w], alpha=k)
    return out


def gaussian_blur(
    x: torch.Tensor, sigma: torch.Tensor, truncate: float = 4.0, border: str = "replicate"
) -> torch.Tensor:
    """Per-image Gaussian blur of ``(B,C,H,W)``; radius ``int(truncate·max σ + 0.5)`` (scipy's rule)."""
    radius = int(truncate * float(sigma.max()) + 0.5)
    k = gaussian_kernel1d(sigma, radius)
    return conv_separable(x, k, k, border)
