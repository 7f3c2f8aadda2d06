"""3DCC lighting corruptions: ``flash`` (from reshading), ``shadow`` and ``multi_illumination`` (from relighting).

- ``flash`` (``create_flash.py``): ``min(x + x·R/k, 1)``, ``R`` the reshading ``(B,1,H,W)``,
  k = 2.4, 1.4, 0.9, 0.6, 0.4 (peak gain 1 + 1/k). Training range (3DCC policy): k ∈ [0.1, 0.9).
- ``shadow`` (``create_shadow.py``): per image, 5 distinct relighting images of the K (10 in Taskonomy) are
  drawn, sorted by mean brightness, and severity s uses the s-th brightest (1 brightest … 5 darkest):
  ``clip(x·L·u, 0, 1)``, u ~ U[1, 1.1). Parameter ``rank`` (1..5, rounded; training range [1, 5]).
  Distance to the clean image is not monotone in severity: severity is a brightness rank.
- ``multi_illumination`` (``create_multi_illumination.py``): n = 5, 4, 3, 2, 1 relighting images drawn with
  replacement, ``clip(Σ_j x·L_j·c_j, 0, 1)``, c_j ~ U[coeff − 0.05, coeff + 0.05) with
  coeff = .25, .30, .40, .55, 1.05 (the reference intervals [.20,.30) … [1.0,1.1)). Training ranges:
  n_lights ∈ [1, 5] (rounded), coeff ∈ [0.25, 1.05).

Missing ``reshading``/``relighting`` can be derived from depth: :func:`corruptions3d.lighting.derive`.
Ops return floats; the 8-bit writer rounds where the reference truncates (at most one level apart).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from corruptions3d import memory
from corruptions3d import random as R
from corruptions3d.core import check_geometry, check_rgb, per_image, register_corruption, resolve_params, seeds_for
from corruptions3d.kernels import fused_kernel
from corruptions3d.random import Seeds

__all__ = ["flash", "multi_illumination", "shadow"]

FLASH = {"k": (2.4, 1.4, 0.9, 0.6, 0.4)}
SHADOW = {"rank": (1, 2, 3, 4, 5)}
SHADOW_PICK = 5
"""Relighting images drawn per image for ``shadow`` (severity = brightness rank among them)."""
MULTI_ILLUMINATION = {"n_lights": (5, 4, 3, 2, 1), "coeff": (0.25, 0.30, 0.40, 0.55, 1.05)}
MAX_LIGHTS = 10
"""Lights drawn per image for ``multi_illumination`` (the first ``n_lights`` are used), so the random
streams do not depend on the other images' parameters."""


def check_relighting(rgb: torch.Tensor, relighting: torch.Tensor, min_lights: int) -> torch.Tensor:
    lights = check_geometry(rgb, relighting, "relighting", channels=None)
    if lights.shape[1] < min_lights:
        raise ValueError(f"relighting needs at least {min_lights} images per view, got {lights.shape[1]}")
    return lights


def integer_param(p: torch.Tensor, name: str, low: int, high: int) -> torch.Tensor:
    v = p.round().long()
    if bool(((v < low) | (v > high)).any()):
        raise ValueError(f"{name} must be in {low}..{high}, got {v.tolist()}")
    return v


@register_corruption(
    "flash",
    family="3dcc",
    requires=("reshading",),
    severities=FLASH,
    ranges={"k": (0.1, 0.9)},
    derivable=("reshading",),
)
@fused_kernel("flash")
def flash(
    rgb: torch.Tensor,
    reshading: torch.Tensor,
    severity: int | None = None,
    params: Mapping[str, Any] | None = None,
    generator: Seeds = None,
) -> torch.Tensor:
    """Camera flash ``(B,3,H,W)``: brighten by the reshading ``(B,1,H,W)`` (light at the camera) over ``k``."""
    check_rgb(rgb)
    shading = check_geometry(rgb, reshading, "reshading")
    k = resolve_params(FLASH, severity, params, rgb)["k"]
    return (rgb + rgb * shading / per_image(k)).clamp(max=1)


@register_corruption(
    "shadow",
    family="3dcc",
    requires=("relighting",),
    severities=SHADOW,
    ranges={"rank": (1.0, 5.0)},
    stochastic=True,
    derivable=("relighting",),
)
@fused_kernel("shadow")
def shadow(
    rgb: torch.Tensor,
    relighting: torch.Tensor,
    severity: int | None = None,
    params: Mapping[str, Any] | None = None,
    generator: Seeds = None,
) -> torch.Tensor:
    """Relight ``(B,3,H,W)`` by one of the ``(B,K,H,W)`` relighting images, chosen by brightness ``rank``."""
    check_rgb(rgb)
    lights = check_relighting(rgb, relighting, SHADOW_PICK)
    rank = integer_param(resolve_params(SHADOW, severity, params, rgb)["rank"], "shadow rank", 1, SHADOW_PICK)
    picked, gain = shadow_draws(lights.shape[1], seeds_for(rgb, generator), lights.device, lights.dtype)
    return relight_ranked(rgb, lights, picked, rank, gain)


