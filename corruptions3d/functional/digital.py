"""ImageNet-C digital and colour ops (``imagecorruptions`` 1.1.2 parameters): brightness, contrast, saturate,
elastic_transform, pixelate, jpeg_compression.

Ops take ``(B,3,H,W)`` float in [0,1] and return the same, clipped. Brightness and saturate change one HSV
channel as scikit-image's ``rgb2hsv``/``hsv2rgb`` round trip does, in closed form on RGB (no hue computed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import numba
import numpy as np
import torch
import torch.nn.functional as F

from corruptions3d import filters, memory
from corruptions3d import random as rnd
from corruptions3d.core import check_rgb, per_image, resolve_params, seeds_for
from corruptions3d.kernels import fused_kernel
from corruptions3d.parallel import parallel_map
from corruptions3d.random import Seeds

__all__ = ["brightness", "contrast", "elastic_transform", "jpeg_compression", "pixelate", "saturate"]

BRIGHTNESS = {"value_shift": (0.1, 0.2, 0.3, 0.4, 0.5)}
CONTRAST = {"factor": (0.4, 0.3, 0.2, 0.1, 0.05)}
SATURATE = {"scale": (0.3, 0.1, 2.0, 5.0, 20.0), "shift": (0.0, 0.0, 0.0, 0.1, 0.2)}
ELASTIC_TRANSFORM = {"alpha": tuple(250 * a for a in (0.05, 0.065, 0.085, 0.1, 0.12))}
PIXELATE = {"scale": (0.6, 0.5, 0.4, 0.3, 0.25)}
JPEG_COMPRESSION = {"quality": (25, 18, 15, 10, 7)}


@fused_kernel("brightness")
def brightness(
    rgb: torch.Tensor, severity: int | None = None, params: Mapping[str, Any] | None = None, generator: Seeds = None
) -> torch.Tensor:
    """Add ``value_shift`` to the HSV value channel (clipped), keeping hue and saturation.

    With hue and saturation fixed every RGB channel is proportional to the value ``V``, so the HSV round trip is
    ``rgb · V'/V`` in closed form (black, ``V = 0``, has hue and saturation 0 and becomes gray ``V'``).
    """
    p = resolve_params(BRIGHTNESS, severity, params, check_rgb(rgb))
    rgb = rgb.clamp(0, 1)
    v = rgb.amax(1, keepdim=True)
    v_new = (v + per_image(p["value_shift"])).clamp_(0, 1)
    ratio = torch.where(v > 0, v_new / v, 0.0)
    return torch.addcmul(torch.where(v > 0, 0.0, v_new), rgb, ratio).clamp_(0, 1)


@fused_kernel("contrast")
def contrast(
    rgb: torch.Tensor, severity: int | None = None, params: Mapping[str, Any] | None = None, generator: Seeds = None
) -> torch.Tensor:
    """Scale deviations from each image's per-channel mean by ``factor``."""
    p = resolve_params(CONTRAST, severity, params, check_rgb(rgb))
    mean = rgb.mean((2, 3), keepdim=True)
    return (rgb - mean).mul_(per_image(p["factor"])).add_(mean).clamp_(0, 1)


@fused_kernel("saturate")
def saturate(
    rgb: torch.Tensor, severity: int | None = None, params: Mapping[str, Any] | None = None, generator: Seeds = None
) -> torch.Tensor:
    """HSV saturation ``S -> clip(S·scale + shift)`` (severities 1-2 desaturate, 3-5 oversaturate).

    With hue and value fixed, ``V - channel`` is proportional to ``S``, so the HSV round trip is
    ``V - (V - rgb)·S'/S`` in closed form. Gray pixels (``S = 0``) have hue 0 (red) as in scikit-image:
    they become ``(V, V(1-S'), V(1-S'))``.
    """
    p = resolve_params(SATURATE, severity, params, check_rgb(rgb))
    rgb = rgb.clamp(0, 1)
    v = rgb.amax(1, keepdim=True)
    chroma = v - rgb.amin(1, keepdim=True)
    s = torch.where(v > 0, chroma / v, 0.0)
    s_new = (s * per_image(p["scale"]) + per_image(p["shift"])).clamp_(0, 1)
    gray = chroma <= 0
    ratio = torch.where(gray, 0.0, s_new / torch.where(gray, 1.0, s))
    out = torch.addcmul(v, v - rgb, ratio, value=-1)
    red_hue = torch.cat((v, v * (1 - s_new), v * (1 - s_new)), 1)  # hue 0 at saturation S'
    return torch.where(gray, red_hue, out).clamp_(0, 1)


