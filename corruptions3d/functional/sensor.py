"""Sensor corruptions of 3DCC (``create_non3d.py``): ISO noise, low-light noise, colour quantisation.

All ops take ``(B,3,H,W)`` float in [0,1] and return floats; the 8-bit writer rounds, whereas the
reference truncates (``np.uint8(x·255)``), so saved files differ from the reference by at most one level.

- ``iso_noise``: ``clip(Poisson(25·x)/25, 0, 1)``, then ``clip(· + N(0, σ²), 0, 1)``,
  σ = 0.7·(.08, .12, .18, .26, .38).
- ``low_light``: :func:`imadjust` (γ = 2, gain c = .6 … .2 on the per-image min/max over all channels),
  then the same Poisson–Gaussian noise at the reference's fixed severity 3 (Poisson c = 120, σ = 0.018).
- ``color_quant``: PIL ``posterize``: keep the top 5, 4, 3, 2, 1 bits of each 8-bit value. Float inputs are
  first rounded to 8 bits (``round(255·x)``, clamped to 0..255); the reference truncates instead
  (``to_pil_image``), which can pick the level below for values that are not exact multiples of 1/255.

Training ranges (continuous, for augmentation): ISO σ ∈ [0.05, 0.27), low-light gain ∈ [0.2, 0.6),
posterize bits ∈ [1, 8] (rounded per image).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from corruptions3d import memory
from corruptions3d import random as R
from corruptions3d.core import check_rgb, per_image, register_corruption, resolve_params, seeds_for
from corruptions3d.kernels import fused_kernel
from corruptions3d.random import Seeds

__all__ = ["color_quant", "imadjust", "iso_noise", "low_light", "poisson_gaussian_noise"]


def poisson_gaussian_noise(
    x: torch.Tensor, photons: torch.Tensor, sigma: torch.Tensor, seeds: torch.Tensor
) -> torch.Tensor:
    """``clip(Poisson(c·x)/c, 0, 1)`` then ``clip(· + N(0, σ²), 0, 1)`` with per-image ``photons`` c and
    ``sigma`` σ ``(B,)``; image i draws from its own streams (``seeds`` ``(B,)`` int64)."""
    c = per_image(photons)
    y = R.poisson(x * c, seeds, stream=0).div_(c).clamp_(0, 1)
    noise = R.randn_(memory.empty_like(x), seeds, stream=1).mul_(per_image(sigma))
    return y.add_(noise).clamp_(0, 1)


def imadjust(rgb: torch.Tensor, gain: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """MATLAB-style ``imadjust`` used by ``low_light``: ``((x − min)/(max − min))^γ · gain``.

    Min and max are per image over all channels; ``gain``, ``gamma`` are ``(B,)``. A constant image
    (max = min) maps to 0 (the reference divides by zero there).
    """
    lo = rgb.amin(dim=(1, 2, 3), keepdim=True)
    hi = rgb.amax(dim=(1, 2, 3), keepdim=True)
    y = (rgb - lo).div_((hi - lo).clamp(min=1e-12))
    g = gamma.unique()
    y = y.pow_(float(g)) if len(g) == 1 else y.pow_(per_image(gamma))  # a scalar power of 2 is one multiply
    return y.mul_(per_image(gain))


ISO_NOISE = {"sigma": (0.056, 0.084, 0.126, 0.182, 0.266), "photons": (25.0,) * 5}
LOW_LIGHT = {"gain": (0.6, 0.5, 0.4, 0.3, 0.2), "gamma": (2.0,) * 5, "photons": (120.0,) * 5, "sigma": (0.018,) * 5}
COLOR_QUANT = {"bits": (5, 4, 3, 2, 1)}


@register_corruption(
    "iso_noise",
    family="3dcc",
    severities=ISO_NOISE,
    ranges={"sigma": (0.05, 0.27), "photons": (25.0, 25.0)},
    stochastic=True,
)
@fused_kernel("iso_noise")
def iso_noise(
    rgb: torch.Tensor,
    severity: int | None = None,
    params: Mapping[str, Any] | None = None,
    generator: Seeds = None,
) -> torch.Tensor:
    """ISO noise ``(B,3,H,W)``: Poisson photon noise (c = 25 photons at white) then Gaussian read noise σ."""
    check_rgb(rgb)
    p = resolve_params(ISO_NOISE, severity, params, rgb)
    return poisson_gaussian_noise(rgb, p["photons"], p["sigma"], seeds_for(rgb, generator))


@register_corruption(
    "low_light",
    family="3dcc",
    severities=LOW_LIGHT,
    ranges={"gain": (0.2, 0.6), "gamma": (2.0, 2.0), "photons": (120.0, 120.0), "sigma": (0.018, 0.018)},
    stochastic=True,
)
@fused_kernel("low_light")
def low_light(
    rgb: torch.Tensor,
    severity: int | None = None,
    params: Mapping[str, Any] | None = None,
    generator: Seeds = None,
) -> torch.Tensor:
    """Low-light noise ``(B,3,H,W)``: :func:`imadjust` darkening, then Poisson (c = 120) + Gaussian (σ = 0.018)."""
    check_rgb(rgb)
    p = resolve_params(LOW_LIGHT, severity, params, rgb)
    dark = imadjust(rgb, p["gain"], p["gamma"])
    return poisson_gaussian_noise(dark, p["photons"], p["sigma"], seeds_for(rgb, generator))


@register_corruption("color_quant", family="3dcc", severities=COLOR_QUANT, ranges={"bits": (1.0, 8.0)})
@fused_kernel("color_quant")
def color_quant(
    rgb: torch.Tensor,
    severity: int | None = None,
    params: Mapping[str, Any] | None = None,
    generator: Seeds = None,
) -> torch.Tensor:
    """Posterize ``(B,3,H,W)``: keep the top ``bits`` (1..8, rounded per image) of ``round(255·x)``."""
    check_rgb(rgb)
    bits = resolve_params(COLOR_QUANT, severity, params, rgb)["bits"].round().long()
    if bool(((bits < 1) | (bits > 8)).any()):
        raise ValueError(f"color_quant: bits must be in 1..8, got {bits.tolist()}")
    drop = 8 - bits
    mask = ((255 >> drop) << drop).view(-1, 1, 1, 1)
    v = (rgb * 255).round().clamp(0, 255).long()
    return torch.bitwise_and(v, mask).to(rgb.dtype) / 255
