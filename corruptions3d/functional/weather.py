"""ImageNet-C weather ops (``imagecorruptions`` 1.1.2 parameters): snow, frost, fog and spatter.

Ops take ``(B,3,H,W)`` float in [0,1] and return the same, clipped. Each image draws from its own random streams.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from corruptions3d import filters
from corruptions3d import random as rnd
from corruptions3d.core import check_rgb, per_image, resolve_params, seeds_for
from corruptions3d.frost import TEXTURE_SOURCES, frost_bank
from corruptions3d.functional.blur import clipped_zoom, crop_size, motion_taps, skimage_gaussian, tap_filter
from corruptions3d.kernels import fused_kernel
from corruptions3d.random import Seeds

__all__ = ["fog", "frost", "snow", "spatter"]

SNOW = {
    "mean": (0.1, 0.2, 0.55, 0.55, 0.55),
    "std": (0.3, 0.3, 0.3, 0.3, 0.3),
    "zoom": (3.0, 2.0, 4.0, 4.5, 2.5),
    "threshold": (0.5, 0.5, 0.9, 0.85, 0.85),
    "blur_radius": (10, 12, 12, 12, 12),
    "blur_sigma": (4.0, 4.0, 8.0, 8.0, 12.0),
    "blend": (0.8, 0.7, 0.7, 0.65, 0.55),
}
FROST = {
    "image_coeff": (1.0, 0.8, 0.7, 0.65, 0.6),
    "frost_coeff": (0.4, 0.6, 0.7, 0.7, 0.75),
}
FOG = {"strength": (1.5, 2.0, 2.5, 2.5, 3.0), "wibble_decay": (2.0, 2.0, 1.7, 1.5, 1.4)}
SPATTER = {
    "mean": (0.65, 0.65, 0.65, 0.65, 0.67),
    "std": (0.3, 0.3, 0.3, 0.3, 0.4),
    "blur_sigma": (4.0, 3.0, 2.0, 1.0, 1.0),
    "threshold": (0.69, 0.68, 0.68, 0.65, 0.65),
    "intensity": (0.6, 0.6, 0.5, 1.5, 1.5),
    "mode": (0, 0, 0, 1, 1),
}
WATER = (175 / 255, 238 / 255, 238 / 255)
"""Pale turquoise, added to (R, G, B) as in the reference's water drops."""
_MUD = (63 / 255, 42 / 255, 20 / 255)
_SOBEL = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]  # d/dx; its transpose is d/dy
_EMBOSS = [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]
GRAY = (0.299, 0.587, 0.114)
"""OpenCV's RGB2GRAY weights."""


def _gray(rgb: torch.Tensor) -> torch.Tensor:
    return (rgb * torch.tensor(GRAY, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)).sum(1, keepdim=True)


def snow(
    rgb: torch.Tensor, severity: int | None = None, params: Mapping[str, Any] | None = None, generator: Seeds = None
) -> torch.Tensor:
    """Snowflakes: N(mean, std) layer → centre zoom → threshold → motion blur at U(-135°, -45°) → 8-bit rounding;
    image ``blend·x + (1-blend)·max(x, 1.5·gray + 0.5)`` plus the layer and its 180° rotation.

    The reference motion-blurs the zoomed layer before cropping it to H×W (≤ ⌈zoom⌉ extra rows/cols); we crop
    first, which only changes the edge replication along the bottom/right border. The reference draws an H×W
    layer and zooms its centre crop; we draw only the crop (the same distribution, 1/zoom² of the random numbers).
    """
    p = resolve_params(SNOW, severity, params, check_rgb(rgb))
    seeds = seeds_for(rgb, generator)
    h, w = rgb.shape[-2:]
    crops = [(1, crop_size(h, z), crop_size(w, z)) for z in p["zoom"].view(-1, 1)]  # what each zoom reads
    field = rnd.randn_regions(seeds, crops, tuple(map(max, zip(*crops))), rgb.device, rgb.dtype)
    layer = per_image(p["mean"]) + per_image(p["std"]) * field
    layer = clipped_zoom(layer, p["zoom"], (h, w))
    layer = torch.where(layer < per_image(p["threshold"]), torch.zeros_like(layer), layer).clamp(0, 1)
    angle = rnd.uniform(seeds, -135.0, -45.0, device=rgb.device, stream=1)
    layer = tap_filter(layer, *motion_taps(p["blur_radius"], p["blur_sigma"], angle, (h, w)))
    return snow_blend(rgb, layer, p["blend"])


