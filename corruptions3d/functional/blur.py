"""ImageNet-C blurs (``imagecorruptions`` 1.1.2 parameters): defocus, glass, motion, zoom and gaussian blur.

Ops take ``(B,3,H,W)`` float in [0,1] and return the same, clipped. Borders follow the reference: defocus uses
OpenCV's reflect-101, gaussian/glass blur scikit-image's ``nearest`` (replicate), motion blur edge replication.
The helpers :func:`disk_kernel`, :func:`motion_taps`, :func:`tap_filter`, :func:`fft_filter2d` and
:func:`clipped_zoom` are shared with the weather ops.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import torch

from corruptions3d import filters
from corruptions3d import random as rnd
from corruptions3d.core import check_rgb, resolve_params, seeds_for
from corruptions3d.kernels import fused_kernel
from corruptions3d.random import Seeds

__all__ = ["defocus_blur", "gaussian_blur", "glass_blur", "motion_blur", "zoom_blur"]

DEFOCUS_BLUR = {"radius": (3, 4, 6, 8, 10), "alias_sigma": (0.1, 0.5, 0.5, 0.5, 0.5)}
GLASS_BLUR = {"sigma": (0.7, 0.9, 1.0, 1.1, 1.5), "max_delta": (1, 2, 2, 3, 4), "iterations": (2, 1, 3, 2, 2)}
MOTION_BLUR = {"radius": (10, 15, 15, 15, 20), "sigma": (3.0, 5.0, 8.0, 12.0, 15.0)}
ZOOM_BLUR = {
    "zooms": tuple(
        tuple(torch.arange(1.0, stop, step, dtype=torch.float64).tolist())
        for stop, step in ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03))
    )
}
GAUSSIAN_BLUR = {"sigma": (1.0, 2.0, 3.0, 4.0, 6.0)}


# ---------------------------------------------------------------- kernels and filters


@lru_cache(maxsize=64)
def disk_pieces(radius: int, alias_sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The two factors of the reference's defocus kernel: the normalised binary disk ``(2n+1, 2n+1)`` on
    ``-n..n``, ``n = max(8, r)``, and the Gaussian taps ``(ksize,)`` that anti-alias it (ksize 3 if r <= 8 else 5).
    float64."""
    n = max(8, radius)
    grid = torch.arange(-n, n + 1, dtype=torch.float64)
    disk = ((grid[:, None] ** 2 + grid[None, :] ** 2) <= radius**2).to(torch.float64)
    ksize = 3 if radius <= 8 else 5
    taps = torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2
    g = torch.exp(-(taps**2) / (2 * alias_sigma**2))
    return disk / disk.sum(), g / g.sum()


@lru_cache(maxsize=64)
def _disk(radius: int, alias_sigma: float) -> torch.Tensor:
    """The reference's anti-aliased disk: :func:`disk_pieces`' disk blurred by its Gaussian as OpenCV
    ``GaussianBlur`` does (reflect-101 border inside the kernel's own grid). ``(2n+1, 2n+1)`` float64."""
    disk, g = disk_pieces(radius, alias_sigma)
    return filters.conv_separable(disk[None, None], g[None], g[None], border="reflect101")[0, 0]


def disk_kernel(radius: torch.Tensor, alias_sigma: torch.Tensor) -> torch.Tensor:
    """Per-image defocus disks ``(B,K,K)`` for integer ``radius`` ``(B,)`` px, zero-padded to the largest."""
    pairs = [(round(r), float(s)) for r, s in zip(radius.tolist(), alias_sigma.tolist())]
    n = max(max(8, r) for r, _ in pairs)
    cache = {pr: _disk(*pr) for pr in set(pairs)}  # one kernel per distinct parameter pair
    out = torch.zeros(len(pairs), 2 * n + 1, 2 * n + 1, dtype=torch.float64)
    for i, pr in enumerate(pairs):
        m = (cache[pr].shape[0] - 1) // 2
        out[i, n - m : n + m + 1, n - m : n + m + 1] = cache[pr]
    return out.to(radius.device, torch.float32)


