"""3DCC ``fog_3d`` (``create_fog.py``): the atmospheric scattering model on Euclidean depth.

``out = t·x + A·(1 − t)`` with transmission ``t = exp(−α·d/15.625)``, ``d`` in metres (the reference
works in depth units of 15.625 m, i.e. raw/8000), α = 4, 8, 12, 16, 20: extinction coefficients
0.256, 0.512, 0.768, 1.024, 1.28 m⁻¹. Airlight ``A`` is each image's mean over all pixels and channels
(the reference takes the mean of the whole batch tensor, which makes outputs depend on the batch; ours
equals the reference at batch size 1). Invalid depth is filled with the image's maximum valid depth.
Training range (the 3DCC training policy): α ∈ [3, 15).

Returns floats; the 8-bit writer rounds where the reference truncates (at most one level apart).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from corruptions3d.core import check_geometry, check_rgb, per_image, register_corruption, resolve_params
from corruptions3d.geometry import fill_invalid_depth
from corruptions3d.kernels import fused_kernel
from corruptions3d.random import Seeds

__all__ = ["DEPTH_UNIT_M", "fog_3d"]

DEPTH_UNIT_M = 15.625
"""The 3DCC depth unit in metres: the reference divides the 1/512 m PNG value by 8000."""
FOG_3D = {"alpha": (4.0, 8.0, 12.0, 16.0, 20.0)}


@register_corruption(
    "fog_3d", family="3dcc", requires=("depth_euclidean",), severities=FOG_3D, ranges={"alpha": (3.0, 15.0)}
)
@fused_kernel("fog_3d")
def fog_3d(
    rgb: torch.Tensor,
    depth_euclidean: torch.Tensor,
    severity: int | None = None,
    params: Mapping[str, Any] | None = None,
    generator: Seeds = None,
) -> torch.Tensor:
    """Depth fog ``(B,3,H,W)`` from Euclidean depth ``(B,1,H,W)`` in metres; ``alpha`` per 15.625 m."""
    check_rgb(rgb)
    depth = fill_invalid_depth(check_geometry(rgb, depth_euclidean, "depth_euclidean"))
    alpha = resolve_params(FOG_3D, severity, params, rgb)["alpha"]
    t = torch.exp(-per_image(alpha) * depth / DEPTH_UNIT_M)
    airlight = rgb.mean(dim=(1, 2, 3), keepdim=True)
    return t * rgb + airlight * (1 - t)