def elastic_transform(
    rgb: torch.Tensor, severity: int | None = None, params: Mapping[str, Any] | None = None, generator: Seeds = None
) -> torch.Tensor:
    """Smooth random warp (the ``imagecorruptions`` variant, no affine part).

    Displacements ``U(-0.005H, 0.005H)`` per pixel, Gaussian-smoothed with σ = 0.01·(H, W) (truncate 3,
    symmetric border), times ``alpha``; bilinear resampling with symmetric reflection (scipy ``mode='reflect'``).
    """
    p = resolve_params(ELASTIC_TRANSFORM, severity, params, check_rgb(rgb))
    seeds = seeds_for(rgb, generator)
    b, _, h, w = rgb.shape
    max_d = 0.005 * h
    d = (rnd.rand(seeds, (2, h, w), rgb.device, rgb.dtype) * 2 - 1) * max_d
    ky = filters.gaussian_kernel1d(torch.full((b,), 0.01 * h, device=rgb.device), int(3 * 0.01 * h + 0.5))
    kx = filters.gaussian_kernel1d(torch.full((b,), 0.01 * w, device=rgb.device), int(3 * 0.01 * w + 0.5))
    d = filters.conv_separable(d, kx, ky, border="symmetric") * per_image(p["alpha"])
    ys = torch.arange(h, device=rgb.device, dtype=rgb.dtype)[:, None] + d[:, 1]  # d[:,0] is dx, d[:,1] is dy
    xs = torch.arange(w, device=rgb.device, dtype=rgb.dtype)[None, :] + d[:, 0]
    grid = torch.stack(((2 * xs + 1) / w - 1, (2 * ys + 1) / h - 1), -1)
    out = F.grid_sample(rgb, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return out.clamp(0, 1)


def _box_plan(n: int, m: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pillow BOX downscale from ``n`` to ``m`` samples read back by NEAREST upscale to ``n``: the input range
    ``[lo, hi)`` averaged into each of the ``m`` samples ``(m,)`` and the sample read by each output ``(n,)``, int64.

    Float64 arithmetic in Pillow's order (support window, box test ``-1/2 < t <= 1/2``, and the NEAREST walk that
    accumulates ``m/n`` per output pixel) so ties resolve as in Pillow.
    """
    mf, nf = torch.tensor(float(m), dtype=torch.float64), torch.tensor(float(n), dtype=torch.float64)
    step = (mf / nf).expand(n).clone()  # tensor/tensor: torch may turn a division by a Python scalar into a product
    step[0] = step[0] * 0.5
    nearest = torch.floor(step.cumsum(0)).long().clamp_(max=m - 1)
    scale = nf / mf
    center = (torch.arange(m, dtype=torch.float64) + 0.5) * scale
    support = 0.5 * scale
    lo = torch.trunc(center - support + 0.5).clamp(min=0)
    hi = torch.trunc(center + support + 0.5).clamp(max=n)

    def inside(x: torch.Tensor) -> torch.Tensor:
        t = (x - center + 0.5) / scale
        return (t > -0.5) & (t <= 0.5)

    lo = lo + (~inside(lo)).to(lo.dtype)
    hi = hi - (~inside(hi - 1)).to(hi.dtype)
    hi = torch.maximum(hi, lo + 1)
    return lo.long().to(device), hi.long().to(device), nearest.to(device)


def _box_down(x: torch.Tensor, dim: int, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Means of ``x`` over the index ranges ``[lo, hi)`` along ``dim``: every input line added once into its range's
    sum (``index_add_``). Pillow's ranges may leave a line out at a rounding tie; such lines are skipped."""
    counts = hi - lo
    block = torch.repeat_interleave(torch.arange(len(lo), device=x.device), counts)
    offsets = counts.cumsum(0) - counts
    lines = torch.arange(len(block), device=x.device) + torch.repeat_interleave(lo - offsets, counts)
    partition = len(lines) == x.shape[dim] and bool((lines == torch.arange(len(lines), device=x.device)).all())
    src = x if partition else x.index_select(dim, lines)
    shape = list(x.shape)
    shape[dim] = len(lo)
    sums = torch.zeros(shape, dtype=x.dtype, device=x.device).index_add_(dim, block, src)
    return sums.div_(counts.to(x.dtype).view(-1, *[1] * (x.dim() - 1 - dim)))


@fused_kernel("box_pixelate")
def box_pixelate(
    x: torch.Tensor,
    lo_h: torch.Tensor,
    hi_h: torch.Tensor,
    near_h: torch.Tensor,
    lo_w: torch.Tensor,
    hi_w: torch.Tensor,
    near_w: torch.Tensor,
) -> torch.Tensor:
    """Block means of ``x`` ``(B,C,H,W)`` over row ranges ``[lo_h, hi_h)`` then column ranges ``[lo_w, hi_w)``,
    clipped to [0,1], read back at rows ``near_h`` ``(H,)`` and columns ``near_w`` ``(W,)`` (plans of
    :func:`_box_plan`)."""
    x = _box_down(_box_down(x, 2, lo_h, hi_h), 3, lo_w, hi_w).clamp_(0, 1)
    return x.index_select(3, near_w).index_select(2, near_h)  # columns of the small image first; rows are copies


def pixelate(
    rgb: torch.Tensor, severity: int | None = None, params: Mapping[str, Any] | None = None, generator: Seeds = None
) -> torch.Tensor:
    """Box (area) downscale to ``int(scale·size)`` then nearest upscale back (Pillow BOX + NEAREST).

    Images sharing a downscaled size are processed together: block sums by ``index_add_``, read back by index."""
    p = resolve_params(PIXELATE, severity, params, check_rgb(rgb))
    _, _, h, w = rgb.shape
    # int(size·scale) in float64 on the scale as written (6 decimals), not its float32 copy
    sizes = [(max(1, int(h * v)), max(1, int(w * v))) for v in (round(v, 6) for v in p["scale"].tolist())]
    groups = dict.fromkeys(sizes)
    out = None if len(groups) == 1 else torch.empty_like(rgb)
    for mh, mw in groups:
        lo_h, hi_h, near_h = _box_plan(h, mh, rgb.device)
        lo_w, hi_w, near_w = _box_plan(w, mw, rgb.device)
        idx = torch.tensor([i for i, s in enumerate(sizes) if s == (mh, mw)], device=rgb.device)
        up = box_pixelate(rgb if out is None else rgb.index_select(0, idx), lo_h, hi_h, near_h, lo_w, hi_w, near_w)
        if out is None:
            return up
        out.index_copy_(0, idx, up)
    return out


@numba.njit(nogil=True, cache=True)
def _to_bytes(x, out):  # pragma: no cover
    """Flat float in [0,1] -> uint8 ``round(255·x)`` (float32 product, half to even), clipped."""
    for i in range(x.shape[0]):
        out[i] = min(max(np.rint(x[i] * np.float32(255)), np.float32(0)), np.float32(255))


@numba.njit(nogil=True, cache=True)
def _from_bytes(v, out):  # pragma: no cover
    """Flat uint8 -> ``v / 255`` in ``out``'s dtype."""
    scale = out.dtype.type(255)
    for i in range(v.shape[0]):
        out[i] = out.dtype.type(v[i]) / scale


def _jpeg_round_trip(image: torch.Tensor, decoded: torch.Tensor, quality: int) -> None:
    """One ``(3,H,W)`` image through libjpeg at ``quality`` (OpenCV's codec: the same bytes and pixels as the
    reference's Pillow, and it releases the GIL for the whole call), written into ``decoded``.

    Runs on a pool thread, so the 8-bit conversions are compiled loops over planes (single-threaded, GIL
    released) and OpenCV's (de)interleaving, rather than torch ops, whose intra-op threads would oversubscribe the
    cores the pool already uses.
    """
    planes = image.detach().cpu().contiguous().numpy()
    bytes_ = np.empty(planes.shape, np.uint8)
    _to_bytes(planes.reshape(-1), bytes_.reshape(-1))
    ok, data = cv2.imencode(".jpg", cv2.merge(list(bytes_[::-1])), [cv2.IMWRITE_JPEG_QUALITY, quality])  # BGR
    if not ok:
        raise RuntimeError(f"jpeg_compression: libjpeg could not encode an image of shape {tuple(image.shape)}")
    direct = decoded.device.type == "cpu" and decoded.is_contiguous()
    target = decoded if direct else torch.empty(decoded.shape, dtype=decoded.dtype)
    for plane, channel in zip(cv2.split(cv2.imdecode(data, cv2.IMREAD_COLOR))[::-1], target.numpy()):
        _from_bytes(plane.reshape(-1), channel.reshape(-1))
    if not direct:
        decoded.copy_(target)


def jpeg_compression(
    rgb: torch.Tensor, severity: int | None = None, params: Mapping[str, Any] | None = None, generator: Seeds = None
) -> torch.Tensor:
    """JPEG round trip at ``quality`` (libjpeg, 4:2:0 chroma, as the reference's Pillow). The image is rounded to 8
    bits first. libjpeg codes one image per call and releases the GIL, so the images go through
    :func:`corruptions3d.parallel.parallel_map`'s threads."""
    p = resolve_params(JPEG_COMPRESSION, severity, params, check_rgb(rgb))
    quality = [round(q) for q in p["quality"].tolist()]
    if not all(1 <= q <= 100 for q in quality):
        raise ValueError(f"jpeg_compression: quality must be in 1..100, got {quality}")
    out = memory.empty_like(rgb)
    parallel_map(_jpeg_round_trip, rgb, out, quality)
    return out
