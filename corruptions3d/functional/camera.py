"""Camera-orientation corruptions as exact homographies: camera pitch, camera roll, narrower field of view.

A pure camera rotation ``R`` maps source pixels to new pixels by ``H = K·R·K⁻¹``; each output pixel samples the
source at ``K·Rᵀ·K⁻¹·p`` with bilinear ``grid_sample`` (pixel centres at integer + 0.5). A narrower field of view
is a centre crop around the principal point plus a resize, also a homography. No depth is needed.

3DCC has no code for these (it re-rendered meshes with the Omnidata annotator, which samples FoV in
[30°, 125°] and roll up to 10°); the severity tables below are ours:

- ``camera_pitch``: ``angle_deg`` 2, 4, 6, 8, 10 (camera tilted up or down, random sign per image).
- ``camera_roll``: ``angle_deg`` 2, 4, 6, 8, 10 (clockwise or counter-clockwise, random sign per image).
- ``field_of_view``: the horizontal FoV shrinks by ``fov_reduction_deg`` 10, 20, 30, 40, 50 (90° -> 80..40°);
  the reduction is defined for the 90° Taskonomy camera and scales with the FoV (a 60° camera loses 2/3 of it).

Borders: rotated views see outside the source frame. ``border="reflection"`` (default) mirrors the image,
``"zeros"`` leaves black, ``"border"`` repeats the edge, ``"crop"`` zooms in (about the principal point) just
enough that every output pixel sees the source, which adds a FoV narrowing to the rotation.
Intrinsics: the batch's ``intrinsics`` ``(B,3,3)`` if given, else :func:`corruptions3d.geometry.default_intrinsics`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from corruptions3d import random as crandom
from corruptions3d.core import check_rgb, register_corruption, resolve_params, seeds_for
from corruptions3d.geometry import default_intrinsics
from corruptions3d.random import Seeds

BORDERS = ("reflection", "zeros", "border", "crop")
PITCH_SEVERITIES = {"angle_deg": (2.0, 4.0, 6.0, 8.0, 10.0)}
ROLL_SEVERITIES = {"angle_deg": (2.0, 4.0, 6.0, 8.0, 10.0)}
FOV_SEVERITIES = {"fov_reduction_deg": (10.0, 20.0, 30.0, 40.0, 50.0)}


def _intrinsics(rgb: torch.Tensor, intrinsics: torch.Tensor | None) -> torch.Tensor:
    b, _, h, w = rgb.shape
    if intrinsics is None:
        return default_intrinsics(b, h, w, device=rgb.device, dtype=torch.float64)
    if intrinsics.shape != (b, 3, 3):
        raise ValueError(f"intrinsics must be (B,3,3) with B={b}, got {tuple(intrinsics.shape)}")
    return intrinsics.to(rgb.device, torch.float64)


def warp_homography(rgb: torch.Tensor, out_to_src: torch.Tensor, border: str = "reflection") -> torch.Tensor:
    """Resample ``(B,C,H,W)`` so output pixel ``p`` shows source pixel ``~ out_to_src[b]·p`` (``(B,3,3)``).

    Pixel coordinates have pixel centres at integer + 0.5; bilinear; ``border`` one of zeros/border/reflection.
    """
    b, _, h, w = rgb.shape
    v, u = torch.meshgrid(
        torch.arange(h, device=rgb.device, dtype=torch.float64) + 0.5,
        torch.arange(w, device=rgb.device, dtype=torch.float64) + 0.5,
        indexing="ij",
    )
    p = torch.stack([u, v, torch.ones_like(u)]).view(3, -1)
    q = out_to_src.to(torch.float64) @ p  # (B,3,HW)
    xy = q[:, :2] / q[:, 2:3]
    grid = torch.stack([2 * xy[:, 0] / w - 1, 2 * xy[:, 1] / h - 1], -1).view(b, h, w, 2)
    return F.grid_sample(rgb, grid.to(rgb.dtype), mode="bilinear", padding_mode=border, align_corners=False)


def _rotation(axis: str, angle: torch.Tensor) -> torch.Tensor:
    """``(B,3,3)`` rotations of the OpenCV camera frame about ``x`` (pitch) or ``z`` (roll), angles radians."""
    c, s = angle.cos(), angle.sin()
    o, i = torch.zeros_like(c), torch.ones_like(c)
    rows = [i, o, o, o, c, -s, o, s, c] if axis == "x" else [c, -s, o, s, c, o, o, o, i]
    return torch.stack(rows, 1).view(-1, 3, 3)


def _crop_zoom(out_to_src: torch.Tensor, k: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Smallest zoom about the principal point ``(B,)`` >= 1 that keeps the output corners inside the source."""
    h, w = size
    corners = torch.tensor([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], dtype=torch.float64, device=k.device).T
    lo = torch.ones(k.shape[0], dtype=torch.float64, device=k.device)
    hi = torch.full_like(lo, 64.0)
    for _ in range(40):  # bisection on the zoom factor; the loop is over iterations, not images
        mid = (lo + hi) / 2
        m = out_to_src @ _zoom_matrix(k, mid) @ corners
        x, y = m[:, 0] / m[:, 2], m[:, 1] / m[:, 2]
        inside = ((x >= 0) & (x <= w) & (y >= 0) & (y <= h) & (m[:, 2] > 0)).all(1)
        hi = torch.where(inside, mid, hi)
        lo = torch.where(inside, lo, mid)
    return hi


