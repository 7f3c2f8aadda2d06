"""Camera geometry on batches: rays, depth conventions, normals and shading from depth.

Conventions (Taskonomy, see ``robust.tasks``): depth in metres, ``(B,1,H,W)``; intrinsics ``(B,3,3)``
in pixels with pixel centres at integer + 0.5; normals ``(B,3,H,W)`` unit vectors in the Taskonomy
camera frame (+x right, +y down, +z towards the viewer). Internally points live in the OpenCV camera
frame (+x right, +y down, +z forward), so ``normal_taskonomy = (n_x, n_y, -n_z)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

DEFAULT_FOV_DEG = 90.0
"""Field of view assumed when a batch carries no intrinsics (the Taskonomy sample's fixated 90°)."""
INVALID_DEPTH = 65535 / 512
"""Depth that the Taskonomy 65535 code decodes to (metres); see ``robust.tasks``."""


def default_intrinsics(
    batch_size: int, height: int, width: int, fov_deg: float = DEFAULT_FOV_DEG, device=None, dtype=torch.float32
) -> torch.Tensor:
    """``(B,3,3)`` intrinsics for a horizontal FoV with the principal point at the image centre."""
    f = (width / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    k = torch.tensor([[f, 0, width / 2.0], [0, f, height / 2.0], [0, 0, 1]], device=device, dtype=dtype)
    return k.expand(batch_size, 3, 3).clone()


def valid_depth(depth: torch.Tensor) -> torch.Tensor:
    """Bool mask of usable depth: finite, positive, below the invalid code."""
    return torch.isfinite(depth) & (depth > 0) & (depth < INVALID_DEPTH - 1e-3)


def fill_invalid_depth(depth: torch.Tensor) -> torch.Tensor:
    """Replace invalid pixels by each image's maximum valid depth (as the 3DCC reference does).

    Images without any valid pixel get depth 1 m everywhere.
    """
    ok = valid_depth(depth)
    masked = torch.where(ok, depth, torch.zeros_like(depth))
    far = masked.flatten(1).amax(1).view(-1, 1, 1, 1)
    far = torch.where(far > 0, far, torch.ones_like(far))
    return torch.where(ok, depth, far.expand_as(depth))


def pixel_rays(intrinsics: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Unnormalised rays ``K⁻¹ [u+½, v+½, 1]`` as ``(B,3,H,W)`` (z component 1)."""
    k = intrinsics.to(torch.float32)
    dev = k.device
    v, u = torch.meshgrid(
        torch.arange(height, device=dev, dtype=torch.float32) + 0.5,
        torch.arange(width, device=dev, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    fx, fy = k[:, 0, 0].view(-1, 1, 1), k[:, 1, 1].view(-1, 1, 1)
    cx, cy = k[:, 0, 2].view(-1, 1, 1), k[:, 1, 2].view(-1, 1, 1)
    x = (u - cx) / fx
    y = (v - cy) / fy
    return torch.stack([x, y, torch.ones_like(x)], dim=1)


def channel_norm(x: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Euclidean norm over dim 1, ``max(|x|, eps)`` as ``(B,1,H,W)``; a sum of squares (``Tensor.norm`` over
    dim 1 is much slower on CPU); clamped before the square root, so gradients stay finite at 0."""
    return x.square().sum(1, keepdim=True).clamp_min(eps * eps).sqrt()


def normalize_channels(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``x / max(|x|, eps)`` over dim 1 (as ``F.normalize(x, dim=1)``)."""
    return x / channel_norm(x, eps)


def ray_norm(intrinsics: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``|K⁻¹ [u+½, v+½, 1]|`` as ``(B,1,H,W)``: ``depth_euclidean = depth_zbuffer · ray_norm``."""
    return channel_norm(pixel_rays(intrinsics, height, width))


def euclidean_to_zbuffer(depth: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Distance along the ray ``(B,1,H,W)`` m -> planar z depth ``(B,1,H,W)`` m."""
    return depth / ray_norm(intrinsics, *depth.shape[-2:]).to(depth.dtype)


def zbuffer_to_euclidean(depth: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Planar z depth ``(B,1,H,W)`` m -> distance along the ray ``(B,1,H,W)`` m."""
    return depth * ray_norm(intrinsics, *depth.shape[-2:]).to(depth.dtype)


def backproject(depth_euclidean: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Camera-frame (OpenCV) points ``(B,3,H,W)`` in metres from Euclidean depth."""
    rays = pixel_rays(intrinsics, *depth_euclidean.shape[-2:]).to(depth_euclidean.dtype)
    return rays * (depth_euclidean / channel_norm(rays))


def normals_from_depth(depth_euclidean: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Unit normals ``(B,3,H,W)`` in the Taskonomy frame from central differences of back-projected points.

    Normals face the camera. Values at depth discontinuities mix both sides (as any finite difference).
    """
    p = backproject(depth_euclidean, intrinsics)
    pp = F.pad(p, (1, 1, 1, 1), mode="replicate")
    du = pp[..., 1:-1, 2:] - pp[..., 1:-1, :-2]
    dv = pp[..., 2:, 1:-1] - pp[..., :-2, 1:-1]
    n = torch.cross(du, dv, dim=1)
    facing = (n * p).sum(1, keepdim=True) > 0
    n = torch.where(facing, -n, n)
    n = normalize_channels(n)
    return n * torch.tensor([1.0, 1.0, -1.0], device=n.device, dtype=n.dtype).view(1, 3, 1, 1)


def lambertian(
    normal: torch.Tensor, depth_euclidean: torch.Tensor, intrinsics: torch.Tensor, light: torch.Tensor | None = None
) -> torch.Tensor:
    """Lambertian term ``max(0, n·l)`` ``(B,1,H,W)`` for a point light; ``light`` ``(B,3)`` in the OpenCV
    camera frame (metres), default the camera centre (Taskonomy's ``reshading``)."""
    p = backproject(depth_euclidean, intrinsics)
    to_light = -p if light is None else light.view(-1, 3, 1, 1).to(p) - p
    l = normalize_channels(to_light)
    n_cv = normal * torch.tensor([1.0, 1.0, -1.0], device=normal.device, dtype=normal.dtype).view(1, 3, 1, 1)
    return (n_cv * l).sum(1, keepdim=True).clamp(min=0.0)


def reshading_from_depth(depth_euclidean: torch.Tensor, intrinsics: torch.Tensor | None = None) -> torch.Tensor:
    """Approximate Taskonomy ``reshading`` ``(B,1,H,W)`` in [0,1] from depth: Lambertian, light at the camera."""
    b, _, h, w = depth_euclidean.shape
    if intrinsics is None:
        intrinsics = default_intrinsics(b, h, w, device=depth_euclidean.device)
    d = fill_invalid_depth(depth_euclidean)
    return lambertian(normals_from_depth(d, intrinsics), d, intrinsics)