@fused_kernel("snow_blend")
def snow_blend(rgb: torch.Tensor, layer: torch.Tensor, blend: torch.Tensor) -> torch.Tensor:
    """``clip(blend·x + (1-blend)·max(x, 1.5·gray(x) + 0.5) + L + flip(L))`` with ``L`` the snow ``layer``
    ``(B,1,H,W)`` rounded to 8 bits and ``flip`` its 180° rotation; ``blend`` ``(B,)``."""
    layer = torch.round(layer * 255) / 255
    blend = per_image(blend).to(rgb.dtype)
    x = blend * rgb + (1 - blend) * torch.maximum(rgb, _gray(rgb) * 1.5 + 0.5)
    return (x + layer + layer.flip(-2, -1)).clamp(0, 1)


def frost(
    rgb: torch.Tensor, severity: int | None = None, params: Mapping[str, Any] | None = None, generator: Seeds = None
) -> torch.Tensor:
    """``clip(image_coeff·x + frost_coeff·F)`` with F a random crop of one of five frost textures.

    ``params={"texture": ...}`` (not part of the severity table): ``'procedural'`` (default) uses the seeded
    textures of :mod:`corruptions3d.frost`;
    ``texture='imagecorruptions'`` loads the frost photographs shipped with an installed ``imagecorruptions``
    (local files only). As in the reference, a texture smaller than the image is upscaled to cover it, every
    texture is then scaled by 1.1 (bicubic), and ``frost6`` is never drawn. :func:`corruptions3d.frost.texture_source`
    describes the textures behind a ``texture`` value (for manifests).
    """
    params = dict(params or {})
    texture = params.pop("texture", "procedural")  # a choice of asset, not a severity parameter
    p = resolve_params(FROST, severity, params or None, check_rgb(rgb))
    if texture not in TEXTURE_SOURCES:
        raise ValueError(f"frost: texture must be one of {TEXTURE_SOURCES}, got {texture!r}")
    seeds = seeds_for(rgb, generator)
    h, w = rgb.shape[-2:]
    bank, sizes = frost_bank(texture, h, w, rgb.device)
    u = rnd.rand(seeds, (3,), rgb.device, torch.float64)
    idx = (u[:, 0] * len(sizes)).long().clamp(max=len(sizes) - 1)
    size = sizes.to(rgb.device)[idx]
    y0 = (u[:, 1] * (size[:, 0] - h).clamp(min=1)).long()
    x0 = (u[:, 2] * (size[:, 1] - w).clamp(min=1)).long()
    return frost_blend(rgb, bank, torch.stack([idx, y0, x0], 1).cpu(), p["frost_coeff"], p["image_coeff"])


@fused_kernel("frost_blend")
def frost_blend(
    rgb: torch.Tensor, bank: torch.Tensor, windows: torch.Tensor, frost_coeff: torch.Tensor, image_coeff: torch.Tensor
) -> torch.Tensor:
    """``clip(frost_coeff·crop + image_coeff·rgb)`` per image of ``(B,3,H,W)``; image i's crop is
    ``bank[t, :, y:y+H, x:x+W]`` for its row ``(t, y, x)`` of ``windows`` ``(B,3)`` int64 (CPU); coefficients
    ``(B,)``."""
    h, w = rgb.shape[-2:]
    crops = [bank[t, :, y : y + h, x : x + w] for t, y, x in windows.tolist()]
    crop = torch.stack(crops).to(rgb.dtype)  # slices: memcpy
    return crop.mul_(per_image(frost_coeff)).add_(per_image(image_coeff) * rgb).clamp_(0, 1)


