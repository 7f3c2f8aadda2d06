"""Image-space mid-level domains computed from rendered buffers: texture and occlusion edges, principal
curvature and corner (keypoint) responses. All take and return batched ``(B,C,H,W)`` float tensors.

These are approximations of the Taskonomy definitions, chosen to be cheap, deterministic and in [0,1]:

- ``edge_texture``: Sobel gradient magnitude of the σ=1 px blurred luminance, ``clamp(|∇I| / 0.1)`` (I in [0,1],
  gradient per pixel).
- ``edge_occlusion``: depth discontinuities. For each pixel, the largest distance of a 4-neighbour's 3D point
  from the pixel's tangent plane, in units of the pixel footprint ``z/f``; continuous surfaces (planes and
  creases) stay below ~2 footprints, occlusion boundaries reach tens: ``clamp((ratio - 2) / 6)``.
- ``principal_curvature``: k1 ≥ k2 (1/m) of the smooth (interpolated-normal) surface from the first and
  second fundamental forms of central differences of points and normals; positive = convex towards the
  camera; stored as ``0.5 + 0.5·tanh(k · 0.25 m)``, so 0.5 = flat. Pixels whose neighbours lie on another
  primitive (silhouettes, contacts) are flat; creases inside one box show as high curvature.
- ``keypoints2d`` / ``keypoints3d``: Shi–Tomasi corner strength (smaller eigenvalue of the σ=1.5 px
  structure tensor), ``clamp(sqrt(λ_min) / gain)``, on rgb luminance (2D) and on camera-frame normals (3D).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from corruptions3d.filters import gaussian_blur

EDGE_TEXTURE_GAIN = 0.1
OCCLUSION_RATIO = (2.0, 6.0)
CURVATURE_SCALE_M = 0.25
KEYPOINT_GAIN = {"2d": 0.08, "3d": 0.3}


def _gaussian(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """σ px Gaussian blur with replicated borders (:func:`corruptions3d.filters.gaussian_blur`)."""
    return gaussian_blur(x, torch.full((x.shape[0],), sigma))


def _sobel(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel derivatives ``(d/dx, d/dy)`` of ``(B,C,H,W)`` (replicated borders): the Sobel kernel
    [[-1,0,1],[-2,0,2],[-1,0,1]]/8 as central difference ⊗ [1,2,1]/4, on shifted slices (cheaper than
    thin convolutions on CPU)."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    dx = p[..., 2:] - p[..., :-2]
    dy = p[..., 2:, :] - p[..., :-2, :]
    gx = (dx[..., :-2, :] + 2 * dx[..., 1:-1, :] + dx[..., 2:, :]) / 8
    return gx, (dy[..., :-2] + 2 * dy[..., 1:-1] + dy[..., 2:]) / 8


def _shifts(x: torch.Tensor) -> list[torch.Tensor]:
    """The 4-neighbours of every pixel (left, right, up, down), borders replicated."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return [p[..., 1:-1, :-2], p[..., 1:-1, 2:], p[..., :-2, 1:-1], p[..., 2:, 1:-1]]


def luminance(rgb: torch.Tensor) -> torch.Tensor:
    """Rec. 601 luma ``(B,1,H,W)`` of ``(B,3,H,W)``."""
    w = torch.tensor([0.299, 0.587, 0.114], device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
    return (rgb * w).sum(1, keepdim=True)


def edge_texture(rgb: torch.Tensor) -> torch.Tensor:
    """``(B,1,H,W)`` in [0,1] from ``(B,3,H,W)`` rgb."""
    y = _gaussian(luminance(rgb), 1.0)
    gx, gy = _sobel(y)
    return (torch.hypot(gx, gy) / EDGE_TEXTURE_GAIN).clamp(0, 1)


def edge_occlusion(points: torch.Tensor, normals: torch.Tensor, valid: torch.Tensor, focal: float) -> torch.Tensor:
    """``(B,1,H,W)`` in [0,1] from camera-frame points ``(B,3,H,W)`` m, unit face normals ``(B,3,H,W)`` (same
    frame), ``valid`` ``(B,1,H,W)`` and the focal length in pixels. Pixels next to invalid ones are edges."""
    footprint = points[:, 2:3].abs().clamp(min=1e-6) / focal
    gap = torch.zeros_like(footprint)
    for q, ok in zip(_shifts(points), _shifts(valid.float())):
        d = ((q - points) * normals).sum(1, keepdim=True).abs()
        gap = torch.maximum(gap, torch.where(ok > 0, d, torch.full_like(d, float("inf"))))
    lo, width = OCCLUSION_RATIO
    return torch.where(valid, ((gap / footprint - lo) / width).clamp(0, 1), torch.zeros_like(gap))


def principal_curvature(
    points: torch.Tensor, normals: torch.Tensor, primitive: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """``(B,2,H,W)`` encoded (k1, k2) from camera-frame points and smooth unit normals ``(B,3,H,W)`` facing
    the camera, ``primitive`` ids ``(B,1,H,W)`` and ``valid`` ``(B,1,H,W)``."""
    pl, pr, pu, pd = _shifts(points)
    nl, nr, nu, nd = _shifts(normals)
    same = valid.clone()
    for q in _shifts(torch.where(valid, primitive, torch.full_like(primitive, -1))):
        same &= q == primitive
    xu, xv = (pr - pl) / 2, (pd - pu) / 2
    # With normals facing the camera, a surface bulging towards it has n_u parallel to x_u (sphere: n_u = x_u/r),
    # so the second fundamental form below is positive for convex shapes.
    nu_, nv_ = (nr - nl) / 2, (nd - nu) / 2
    e, f, g = (xu * xu).sum(1), (xu * xv).sum(1), (xv * xv).sum(1)
    ll, mm, nn = (nu_ * xu).sum(1), ((nu_ * xv).sum(1) + (nv_ * xu).sum(1)) / 2, (nv_ * xv).sum(1)
    det = e * g - f * f
    ok = same[:, 0] & (det > 1e-12)
    det = torch.where(ok, det, torch.ones_like(det))
    mean = (e * nn - 2 * f * mm + g * ll) / (2 * det)
    gauss = (ll * nn - mm * mm) / det
    root = (mean * mean - gauss).clamp(min=0).sqrt()
    k = torch.stack([mean + root, mean - root], dim=1)
    k = torch.where(ok[:, None], k, torch.zeros_like(k))
    return 0.5 + 0.5 * torch.tanh(k * CURVATURE_SCALE_M)


def corner_response(x: torch.Tensor, gain: float) -> torch.Tensor:
    """Shi–Tomasi corner strength ``(B,1,H,W)`` in [0,1] of ``(B,C,H,W)`` (channels summed)."""
    gx, gy = _sobel(x)
    j = torch.cat([(gx * gx).sum(1, keepdim=True), (gy * gy).sum(1, keepdim=True), (gx * gy).sum(1, keepdim=True)], 1)
    j = _gaussian(j, 1.5)
    jxx, jyy, jxy = j[:, 0:1], j[:, 1:2], j[:, 2:3]
    lam = (jxx + jyy) / 2 - torch.sqrt(((jxx - jyy) / 2) ** 2 + jxy**2)
    return (lam.clamp(min=0).sqrt() / gain).clamp(0, 1)