def relight(rgb: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
    """``clip(rgb · light)`` for ``(B,3,H,W)`` and ``(B,1,H,W)``; without autograd, into a pooled CPU buffer
    (:mod:`corruptions3d.memory`)."""
    if torch.is_grad_enabled() and (rgb.requires_grad or light.requires_grad):
        return (rgb * light).clamp_(0, 1)
    return torch.mul(rgb, light, out=memory.empty_like(rgb)).clamp_(0, 1)


def shadow_draws(k: int, seeds: torch.Tensor, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The random part of :func:`shadow` for ``k`` lights: 5 distinct light indices ``(B,5)`` per image (stream 0)
    and a gain ``u ~ U[1, 1.1)`` ``(B,)`` (stream 1)."""
    picked = R.permutation(seeds, k, stream=0)[:, :SHADOW_PICK].to(device)
    return picked, R.uniform(seeds, 1.0, 1.1, device=device, stream=1).to(dtype)


def ranked_light(lights: torch.Tensor, picked: torch.Tensor, rank: torch.Tensor) -> torch.Tensor:
    """Index ``(B,)`` of the ``rank``-th brightest (mean over pixels; ties keep the pick order) of the ``picked``
    ``(B,P)`` lights of ``(B,K,H,W)``."""
    brightness = lights.mean(dim=(2, 3)).gather(1, picked)
    order = brightness.argsort(dim=1, descending=True, stable=True)
    return picked.gather(1, order).gather(1, (rank - 1).view(-1, 1)).view(-1)


def shadow_weights(lights: torch.Tensor, rank: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """``(B,K)`` light weights of :func:`shadow`: ``u·onehot(chosen)``, ``chosen`` the ``rank``-th brightest of
    the picked lights (:func:`shadow_draws`, :func:`ranked_light`)."""
    picked, u = shadow_draws(lights.shape[1], seeds, lights.device, lights.dtype)
    return F.one_hot(ranked_light(lights, picked, rank), lights.shape[1]).to(lights.dtype) * u.view(-1, 1)


@fused_kernel("relight_ranked")
def relight_ranked(
    rgb: torch.Tensor, lights: torch.Tensor, picked: torch.Tensor, rank: torch.Tensor, gain: torch.Tensor
) -> torch.Tensor:
    """``clip(rgb · gain·L)`` per image of ``(B,3,H,W)``, ``L`` the :func:`ranked_light` of ``lights``
    ``(B,K,H,W)``; ``picked`` ``(B,P)``, ``rank`` and ``gain`` ``(B,)``."""
    chosen = ranked_light(lights, picked, rank)
    light = lights[torch.arange(len(chosen), device=lights.device), chosen].mul_(gain.view(-1, 1, 1))
    return relight(rgb, light.unsqueeze(1))


@register_corruption(
    "multi_illumination",
    family="3dcc",
    requires=("relighting",),
    severities=MULTI_ILLUMINATION,
    ranges={"n_lights": (1.0, 5.0), "coeff": (0.25, 1.05)},
    stochastic=True,
    derivable=("relighting",),
)
@fused_kernel("multi_illumination")
def multi_illumination(
    rgb: torch.Tensor,
    relighting: torch.Tensor,
    severity: int | None = None,
    params: Mapping[str, Any] | None = None,
    generator: Seeds = None,
) -> torch.Tensor:
    """Sum of ``n_lights`` random relightings ``(B,K,H,W)`` (with replacement), each weighted ~``coeff``."""
    check_rgb(rgb)
    lights = check_relighting(rgb, relighting, 1)
    p = resolve_params(MULTI_ILLUMINATION, severity, params, rgb)
    n = integer_param(p["n_lights"], "multi_illumination n_lights", 1, MAX_LIGHTS)
    weights = multi_illumination_weights(lights.shape[1], n, p["coeff"], seeds_for(rgb, generator), rgb.device)
    return relight(rgb, torch.einsum("bk,bkhw->bhw", weights.to(rgb.dtype), lights).unsqueeze(1))


def multi_illumination_weights(
    k: int, n_lights: torch.Tensor, coeff: torch.Tensor, seeds: torch.Tensor, device: torch.device
) -> torch.Tensor:
    """``(B,K)`` light weights of :func:`multi_illumination` for ``k`` lights: ``MAX_LIGHTS`` indices drawn
    with replacement (stream 0), coefficients ``U[coeff ± 0.05)`` (stream 1), the first ``n_lights`` used."""
    index = (R.rand(seeds, (MAX_LIGHTS,), device, stream=0) * k).long().clamp(max=k - 1)
    c = coeff.view(-1, 1) - 0.05 + 0.1 * R.rand(seeds, (MAX_LIGHTS,), device, stream=1)
    used = torch.arange(MAX_LIGHTS, device=device).view(1, -1) < n_lights.view(-1, 1)
    return (F.one_hot(index, k).to(c.dtype) * (c * used).unsqueeze(-1)).sum(1)