def plasma_fractal(keys: torch.Tensor, size: int, wibble_decay: torch.Tensor) -> torch.Tensor:
    """Diamond-square plasma, ``(B,size,size)`` in [0,1]; ``size`` a power of two, roughness per image.

    A batched port of the reference's algorithm (wrap-around neighbours, wibble starting at 100 and divided by
    ``wibble_decay`` per level). Each level adds ``wibble²·(2u-1)`` to its square, row-diamond and column-diamond
    points, ``u`` drawn in that order, level after level, from image i's counter-based stream ``keys[i]``
    (:func:`corruptions3d.random.splitmix_uniforms`), so a compiled kernel can draw them in place. float32 where
    the reference uses float64: relative rounding ~1e-7 of the field's range, invisible after 8-bit output.
    """
    if size & (size - 1):
        raise ValueError(f"plasma size must be a power of two, got {size}")
    b, device = len(keys), keys.device
    u = rnd.splitmix_uniforms(keys, plasma_draws(size))
    m = torch.zeros(b, size, size, device=device)
    wibble = torch.full((b, 1, 1), 100.0, device=device)
    decay = wibble_decay.to(device, torch.float32).view(b, 1, 1)
    step, used = size, 0
    while step >= 2:
        half, n = step // 2, size // step
        signed = (u[:, used : used + 3 * n * n] * 2 - 1).to(torch.float32).view(b, 3, n, n)
        noise = (wibble * wibble)[:, None] * signed
        used += 3 * n * n
        corner = m[:, ::step, ::step]
        sq = corner + corner.roll(-1, 1)
        sq = sq + sq.roll(-1, 2)
        m[:, half::step, half::step] = sq / 4 + noise[:, 0]
        dr, ul = m[:, half::step, half::step], m[:, ::step, ::step]
        m[:, ::step, half::step] = (dr + dr.roll(1, 1) + ul + ul.roll(-1, 2)) / 4 + noise[:, 1]
        m[:, half::step, ::step] = (dr + dr.roll(1, 2) + ul + ul.roll(-1, 1)) / 4 + noise[:, 2]
        step, wibble = half, wibble / decay
    m = m - m.amin((1, 2), keepdim=True)
    return m / m.amax((1, 2), keepdim=True)


def plasma_draws(size: int) -> int:
    """Uniforms a :func:`plasma_fractal` of side ``size`` draws: 3·n² per level, n = 1, 2, …, size/2."""
    return sum(3 * n * n for n in (1 << k for k in range(size.bit_length() - 1)))


def plasma_size(h: int, w: int) -> int:
    """The reference's plasma side for an H×W image: the next power of two >= max(H, W) (at least 4)."""
    return 1 << (max(h, w, 3) - 1).bit_length()


def fog(
    rgb: torch.Tensor, severity: int | None = None, params: Mapping[str, Any] | None = None, generator: Seeds = None
) -> torch.Tensor:
    """Add ``strength``·plasma (gray, diamond-square of side next_pow2(max(H, W))), then rescale by
    ``max / (max + strength)`` with ``max`` the image's maximum."""
    p = resolve_params(FOG, severity, params, check_rgb(rgb))
    keys = rnd.stream_keys(seeds_for(rgb, generator), 0, rgb.device)
    return plasma_fog(rgb, keys, p["strength"], p["wibble_decay"])


@fused_kernel("plasma_fog")
def plasma_fog(
    rgb: torch.Tensor, keys: torch.Tensor, strength: torch.Tensor, wibble_decay: torch.Tensor
) -> torch.Tensor:
    """``clip((x + strength·P) · max/(max + strength))`` per image of ``(B,3,H,W)``, ``P`` the top-left H×W of the
    :func:`plasma_fractal` drawn from stream ``keys`` ``(B,)`` (side :func:`plasma_size`), ``max`` the image's
    maximum; ``strength``, ``wibble_decay`` ``(B,)``."""
    h, w = rgb.shape[-2:]
    plasma = plasma_fractal(keys, plasma_size(h, w), wibble_decay)[:, None, :h, :w].to(rgb.dtype)
    c = per_image(strength).to(rgb.dtype)
    peak = rgb.amax((1, 2, 3), keepdim=True)
    return rgb.add(c * plasma).mul_(peak / (peak + c)).clamp_(0, 1)


