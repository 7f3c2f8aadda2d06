"""Fused CUDA versions of the per-pixel corruptions, with the functional ops' signatures and severity tables.

Each op resolves its parameters exactly as its reference in :mod:`corruptions3d.functional`, computes the per-image
statistics the reference needs (means, minima; one small reduction each) and runs one
:func:`corruptions3d.kernels.pointwise.pointwise` pass. Deterministic ops and the lighting ops (whose randomness
is per image, drawn from the same streams as the reference) match the reference to float rounding. Noise ops draw
per-pixel numbers in-kernel (Philox keyed by each image's seed): same distribution and seeds, but not the same
samples as the CPU path, whose per-image ``torch.Generator`` streams a kernel cannot reproduce.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

import corruptions3d.functional.digital as digital
import corruptions3d.functional.lighting as lighting
import corruptions3d.functional.noise as noise
import corruptions3d.functional.sensor as sensor
from corruptions3d.core import check_geometry, check_rgb, resolve_params, seeds_for
from corruptions3d.functional.fog import DEPTH_UNIT_M, FOG_3D
from corruptions3d.geometry import fill_invalid_depth
from corruptions3d.kernels.pointwise import pointwise
from corruptions3d.random import Seeds

__all__ = [
    "brightness",
    "color_quant",
    "contrast",
    "flash",
    "fog_3d",
    "gaussian_noise",
    "impulse_noise",
    "iso_noise",
    "low_light",
    "multi_illumination",
    "saturate",
    "shadow",
    "shot_noise",
    "speckle_noise",
]

Params = Mapping[str, Any] | None


def _columns(p: dict[str, Any], names: tuple[str, ...]) -> torch.Tensor:
    return torch.stack([p[n] for n in names], 1)


def _table_op(op: str, table: dict, names: tuple[str, ...], rgb, severity, params, generator, stochastic: bool):
    p = resolve_params(table, severity, params, check_rgb(rgb))
    seeds = seeds_for(rgb, generator) if stochastic else None
    return pointwise(rgb, op, _columns(p, names), seeds)


def gaussian_noise(rgb: torch.Tensor, severity: int | None = None, params: Params = None, generator: Seeds = None):
    """Fused :func:`corruptions3d.functional.noise.gaussian_noise`."""
    return _table_op("gaussian_noise", noise.GAUSSIAN_NOISE, ("sigma",), rgb, severity, params, generator, True)


def shot_noise(rgb: torch.Tensor, severity: int | None = None, params: Params = None, generator: Seeds = None):
    """Fused :func:`corruptions3d.functional.noise.shot_noise`."""
    return _table_op("shot_noise", noise.SHOT_NOISE, ("photons",), rgb, severity, params, generator, True)


def impulse_noise(rgb: torch.Tensor, severity: int | None = None, params: Params = None, generator: Seeds = None):
    """Fused :func:`corruptions3d.functional.noise.impulse_noise`."""
    return _table_op("impulse_noise", noise.IMPULSE_NOISE, ("amount",), rgb, severity, params, generator, True)


def speckle_noise(rgb: torch.Tensor, severity: int | None = None, params: Params = None, generator: Seeds = None):
    """Fused :func:`corruptions3d.functional.noise.speckle_noise`."""
    return _table_op("speckle_noise", noise.SPECKLE_NOISE, ("sigma",), rgb, severity, params, generator, True)


def iso_noise(rgb: torch.Tensor, severity: int | None = None, params: Params = None, generator: Seeds = None):
    """Fused :func:`corruptions3d.functional.sensor.iso_noise`."""
    cols = ("photons", "sigma")
    return _table_op("poisson_gaussian", sensor.ISO_NOISE, cols, rgb, severity, params, generator, True)


def low_light(rgb: torch.Tensor, severity: int | None = None, params: Params = None, generator: Seeds = None):
    """Fused :func:`corruptions3d.functional.sensor.low_light` (imadjust + Poisson–Gaussian in one pass)."""
    p = resolve_params(sensor.LOW_LIGHT, severity, params, check_rgb(rgb))
    lo = rgb.amin(dim=(1, 2, 3))
    span = (rgb.amax(dim=(1, 2, 3)) - lo).clamp(min=1e-12)
    table = torch.stack([p["photons"], p["sigma"], lo, span, p["gamma"], p["gain"]], 1)
    return pointwise(rgb, "low_light", table, seeds_for(rgb, generator))


def color_quant(rgb: torch.Tensor, severity: int | None = None, params: Params = None, generator: Seeds = None):
    """Fused :func:`corruptions3d.functional.sensor.color_quant`."""
    bits = resolve_params(sensor.COLOR_QUANT, severity, params, check_rgb(rgb))["bits"].round().long()
    if bool(((bits < 1) | (bits > 8)).any()):
        raise ValueError(f"color_quant: bits must be in 1..8, got {bits.tolist()}")
    mask = (255 >> (8 - bits)) << (8 - bits)
    return pointwise(rgb, "color_quant", mask.view(-1, 1).float())


def fog_3d(
    rgb: torch.Tensor,
    depth_euclidean: torch.Tensor,
    severity: int | None = None,
    params: Params = None,
    generator: Seeds = None,
):
    """Fused :func:`corruptions3d.functional.fog.fog_3d` (airlight: one per-image mean reduction first)."""
    depth = fill_invalid_depth(check_geometry(check_rgb(rgb), depth_euclidean, "depth_euclidean"))
    alpha = resolve_params(FOG_3D, severity, params, rgb)["alpha"]
    table = torch.stack([alpha, rgb.mean(dim=(1, 2, 3)), torch.full_like(alpha, DEPTH_UNIT_M)], 1)
    return pointwise(rgb, "fog", table, aux=depth)


def flash(
    rgb: torch.Tensor,
    reshading: torch.Tensor,
    severity: int | None = None,
    params: Params = None,
    generator: Seeds = None,
):
    """Fused :func:`corruptions3d.functional.lighting.flash`."""
    shading = check_geometry(check_rgb(rgb), reshading, "reshading")
    k = resolve_params(lighting.FLASH, severity, params, rgb)["k"]
    return pointwise(rgb, "flash", k.view(-1, 1), aux=shading)


def shadow(
    rgb: torch.Tensor,
    relighting: torch.Tensor,
    severity: int | None = None,
    params: Params = None,
    generator: Seeds = None,
):
    """Fused :func:`corruptions3d.functional.lighting.shadow`."""
    lights = lighting.check_relighting(check_rgb(rgb), relighting, lighting.SHADOW_PICK)
    rank = resolve_params(lighting.SHADOW, severity, params, rgb)["rank"]
    rank = lighting.integer_param(rank, "shadow rank", 1, lighting.SHADOW_PICK)
    weights = lighting.shadow_weights(lights, rank, seeds_for(rgb, generator))
    return pointwise(rgb, "relight", torch.zeros(rgb.shape[0], 1), aux=lights, weights=weights)


def multi_illumination(
    rgb: torch.Tensor,
    relighting: torch.Tensor,
    severity: int | None = None,
    params: Params = None,
    generator: Seeds = None,
):
    """Fused :func:`corruptions3d.functional.lighting.multi_illumination`."""
    lights = lighting.check_relighting(check_rgb(rgb), relighting, 1)
    p = resolve_params(lighting.MULTI_ILLUMINATION, severity, params, rgb)
    n = lighting.integer_param(p["n_lights"], "multi_illumination n_lights", 1, lighting.MAX_LIGHTS)
    weights = lighting.multi_illumination_weights(lights.shape[1], n, p["coeff"], seeds_for(rgb, generator), rgb.device)
    return pointwise(rgb, "relight", torch.zeros(rgb.shape[0], 1), aux=lights, weights=weights)


def brightness(rgb: torch.Tensor, severity: int | None = None, params: Params = None, generator: Seeds = None):
    """Fused :func:`corruptions3d.functional.digital.brightness` (HSV round trip in-kernel)."""
    return _table_op("brightness", digital.BRIGHTNESS, ("value_shift",), rgb, severity, params, generator, False)


def saturate(rgb: torch.Tensor, severity: int | None = None, params: Params = None, generator: Seeds = None):
    """Fused :func:`corruptions3d.functional.digital.saturate` (HSV round trip in-kernel)."""
    return _table_op("saturate", digital.SATURATE, ("scale", "shift"), rgb, severity, params, generator, False)


def contrast(rgb: torch.Tensor, severity: int | None = None, params: Params = None, generator: Seeds = None):
    """Fused :func:`corruptions3d.functional.digital.contrast` (channel means: one reduction first)."""
    factor = resolve_params(digital.CONTRAST, severity, params, check_rgb(rgb))["factor"]
    return pointwise(rgb, "contrast", torch.cat([factor.view(-1, 1), rgb.mean(dim=(2, 3))], 1))
