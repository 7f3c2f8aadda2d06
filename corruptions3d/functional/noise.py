"""ImageNet-C noises (``imagecorruptions`` 1.1.2 parameters): gaussian, shot, impulse and speckle noise.

All ops take ``(B,3,H,W)`` float in [0,1] and return the same, clipped to [0,1]. Every image draws from its own
stream (:mod:`corruptions3d.random`), so an image's output does not depend on the rest of the batch. The reference
truncates its output to uint8; these ops return floats.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from corruptions3d import memory
from corruptions3d import random as rnd
from corruptions3d.core import check_rgb, per_image, resolve_params, seeds_for
from corruptions3d.kernels import fused_kernel
from corruptions3d.random import Seeds

__all__ = ["gaussian_noise", "impulse_noise", "shot_noise", "speckle_noise"]

GAUSSIAN_NOISE = {"sigma": (0.08, 0.12, 0.18, 0.26, 0.38)}
SHOT_NOISE = {"photons": (60.0, 25.0, 12.0, 5.0, 3.0)}
IMPULSE_NOISE = {"amount": (0.03, 0.06, 0.09, 0.17, 0.27)}
SPECKLE_NOISE = {"sigma": (0.15, 0.2, 0.35, 0.45, 0.6)}


def _setup(rgb: torch.Tensor, table, severity, params, generator) -> tuple[dict[str, Any], torch.Tensor]:
    p = resolve_params(table, severity, params, check_rgb(rgb))
    return p, seeds_for(rgb, generator)


@fused_kernel("gaussian_noise")
def gaussian_noise(
    rgb: torch.Tensor, severity: int | None = None, params: Mapping[str, Any] | None = None, generator: Seeds = None
) -> torch.Tensor:
    """Additive white noise: ``clip(x + N(0, sigma²))``, independent per pixel and channel."""
    p, seeds = _setup(rgb, GAUSSIAN_NOISE, severity, params, generator)
    n = rnd.randn_(memory.empty_like(rgb), seeds).mul_(per_image(p["sigma"]))
    return torch.add(rgb, n, out=n).clamp_(0, 1)


@fused_kernel("shot_noise")
def shot_noise(
    rgb: torch.Tensor, severity: int | None = None, params: Mapping[str, Any] | None = None, generator: Seeds = None
) -> torch.Tensor:
    """Photon (Poisson) noise: ``clip(Poisson(x·photons) / photons)``; ``photons`` is the count at white."""
    p, seeds = _setup(rgb, SHOT_NOISE, severity, params, generator)
    c = per_image(p["photons"])
    return rnd.poisson(rgb.clamp(0, 1).mul_(c), seeds).div_(c).clamp_(0, 1)


@fused_kernel("impulse_noise")
def impulse_noise(
    rgb: torch.Tensor, severity: int | None = None, params: Mapping[str, Any] | None = None, generator: Seeds = None
) -> torch.Tensor:
    """Salt-and-pepper noise (scikit-image ``random_noise(mode='s&p')``): each pixel *and channel* is replaced with
    probability ``amount`` in [0,1], by 1 or 0 with equal odds. One uniform 31-bit integer per value: the lowest
    ``amount/2`` of its range -> 0, the highest -> 1 (the reference's distribution, from two draws there)."""
    p, seeds = _setup(rgb, IMPULSE_NOISE, severity, params, generator)
    if bool(((p["amount"] < 0) | (p["amount"] > 1)).any()):
        raise ValueError(f"impulse_noise: amount must be in [0,1], got {p['amount'].tolist()}")
    return salt_and_pepper(rgb, seeds, (p["amount"].double() / 2 * 2**31).round().int())


@fused_kernel("salt_and_pepper")
def salt_and_pepper(rgb: torch.Tensor, seeds: torch.Tensor, cut: torch.Tensor) -> torch.Tensor:
    """``clip(rgb)`` with values set to 0 where the image's 31-bit draw (:func:`corruptions3d.random.random_bits`)
    is below ``cut`` ``(B,)`` int32 and to 1 where it is above ``2^31 - 1 - cut`` (probability ``cut/2^31`` each)."""
    bits = rnd.random_bits(seeds, tuple(rgb.shape[1:]), rgb.device)
    out = rgb.clamp(0, 1).masked_fill_(bits < per_image(cut), 0.0)
    return out.masked_fill_(bits > per_image(2**31 - 1 - cut), 1.0)


@fused_kernel("speckle_noise")
def speckle_noise(
    rgb: torch.Tensor, severity: int | None = None, params: Mapping[str, Any] | None = None, generator: Seeds = None
) -> torch.Tensor:
    """Multiplicative noise: ``clip(x + x·N(0, sigma²))``."""
    p, seeds = _setup(rgb, SPECKLE_NOISE, severity, params, generator)
    n = rnd.randn_(memory.empty_like(rgb), seeds).mul_(per_image(p["sigma"]))
    return n.mul_(rgb).add_(rgb).clamp_(0, 1)  # two roundings, no fused multiply-add: as the compiled kernel