def _canny(img: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """OpenCV-style Canny on ``(B,1,H,W)`` 0..255: 3×3 Sobel, L1 magnitude, 4-direction non-maximum suppression,
    hysteresis (weak edges kept when 8-connected to strong ones). Bool ``(B,1,H,W)``."""
    gx = filters.stencil(img, _SOBEL, "replicate")
    gy = filters.stencil(img, [list(col) for col in zip(*_SOBEL)], "replicate")
    ax, ay = gx.abs(), gy.abs()
    mag = ax + ay
    mp = F.pad(mag, (1, 1, 1, 1))
    h, w = mag.shape[-2:]

    def nb(dy: int, dx: int) -> torch.Tensor:
        return mp[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    horiz = ay <= ax * 0.4142135  # tan 22.5°
    vert = ay > ax * 2.4142135
    diag_sign = (gx * gy) > 0
    keep = torch.where(
        horiz,
        (mag > nb(0, -1)) & (mag >= nb(0, 1)),
        torch.where(
            vert,
            (mag > nb(-1, 0)) & (mag >= nb(1, 0)),
            torch.where(
                diag_sign,
                (mag > nb(-1, -1)) & (mag > nb(1, 1)),
                (mag > nb(-1, 1)) & (mag > nb(1, -1)),
            ),
        ),
    )
    weak = keep & (mag > low)
    edges = keep & (mag > high)
    while True:
        grown = weak & _dilate3(edges)
        if torch.equal(grown, edges):
            return edges
        edges = grown


def _dilate3(mask: torch.Tensor) -> torch.Tensor:
    """3×3 binary dilation of bool ``(B,1,H,W)`` (zero border), as two separable ORs of shifted views."""
    for dim in (2, 3):
        n = mask.shape[dim]
        padded = F.pad(mask, (0, 0, 1, 1) if dim == 2 else (1, 1))
        mask = padded.narrow(dim, 0, n) | padded.narrow(dim, 1, n) | padded.narrow(dim, 2, n)
    return mask


def _distance_to(edges: torch.Tensor, cap: int) -> torch.Tensor:
    """Euclidean distance (px) from each pixel to the nearest ``True`` of ``(B,1,H,W)``, capped at ``cap``
    (exact separable squared-distance minimum over offsets ``|d| <= cap``)."""
    big = float(2 * cap * cap + 1)
    f = torch.where(edges, 0.0, big)
    for dim in (2, 3):
        n = f.shape[dim]
        r = min(cap, n - 1)
        padded = F.pad(f, (0, 0, r, r) if dim == 2 else (r, r), value=big)
        g, shifted = f.clone(), torch.empty_like(f)
        for d in range(1, r + 1):
            torch.minimum(padded.narrow(dim, r + d, n), padded.narrow(dim, r - d, n), out=shifted)
            torch.minimum(g, shifted.add_(d * d), out=g)
        f = g
    return f.sqrt().clamp(max=cap)


def _equalize_hist(img: torch.Tensor) -> torch.Tensor:
    """OpenCV ``equalizeHist`` per image of ``(B,1,H,W)`` integer-valued 0..255 floats."""
    b = img.shape[0]
    v = img.view(b, -1).long()
    hist = torch.zeros(b, 256, device=img.device).scatter_add_(1, v, torch.ones_like(v, dtype=torch.float32))
    total = hist.sum(1, keepdim=True)
    first = (hist > 0).float().argmax(1, keepdim=True)
    h_first = hist.gather(1, first)
    lut = torch.round((hist.cumsum(1) - h_first) * 255 / (total - h_first).clamp(min=1)).clamp(0, 255)
    lut = torch.where(h_first == total, first.float().expand(-1, 256), lut)
    return lut.gather(1, v).view_as(img)


@fused_kernel("edge_distance")
def edge_distance(img: torch.Tensor, low: float, high: float, cap: int) -> torch.Tensor:
    """Distance (px, float32) from each pixel of ``(B,1,H,W)`` 0..255 levels to the nearest Canny edge (thresholds
    ``low``, ``high``), capped at ``cap``: the reference's water-drop field."""
    return _distance_to(_canny(img, low, high), cap)


def _box3(x: torch.Tensor) -> torch.Tensor:
    k = torch.full((x.shape[0], 3), 1 / 3, device=x.device)
    return filters.conv_separable(x, k, k, border="reflect101")


def _water(rgb: torch.Tensor, liquid: torch.Tensor, threshold: torch.Tensor, intensity: torch.Tensor) -> torch.Tensor:
    """The reference's water drops: embossed, histogram-equalised distance-to-edge shading, turquoise."""
    levels = liquid_levels(liquid, threshold)
    return water_drops(rgb, levels, edge_distance(levels, 50.0, 150.0, 20), intensity)


@fused_kernel("liquid_levels")
def liquid_levels(liquid: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """The liquid field ``(B,1,H,W)`` zeroed below ``threshold`` ``(B,)`` as the reference's uint8 cast:
    ``floor(255·x) mod 256``."""
    kept = torch.where(liquid < per_image(threshold), torch.zeros_like(liquid), liquid)
    return torch.floor(kept * 255).remainder(256)


@fused_kernel("water_drops")
def water_drops(rgb: torch.Tensor, levels: torch.Tensor, dist: torch.Tensor, intensity: torch.Tensor) -> torch.Tensor:
    """Shade ``(B,3,H,W)`` with water drops from the liquid's 8-bit ``levels`` and their :func:`edge_distance`
    ``dist`` (both ``(B,1,H,W)``): 3×3 box → floor → equalised histogram → emboss → 3×3 box, times the levels,
    normalised to ``intensity`` ``(B,)``, added in turquoise and clipped."""
    dist = _equalize_hist(torch.floor(_box3(dist)))
    dist = filters.stencil(dist, _EMBOSS, "reflect101").round().clamp(0, 255)
    m = levels * _box3(dist)
    m = m / m.amax((1, 2, 3), keepdim=True).clamp(min=1e-12) * per_image(intensity).to(m.dtype)
    color = torch.tensor(WATER, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
    return (rgb + m * color).clamp_(0, 1)


def _mud(rgb: torch.Tensor, liquid: torch.Tensor, threshold: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The reference's mud: the liquid's mask above ``threshold`` blurred by ``sigma``, kept where >= 0.8, brown."""
    m = skimage_gaussian((liquid > per_image(threshold)).to(rgb.dtype), sigma)
    m = torch.where(m < 0.8, torch.zeros_like(m), m)
    color = torch.tensor(_MUD, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
    return (rgb * (1 - m)).add_(color * m).clamp_(0, 1)


def spatter(
    rgb: torch.Tensor, severity: int | None = None, params: Mapping[str, Any] | None = None, generator: Seeds = None
) -> torch.Tensor:
    """Liquid splashes from a blurred N(mean, std) field above ``threshold``: ``mode`` 0 water (Canny edges →
    distance transform → equalised emboss shading, turquoise; ``intensity`` scales it), 1 mud (brown, ``intensity``
    is the mask blur σ).

    Deviations: Canny is a batched re-implementation (same Sobel/L1/NMS/hysteresis rules, tie-breaking may differ on
    plateaus) and the distance transform is exact Euclidean where OpenCV uses its 5×5 chamfer approximation.
    """
    p = resolve_params(SPATTER, severity, params, check_rgb(rgb))
    seeds = seeds_for(rgb, generator)
    h, w = rgb.shape[-2:]
    liquid = per_image(p["mean"]) + per_image(p["std"]) * rnd.randn(seeds, (1, h, w), rgb.device, rgb.dtype)
    liquid = skimage_gaussian(liquid, p["blur_sigma"])
    water = p["mode"].round() == 0
    if bool(water.all()):  # one mode for the whole batch (a severity): no per-mode copies
        return _water(rgb, liquid, p["threshold"], p["intensity"])
    if not bool(water.any()):
        return _mud(rgb, liquid, p["threshold"], p["intensity"])
    out = torch.empty_like(rgb)
    if water.any():
        out[water] = _water(rgb[water], liquid[water], p["threshold"][water], p["intensity"][water])
    if (~water).any():
        mud = ~water
        out[mud] = _mud(rgb[mud], liquid[mud], p["threshold"][mud], p["intensity"][mud])
    return out