def _zoom_matrix(k: torch.Tensor, zoom: torch.Tensor) -> torch.Tensor:
    """``(B,3,3)`` output->source map of a zoom by ``zoom`` ``(B,)`` about the principal point: ``K·diag(1/z)·K⁻¹``."""
    s = torch.stack([1 / zoom, 1 / zoom, torch.ones_like(zoom)], 1)
    return k @ torch.diag_embed(s) @ torch.linalg.inv(k)


def _rotate(rgb, angle_deg, axis, seeds, intrinsics, border) -> torch.Tensor:
    if border not in BORDERS:
        raise ValueError(f"border must be one of {BORDERS}, got {border!r}")
    k = _intrinsics(rgb, intrinsics)
    sign = torch.where(crandom.rand(seeds, (), rgb.device, stream=4) < 0.5, -1.0, 1.0).to(torch.float64)
    rot = _rotation(axis, torch.deg2rad(angle_deg.to(torch.float64)) * sign)
    out_to_src = k @ rot.transpose(1, 2) @ torch.linalg.inv(k)
    if border == "crop":
        out_to_src = out_to_src @ _zoom_matrix(k, _crop_zoom(out_to_src, k, rgb.shape[-2:]))
        border = "border"
    return warp_homography(rgb, out_to_src, border)


@register_corruption(
    "camera_pitch",
    family="3dcc",
    optional=("intrinsics",),
    severities=PITCH_SEVERITIES,
    ranges={"angle_deg": (0.0, 10.0)},
    stochastic=True,
)
def camera_pitch(
    rgb: torch.Tensor,
    severity: int | None = None,
    params: Mapping[str, Any] | None = None,
    generator: Seeds = None,
    intrinsics: torch.Tensor | None = None,
    border: str = "reflection",
) -> torch.Tensor:
    """Camera tilted up/down by ``angle_deg`` (sign random per image): ``(B,3,H,W)``, exact homography."""
    check_rgb(rgb)
    p = resolve_params(PITCH_SEVERITIES, severity, params, rgb)
    return _rotate(rgb, p["angle_deg"], "x", seeds_for(rgb, generator), intrinsics, border)


@register_corruption(
    "camera_roll",
    family="3dcc",
    optional=("intrinsics",),
    severities=ROLL_SEVERITIES,
    ranges={"angle_deg": (0.0, 10.0)},
    stochastic=True,
)
def camera_roll(
    rgb: torch.Tensor,
    severity: int | None = None,
    params: Mapping[str, Any] | None = None,
    generator: Seeds = None,
    intrinsics: torch.Tensor | None = None,
    border: str = "reflection",
) -> torch.Tensor:
    """Camera rotated about its optical axis by ``angle_deg`` (sign random per image): ``(B,3,H,W)``."""
    check_rgb(rgb)
    p = resolve_params(ROLL_SEVERITIES, severity, params, rgb)
    return _rotate(rgb, p["angle_deg"], "z", seeds_for(rgb, generator), intrinsics, border)


@register_corruption(
    "field_of_view",
    family="3dcc",
    optional=("intrinsics",),
    severities=FOV_SEVERITIES,
    ranges={"fov_reduction_deg": (0.0, 50.0)},
)
def field_of_view(
    rgb: torch.Tensor,
    severity: int | None = None,
    params: Mapping[str, Any] | None = None,
    generator: Seeds = None,
    intrinsics: torch.Tensor | None = None,
) -> torch.Tensor:
    """Narrower horizontal FoV (by ``fov_reduction_deg``): centre crop about the principal point + resize.

    The new FoV is ``fov·(1 − reduction/90°)`` (exactly ``fov − reduction`` for a 90° camera, and never empty for
    narrower ones); the zoom is ``tan(fov/2) / tan(new/2)`` with ``fov = 2·atan(W / 2fx)``. Deterministic.
    """
    check_rgb(rgb)
    p = resolve_params(FOV_SEVERITIES, severity, params, rgb)
    k = _intrinsics(rgb, intrinsics)
    half = torch.atan(rgb.shape[-1] / (2 * k[:, 0, 0]))
    keep = 1 - p["fov_reduction_deg"].to(half.dtype) / 90.0
    if bool((keep <= 0.01).any()):
        raise ValueError(f"fov_reduction_deg {p['fov_reduction_deg'].tolist()} must be below 89.1 (of 90°)")
    new_half = half * keep
    return warp_homography(rgb, _zoom_matrix(k, half.tan() / new_half.tan()), "border")


__all__ = ["camera_pitch", "camera_roll", "field_of_view", "warp_homography"]
