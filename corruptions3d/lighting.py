"""Lighting inputs of the 3DCC lighting corruptions, derived from depth (no mesh, no Blender).

3DCC's ``shadow``/``multi_illumination`` read 10 Blender renders per view (``relighting``) and ``flash`` reads
Taskonomy ``reshading``. Without those files we approximate them from Euclidean depth and intrinsics:

- ``reshading``: Lambertian shading, point light at the camera (:func:`corruptions3d.geometry.reshading_from_depth`).
- ``relighting`` (:func:`relighting_from_depth`): imitates the Blender recipe (diffuse, no textures, no indirect
  light, one point lamp with inverse-square falloff, shadows on). Each lamp is placed behind the camera on the
  view axis at ``c·z_fix``, ``c ~ U[−0.5, 0)``, ``z_fix`` the median z-depth, plus ``N(0, 1.5²)`` m jitter in
  camera x and y. Like the recipe's rejection sampling, up to 4 candidates are drawn and the first that is at
  least 0.3 m from the surface and on the front side of the nearest surface point is kept (else the first).
  Intensity ``clip(GAIN·D²/(D² + r²)·max(0, n·l), 0, 1)`` (Blender Internal's inverse-square falloff with
  ``distance`` D = 8 m; GAIN matches the brightness of the real Taskonomy relighting renders), times a
  visibility term from screen-space ray marching: a fixed number of points on the segment from the surface to
  the lamp are projected into the image and the point is shadowed if the depth surface there lies in front of
  it by more than a small bias and less than :data:`SHADOW_THICKNESS_M`. Batched over images, lights, pixels.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from corruptions3d import random as R
from corruptions3d.geometry import (
    backproject,
    default_intrinsics,
    euclidean_to_zbuffer,
    fill_invalid_depth,
    normals_from_depth,
    reshading_from_depth,
    valid_depth,
)
from corruptions3d.random import Seeds, as_seeds

__all__ = ["DERIVABLE", "derive", "relighting_from_depth", "sample_lights"]

DERIVABLE = ("intrinsics", "normal", "depth_zbuffer", "reshading", "relighting")
"""Domains :func:`derive` can compute from ``depth_euclidean`` (+ ``intrinsics``)."""
FALLOFF_DISTANCE_M = 8.0
GAIN = 1.8
JITTER_M = 1.5
MIN_CLEARANCE_M = 0.3
CANDIDATES = 4
SHADOW_THICKNESS_M = 0.5
NEAR_M = 0.05


def sample_lights(depth_euclidean: torch.Tensor, intrinsics: torch.Tensor, n_lights: int, seeds: torch.Tensor):
    """Lamp positions ``(B,L,3)`` in the OpenCV camera frame (metres), per image from its own stream."""
    b, _, h, w = depth_euclidean.shape
    dev = depth_euclidean.device
    depth = fill_invalid_depth(depth_euclidean)
    points = backproject(depth, intrinsics)
    z_fix = points[:, 2].flatten(1).median(dim=1).values.view(-1, 1, 1)
    c = R.uniform(seeds, -0.5, 0.0, (n_lights, CANDIDATES), device=dev, stream=0)
    jitter = JITTER_M * R.randn(seeds, (n_lights, CANDIDATES, 2), dev, stream=1)
    cand = torch.cat([jitter, (c * z_fix).unsqueeze(-1)], dim=-1).to(points.dtype)  # (B,L,C,3)
    step = max(1, min(h, w) // 32)
    surf = points[..., ::step, ::step].flatten(2).transpose(1, 2)  # (B,N,3)
    normal = normals_from_depth(depth, intrinsics)[..., ::step, ::step].flatten(2).transpose(1, 2)
    normal = normal * torch.tensor([1.0, 1.0, -1.0], device=dev, dtype=normal.dtype)  # Taskonomy -> OpenCV
    dist = torch.cdist(cand.view(b, -1, 3), surf)  # (B,L·C,N)
    clearance, nearest = dist.min(dim=2)
    idx = nearest.unsqueeze(-1).expand(-1, -1, 3)
    front = ((cand.view(b, -1, 3) - surf.gather(1, idx)) * normal.gather(1, idx)).sum(-1) > 0
    ok = ((clearance >= MIN_CLEARANCE_M) & front).view(b, n_lights, CANDIDATES)
    rank = torch.where(ok, CANDIDATES - torch.arange(CANDIDATES, device=dev), 0)
    pick = rank.argmax(dim=2)  # first acceptable candidate, else the first
    return cand.gather(2, pick.view(b, n_lights, 1, 1).expand(-1, -1, 1, 3)).squeeze(2)


def _shadow_visibility(points: torch.Tensor, lights: torch.Tensor, intrinsics: torch.Tensor, steps: int):
    """``(B,L,H,W)`` 1 where the segment surface->lamp is not blocked by the depth surface, else 0."""
    b, _, h, w = points.shape
    n = lights.shape[1]
    zbuf = points[:, 2]
    p = points.unsqueeze(1)  # (B,1,3,H,W)
    lp = lights.view(b, n, 3, 1, 1)
    pz, lz = p[:, :, 2], lp[:, :, 2]
    t_max = torch.where(lz < NEAR_M, (pz - NEAR_M) / (pz - lz).clamp(min=1e-6), torch.ones_like(pz * lz))
    t_max = t_max.clamp(max=0.99)
    fx, fy = intrinsics[:, 0, 0].view(b, 1, 1, 1), intrinsics[:, 1, 1].view(b, 1, 1, 1)
    cx, cy = intrinsics[:, 0, 2].view(b, 1, 1, 1), intrinsics[:, 1, 2].view(b, 1, 1, 1)
    zbuf = zbuf.flatten(1)
    px, py = p[:, :, 0], p[:, :, 1]
    dx, dy, dz = lp[:, :, 0] - px, lp[:, :, 1] - py, lz - pz
    blocked = torch.zeros(b, n, h, w, dtype=torch.bool, device=points.device)
    for s in range(1, steps + 1):
        t = t_max * (s / steps)
        qz = (pz + t * dz).clamp(min=NEAR_M)
        u = fx * (px + t * dx) / qz + cx
        v = fy * (py + t * dy) / qz + cy
        inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
        pixel = v.long().clamp(0, h - 1) * w + u.long().clamp(0, w - 1)
        surface = zbuf.gather(1, pixel.view(b, -1)).view(b, n, h, w)
        gap = qz - surface
        blocked |= inside & (gap > 0.02 * qz + 0.01) & (gap < SHADOW_THICKNESS_M)
    return (~blocked).to(points.dtype)


def relighting_from_depth(
    depth: torch.Tensor,
    intrinsics: torch.Tensor | None = None,
    n_lights: int = 10,
    generator: Seeds = None,
    lights: torch.Tensor | None = None,
    shadows: bool = True,
    steps: int = 32,
) -> torch.Tensor:
    """Relighting renders ``(B,L,H,W)`` in [0,1] from Euclidean depth ``(B,1,H,W)`` metres.

    ``lights`` ``(B,L,3)`` (OpenCV camera frame, metres) overrides the random lamp placement;
    ``shadows=False`` skips the ray-marched visibility; ``steps`` march steps per pixel and light.
    """
    b, _, h, w = depth.shape
    if intrinsics is None:
        intrinsics = default_intrinsics(b, h, w, device=depth.device)
    intrinsics = intrinsics.to(device=depth.device, dtype=torch.float32)
    filled = fill_invalid_depth(depth.float())
    if lights is None:
        lights = sample_lights(filled, intrinsics, n_lights, as_seeds(generator, b))
    lights = lights.to(filled)
    points = backproject(filled, intrinsics)  # (B,3,H,W)
    normal = normals_from_depth(filled, intrinsics)
    normal = normal * torch.tensor([1.0, 1.0, -1.0], device=normal.device).view(1, 3, 1, 1)
    # n·(l − p) and |l − p|² for every light without materialising (B,L,3,H,W)
    n_dot_l = torch.einsum("bchw,blc->blhw", normal, lights) - (normal * points).sum(1, keepdim=True)
    r2 = (lights**2).sum(-1)[..., None, None] - 2 * torch.einsum("bchw,blc->blhw", points, lights)
    r2 = (r2 + (points**2).sum(1, keepdim=True)).clamp(min=1e-8)
    cosine = (n_dot_l / r2.sqrt()).clamp(min=0)
    falloff = FALLOFF_DISTANCE_M**2 / (FALLOFF_DISTANCE_M**2 + r2)
    out = GAIN * falloff * cosine
    if shadows:
        out = out * _shadow_visibility(points, lights, intrinsics, steps)
    return out.clamp(0, 1)


def derive(
    batch: Mapping[str, torch.Tensor], needed: Iterable[str], generator: Seeds = None
) -> dict[str, torch.Tensor]:
    """A copy of ``batch`` with the missing domains of ``needed`` (from :data:`DERIVABLE`) computed from
    ``depth_euclidean`` ``(B,1,H,W)`` m and ``intrinsics`` ``(B,3,3)`` (default: 90° FoV)."""
    missing = [d for d in needed if d not in batch]
    unknown = [d for d in missing if d not in DERIVABLE]
    if unknown:
        raise ValueError(f"cannot derive {unknown} from depth; derivable domains are {list(DERIVABLE)}")
    out = dict(batch)
    if not missing:
        return out
    if "depth_euclidean" not in batch:
        raise ValueError(
            f"cannot derive {missing}: the batch has no 'depth_euclidean' to derive them from (has {sorted(batch)})"
        )
    depth = batch["depth_euclidean"]
    b, _, h, w = depth.shape
    intrinsics = batch.get("intrinsics")
    if intrinsics is None:
        intrinsics = default_intrinsics(b, h, w, device=depth.device)
    if "intrinsics" in missing:
        out["intrinsics"] = intrinsics
    if "normal" in missing:
        out["normal"] = normals_from_depth(fill_invalid_depth(depth), intrinsics)
    if "depth_zbuffer" in missing:
        out["depth_zbuffer"] = torch.where(valid_depth(depth), euclidean_to_zbuffer(depth, intrinsics), depth)
    if "reshading" in missing:
        out["reshading"] = reshading_from_depth(depth, intrinsics)
    if "relighting" in missing:
        out["relighting"] = relighting_from_depth(depth, intrinsics, generator=generator)
    return out
