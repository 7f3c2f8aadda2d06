"""ImageNet-C noises (``imagecorruptions`` 1.1.2 parameters): gaussian, shot, impulse and speckle noise.

All ops take ``(B,3,H,W)`` float in [0,1] and return the same, clipped to [0,1]. Every image draws from its own
stream (:mod:`corruptions3d.random`), so an image's output does not depend on the rest of the batch. The reference
truncates its output to uint8; these ops return floats.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from corruptions3d import random as rnd
from corruptions3d.core import check_rgb, per_image, resolve_params, seeds_for
from corruptions3d.kernels import cuda_kernel
from corruptions3d.random import Seeds

__all__ = ["gaussian_noise", "impulse_noise", "shot_noise", "speckle_noise"]

GAUSSIAN_NOISE = {"sigma": (0.08, 0.12, 0.18, 0.26, 0.38)}
SHOT_NOISE = {"photons": (60.0, 25.0, 12.0, 5.0, 3.0)}
IMPULSE_NOISE = {"amount": (0.03, 0.06, 0.09, 0.17, 0.27)}
SPECKLE_NOISE = {"sigma": (0.15, 0.2, 0.35, 0.45, 0.6)}


def _setup(rgb: torch.Tensor, table, severity, params, generator) -> tuple[dict[str, Any], torch.Tensor]:
    p = resolve_params(table, severity, params, check_rgb(rgb))
    return p, seeds_for(rgb, generator)


@cuda_kernel("gaussian_noise")
def gaussian_noise(
    rgb: torch.Tensor, severity: int | None = None, params: Mapping[str, Any] | None = None, generator: Seeds = None
) -> torch.Tensor:
    """Additive white noise: ``clip(x + N(0, sigma²))``, independent per pixel and channel."""
    p, seeds = _setup(rgb, GAUSSIAN_NOISE, severity, params, generator)
    n = rnd.randn(seeds, tuple(rgb.shape[1:]), rgb.device, rgb.dtype)
    return (rgb + per_image(p["sigma"]) * n).clamp(0, 1)


@cuda_kernel("shot_noise")
def shot_noise(
    rgb: torch.Tensor, severity: int | None = None, params: Mapping[str, Any] | None = None, generator: Seeds = None
) -> torch.Tensor:
    """Photon (Poisson) noise: ``clip(Poisson(x·photons) / photons)``; ``photons`` is the count at white."""
    p, seeds = _setup(rgb, SHOT_NOISE, severity, params, generator)
    c = per_image(p["photons"])
    return (rnd.poisson(rgb.clamp(0, 1) * c, seeds) / c).clamp(0, 1)


@cuda_kernel("impulse_noise")
def impulse_noise(
    rgb: torch.Tensor, severity: int | None = None, params: Mapping[str, Any] | None = None, generator: Seeds = None
) -> torch.Tensor:
    """Salt-and-pepper noise (scikit-image ``random_noise(mode='s&p')``): each pixel *and channel* is replaced with
    probability ``amount``, by 1 or 0 with equal odds."""
    p, seeds = _setup(rgb, IMPULSE_NOISE, severity, params, generator)
    u = rnd.rand(seeds, (2, *rgb.shape[1:]), rgb.device, rgb.dtype)
    flipped = u[:, 0] < per_image(p["amount"])
    return torch.where(flipped, (u[:, 1] < 0.5).to(rgb.dtype), rgb).clamp(0, 1)


@cuda_kernel("speckle_noise")
def speckle_noise(
    rgb: torch.Tensor, severity: int | None = None, params: Mapping[str, Any] | None = None, generator: Seeds = None
) -> torch.Tensor:
    """Multiplicative noise: ``clip(x + x·N(0, sigma²))``."""
    p, seeds = _setup(rgb, SPECKLE_NOISE, severity, params, generator)
    n = rnd.randn(seeds, tuple(rgb.shape[1:]), rgb.device, rgb.dtype)
    return (rgb + rgb * per_image(p["sigma"]) * n).clamp(0, 1)