def motion_taps(
    radius: torch.Tensor, sigma: torch.Tensor, angle_deg: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reference's ImageMagick-style motion taps for per-image ``radius``, ``sigma`` (px) and angle ``(B,)``.

    Tap ``i`` of ``2r+1`` has one-sided Gaussian weight ``exp(-i²/2σ²)`` (normalised) and picks the pixel at offset
    ``(ceil(i·sin a - 1/2), ceil(i·cos a - 1/2))``; taps stop (weight 0) once an offset reaches the image size
    ``(H,W)``. Returns row and column offsets ``(B,T)`` int64 and weights ``(B,T)`` float64.
    """
    device = radius.device
    width = (2 * radius.round() + 1).to(torch.float64)
    n = int(width.max())
    i = torch.arange(n, device=device, dtype=torch.float64)[None]
    w = torch.exp(-(i**2) / (2 * sigma.to(torch.float64)[:, None] ** 2)) * (i < width[:, None])
    w = w / w.sum(1, keepdim=True)
    a = torch.deg2rad(angle_deg.to(torch.float64))[:, None]
    oy = torch.ceil(i * torch.sin(a) - 0.5).long()
    ox = torch.ceil(i * torch.cos(a) - 0.5).long()
    inside = ((oy.abs() < size[0]) & (ox.abs() < size[1])).long().cumprod(1).bool()  # the reference breaks here
    return oy, ox, w * inside


def tap_kernel(oy: torch.Tensor, ox: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Dense correlation kernels ``(B,K,K)`` (odd K) holding the taps of :func:`tap_filter` (offsets summed)."""
    m = int(torch.maximum(oy.abs(), ox.abs()).max())
    k = torch.zeros(len(w), (2 * m + 1) * (2 * m + 1), device=w.device, dtype=torch.float64)
    k.scatter_add_(1, (oy + m) * (2 * m + 1) + (ox + m), w.to(torch.float64))
    return k.view(-1, 2 * m + 1, 2 * m + 1)


@fused_kernel("tap_filter")
def tap_filter(x: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Sparse correlation with edge replication: ``out[b,c,y,x] = Σ_t w[b,t]·x[b,c,clamp(y+oy[b,t]),
    clamp(x+ox[b,t])]`` for ``(B,C,H,W)`` and taps ``(B,T)`` (the reference's shifted sum). Computed here as one
    FFT correlation with the dense :func:`tap_kernel`; the compiled CPU kernel sums the shifted rows directly."""
    return fft_filter2d(x, tap_kernel(oy, ox, w).to(x.dtype), "replicate")


def fft_size(n: int) -> int:
    """Smallest length >= ``n`` whose only prime factors are 2, 3 and 5 (fast for pocketfft and cuFFT)."""
    m = n
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def fft_filter2d(x: torch.Tensor, kernel: torch.Tensor, border: str) -> torch.Tensor:
    """Correlate each image of ``(B,C,H,W)`` with its own odd-sized kernel ``(B,Kh,Kw)`` via FFT (for big kernels)."""
    kh, kw = kernel.shape[-2:]
    xp = filters.pad(x, kw // 2, kw // 2, kh // 2, kh // 2, border)
    h, w = x.shape[-2:]
    s = (fft_size(xp.shape[-2]), fft_size(xp.shape[-1]))  # zero extension past the padding never wraps into the crop
    kf = torch.fft.rfft2(kernel.flip(-2, -1).to(x.dtype)[:, None], s=s)
    y = torch.fft.irfft2(torch.fft.rfft2(xp, s=s) * kf, s=s)
    return y[..., kh - 1 : kh - 1 + h, kw - 1 : kw - 1 + w]


def zoom_plan(n: int, zoom: torch.Tensor, centred: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Linear-interpolation plan of :func:`clipped_zoom` along an axis of ``n`` px for per-image ``zoom`` ``(B,)``:
    source indices ``i0``, ``i1`` ``(B,n)`` int64 and the weight ``frac`` ``(B,n)`` float64 of ``i1``. Indices
    address the centre crop inside the axis, or the crop alone (from 0) with ``centred=False``."""
    z = zoom.to(torch.float64)
    crop = torch.ceil(n / z)
    top = torch.div(n - crop, 2, rounding_mode="floor") if centred else torch.zeros_like(crop)
    out = torch.round(crop * z)
    pos = torch.arange(n, device=z.device, dtype=torch.float64)[None] * ((crop - 1) / (out - 1))[:, None]
    i0 = pos.floor()
    i1 = torch.minimum(i0 + 1, (crop - 1)[:, None])
    return (i0 + top[:, None]).long(), (i1 + top[:, None]).long(), pos - i0


def crop_size(n: int, zoom: torch.Tensor) -> int:
    """Rows (or columns) of an axis of ``n`` px that :func:`clipped_zoom` reads for the smallest of ``zoom`` ``(B,)``:
    ``ceil(n / min z)``."""
    return int(torch.ceil(n / zoom.to(torch.float64).min()))


def clipped_zoom(x: torch.Tensor, zoom: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Centre crop of ``ceil(H/z)`` rows/cols zoomed by per-image ``z`` ``(B,)`` with linear interpolation
    (``scipy.ndimage.zoom(order=1)`` sample grid), then ``[:H, :W]`` as in the reference. ``(B,C,H,W)``.

    With ``size=(H, W)``, ``x`` holds only the crops instead (top-left aligned, at least :func:`crop_size` rows and
    columns): the same zoom of a field that is never drawn outside its crop."""
    centred = size is None
    for dim in (2, 3):
        n = x.shape[dim] if centred else size[dim - 2]
        i0, i1, frac = zoom_plan(n, zoom.to(x.device), centred)
        frac = frac.to(x.dtype)
        x = _take(x, i0, dim) * (1 - _bshape(frac, dim)) + _take(x, i1, dim) * _bshape(frac, dim)
    return x


@fused_kernel("zoom_mean")
def zoom_mean(rgb: torch.Tensor, zooms: tuple[float, ...]) -> torch.Tensor:
    """Mean ``(B,C,H,W)`` of ``rgb`` and its :func:`clipped_zoom` by each factor in ``zooms`` (summed in order)."""
    out = rgb.clone()
    for z in zooms:
        out += clipped_zoom(rgb, torch.full((rgb.shape[0],), z, device=rgb.device, dtype=torch.float64))
    return out / (len(zooms) + 1)


def _bshape(t: torch.Tensor, dim: int) -> torch.Tensor:
    return t[:, None, :, None] if dim == 2 else t[:, None, None, :]


def _take(x: torch.Tensor, idx: torch.Tensor, dim: int) -> torch.Tensor:
    """Per-image index along ``dim`` (2 or 3) with ``idx`` ``(B,N)``."""
    shape = list(x.shape)
    shape[dim] = idx.shape[1]
    return x.gather(dim, _bshape(idx, dim).expand(shape))


def skimage_gaussian(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``skimage.filters.gaussian`` defaults: truncate 4, ``mode='nearest'`` (replicate)."""
    return filters.gaussian_blur(x, sigma, truncate=4.0, border="replicate")


# ---------------------------------------------------------------- corruptions


def defocus_blur(
    rgb: torch.Tensor, severity: int | None = None, params: Mapping[str, Any] | None = None, generator: Seeds = None
) -> torch.Tensor:
    """Disk (out-of-focus) blur of integer ``radius`` px, anti-aliased by a Gaussian of ``alias_sigma``;
    reflect-101 border (OpenCV ``filter2D``)."""
    p = resolve_params(DEFOCUS_BLUR, severity, params, check_rgb(rgb))
    return disk_filter(rgb, p["radius"], p["alias_sigma"])


@fused_kernel("disk_filter")
def disk_filter(rgb: torch.Tensor, radius: torch.Tensor, alias_sigma: torch.Tensor) -> torch.Tensor:
    """Correlate each image of ``(B,C,H,W)`` with its anti-aliased disk (:func:`disk_kernel` of integer ``radius``
    ``(B,)`` px and ``alias_sigma`` ``(B,)``), reflect-101 border, and clip to [0, 1] (as the reference): one FFT
    correlation here; the compiled CPU kernel sums disk columns from running column sums instead."""
    return fft_filter2d(rgb, disk_kernel(radius, alias_sigma), "reflect101").clamp_(0, 1)


def glass_blur(
    rgb: torch.Tensor, severity: int | None = None, params: Mapping[str, Any] | None = None, generator: Seeds = None
) -> torch.Tensor:
    """Frosted-glass blur: Gaussian(σ) → 8-bit truncation (as the reference) → local pixel shuffle → Gaussian(σ).

    The reference visits pixels ``h = H-δ … δ+1``, ``w = W-δ … δ+1`` in reverse raster order, ``iterations`` times,
    and copies into each the *current* value at a random offset in ``[-δ, δ-1]²`` (its "swap" is a copy in numpy).
    A pixel whose source was already visited therefore takes that pixel's result: values travel along chains.
    We draw all offsets at once and resolve the chains by pointer jumping, which reproduces the sequential loop's
    output distribution exactly, batched (only the random numbers differ).
    """
    p = resolve_params(GLASS_BLUR, severity, params, check_rgb(rgb))
    seeds = seeds_for(rgb, generator)
    b, c, h, w = rgb.shape
    x = torch.floor(skimage_gaussian(rgb, p["sigma"]).clamp(0, 1) * 255) / 255
    delta = p["max_delta"].round().long()[:, None, None]
    iters = p["iterations"].round().long()
    ys = torch.arange(h, device=rgb.device)[None, :, None]
    xs = torch.arange(w, device=rgb.device)[None, None, :]
    interior = (ys > delta) & (ys <= h - delta) & (xs > delta) & (xs <= w - delta)  # (B,H,W)
    flat = (ys * w + xs).expand(b, h, w)
    for it in range(int(iters.max())):
        u = rnd.rand(seeds, (2, h, w), rgb.device, torch.float32, stream=it)
        dy = (u[:, 0] * 2 * delta).floor().long().clamp(max=2 * delta - 1) - delta
        dx = (u[:, 1] * 2 * delta).floor().long().clamp(max=2 * delta - 1) - delta
        active = interior & (it < iters)[:, None, None]
        src = torch.where(active, flat + dy * w + dx, flat).view(b, -1)
        # a source later in raster order that is itself visited was already overwritten: follow its pointer
        later = ((dy > 0) | ((dy == 0) & (dx > 0))).view(b, -1)
        link = active.view(b, -1) & later & interior.view(b, -1).gather(1, src)
        while bool(link.any()):
            nxt = src.gather(1, src)
            link_next = link.gather(1, src)
            src = torch.where(link, nxt, src)
            link = link & link_next
        x = x.view(b, c, -1).gather(2, src[:, None].expand(b, c, -1)).view(b, c, h, w)
    return skimage_gaussian(x, p["sigma"]).clamp(0, 1)


def motion_blur(
    rgb: torch.Tensor, severity: int | None = None, params: Mapping[str, Any] | None = None, generator: Seeds = None
) -> torch.Tensor:
    """Linear motion blur: ``2·radius+1`` one-sided Gaussian taps along a random angle U(-45°, 45°) per image,
    edge-replicated (the reference's ImageMagick emulation)."""
    p = resolve_params(MOTION_BLUR, severity, params, check_rgb(rgb))
    angle = rnd.uniform(seeds_for(rgb, generator), -45.0, 45.0, device=rgb.device)
    return tap_filter(rgb, *motion_taps(p["radius"], p["sigma"], angle, tuple(rgb.shape[-2:]))).clamp_(0, 1)


def zoom_blur(
    rgb: torch.Tensor, severity: int | None = None, params: Mapping[str, Any] | None = None, generator: Seeds = None
) -> torch.Tensor:
    """Mean of the image and its centre zooms by each factor in ``zooms`` (a tuple shared by the batch)."""
    p = resolve_params(ZOOM_BLUR, severity, params, check_rgb(rgb))
    zooms = [float(z) for z in p["zooms"]]
    if not zooms or min(zooms) < 1:
        raise ValueError(f"zoom_blur: zooms must be a non-empty sequence of factors >= 1, got {p['zooms']!r}")
    return zoom_mean(rgb, tuple(zooms)).clamp_(0, 1)


def gaussian_blur(
    rgb: torch.Tensor, severity: int | None = None, params: Mapping[str, Any] | None = None, generator: Seeds = None
) -> torch.Tensor:
    """Gaussian blur of ``sigma`` px (scikit-image: truncate 4, replicate border)."""
    p = resolve_params(GAUSSIAN_BLUR, severity, params, check_rgb(rgb))
    return skimage_gaussian(rgb, p["sigma"]).clamp(0, 1)
