"""Batched forward splatting: re-render RGB-D images from new camera poses, many frames per image at once.

The torch re-implementation of the point renderer behind the 3DCC motion-blur clips (3D Ken Burns style):

1. back-project every pixel to a camera-frame point (OpenCV frame, metres) with its intrinsics;
2. move the points into each new camera (``P' = R·P + t``) and project them with the target intrinsics;
3. z-buffer: each point writes its relative disparity ``z_near / z'`` (``z_near``: the image's nearest source
   depth) to its nearest pixel with ``scatter_reduce(amax)``;
4. bilinear splatting (``index_add_``) of the points whose relative disparity is within ``tolerance`` of the
   z-buffer at each of their four corner pixels, normalised by the summed weights. The reference keeps points
   within 1.0 disparity unit of the z-buffer with the nearest point at 40 units, i.e. ``tolerance = 1/40``;
5. flying pixels (``|Laplacian(disp / max disp)| >= 0.03``, the reference rule) are dropped once they move by
   half a pixel or more, so an unmoved camera reproduces the input exactly;
6. holes (disocclusions, borders) are filled without a network by background-biased push-pull: a mip pyramid
   of the rendered colour weighted by ``(z'/z_near)²`` (farther surfaces dominate), pulled back to full size.
   The reference fills holes by copying from the farther side and an optional inpainting CNN.

Frames are rendered in chunks bounded by ``max_points`` so memory stays flat at 512² × 60 frames.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from corruptions3d.filters import pad
from corruptions3d.geometry import backproject, fill_invalid_depth

TOLERANCE = 1.0 / 40.0
"""Relative-disparity tolerance of the depth test (reference: 1 unit with the nearest point at 40 units)."""
EDGE_THRESHOLD = 0.03
"""Flying-pixel threshold on ``|Laplacian(disp / max disp)|`` (reference value)."""
MAX_POINTS = 1 << 23
"""Points × frames rendered per chunk (bounds memory: about 40 bytes × 4 corners each)."""

_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def flying_pixels(depth: torch.Tensor, threshold: float = EDGE_THRESHOLD) -> torch.Tensor:
    """Bool ``(B,1,H,W)``: pixels at depth edges, ``|Laplacian(disp / max disp)| >= threshold``.

    ``depth`` ``(B,1,H,W)`` metres, valid everywhere. Border: reflect-101 (OpenCV's default, as the reference).
    """
    disp = 1.0 / depth.clamp(min=1e-6)
    disp = disp / disp.flatten(1).amax(1).view(-1, 1, 1, 1)
    lap = F.conv2d(pad(disp, 1, 1, 1, 1, "reflect101"), _LAPLACIAN.to(disp).view(1, 1, 3, 3))
    return lap.abs() >= threshold


def push_pull_fill(color: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Fill pixels with ``weight == 0`` from a weighted mip pyramid; known pixels are kept exactly.

    ``color`` ``(N,C,H,W)``, ``weight`` ``(N,1,H,W)`` >= 0 (larger weight = preferred source). Batched over N.
    """
    pyramid = [(color * weight, weight)]
    while min(pyramid[-1][1].shape[-2:]) > 1:
        c, w = pyramid[-1]
        pyramid.append((F.avg_pool2d(c, 2, ceil_mode=True), F.avg_pool2d(w, 2, ceil_mode=True)))
    c, w = pyramid[-1]
    estimate = c / w.clamp(min=1e-12)
    for c, w in reversed(pyramid[:-1]):
        up = F.interpolate(estimate, size=c.shape[-2:], mode="bilinear", align_corners=False)
        estimate = torch.where(w > 0, c / w.clamp(min=1e-12), up)
    return estimate


def _splat_chunk(
    colors: torch.Tensor,
    points: torch.Tensor,
    src_uv: torch.Tensor,
    flying: torch.Tensor,
    z_near: torch.Tensor,
    rotation: torch.Tensor,
    translation: torch.Tensor,
    target_k: torch.Tensor,
    size: tuple[int, int],
    tolerance: float,
) -> torch.Tensor:
    """Render ``(B,Fc,3,H,W)`` for ``Fc`` poses per image; see the module docstring for the steps."""
    b, fc = rotation.shape[:2]
    h, w = size
    n = points.shape[-1]
    p = torch.einsum("bfij,bjn->bfin", rotation, points) + translation.unsqueeze(-1)  # (B,Fc,3,N)
    z = p[:, :, 2]
    front = z > 1e-6
    zs = torch.where(front, z, torch.ones_like(z))
    k = target_k.view(b, 1, 3, 3)
    px = k[..., 0, 0, None] * p[:, :, 0] / zs + k[..., 0, 2, None] - 0.5  # pixel-centre coordinates
    py = k[..., 1, 1, None] * p[:, :, 1] / zs + k[..., 1, 2, None] - 0.5
    moved = (px - src_uv[:, None, 0]).abs().maximum((py - src_uv[:, None, 1]).abs()) >= 0.5
    keep = front & ~(flying[:, None] & moved)
    disp = torch.where(keep, z_near.view(b, 1, 1) / zs, torch.zeros_like(zs))  # relative disparity, 1 = nearest
    base = (torch.arange(b * fc, device=p.device).view(b, fc, 1) * (h * w)).expand(b, fc, n)

    ix, iy = px.round(), py.round()
    inside = keep & (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
    idx = torch.where(inside, base + (iy * w + ix).long(), torch.zeros_like(base))
    zbuf = torch.zeros(b * fc * h * w, device=p.device, dtype=p.dtype)
    zbuf.scatter_reduce_(0, idx.flatten(), torch.where(inside, disp, torch.zeros_like(disp)).flatten(), "amax")

    x0, y0 = px.floor(), py.floor()
    cx = torch.stack([x0, x0 + 1, x0, x0 + 1])  # four corners (4,B,Fc,N)
    cy = torch.stack([y0, y0, y0 + 1, y0 + 1])
    wt = (1 - (px - cx).abs()) * (1 - (py - cy).abs())
    ok = keep & (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
    cidx = torch.where(ok, base + (cy * w + cx).long(), torch.zeros_like(base))
    ok = ok & (disp >= zbuf[cidx] - tolerance)
    wt = torch.where(ok, wt, torch.zeros_like(wt)).flatten()
    cidx = cidx.flatten()
    acc = torch.zeros(b * fc * h * w, 5, device=p.device, dtype=p.dtype)
    rgb = colors.view(b, 1, 3, n).expand(b, fc, 3, n).permute(0, 1, 3, 2)  # (B,Fc,N,3)
    vals = torch.cat([rgb, disp.unsqueeze(-1), torch.ones_like(disp).unsqueeze(-1)], -1)  # (B,Fc,N,5)
    acc.index_add_(0, cidx, vals.unsqueeze(0).expand(4, -1, -1, -1, -1).reshape(-1, 5) * wt[:, None])
    acc = acc.view(b * fc, h, w, 5).permute(0, 3, 1, 2)
    total = acc[:, 4:5]
    known = total > 1e-6
    img = acc[:, :3] / total.clamp(min=1e-12)
    rel_disp = (acc[:, 3:4] / total.clamp(min=1e-12)).clamp(min=1e-3)
    out = push_pull_fill(img, known.to(img) / rel_disp**2)
    return out.view(b, fc, 3, h, w)


def render_chunks(
    rgb: torch.Tensor,
    depth: torch.Tensor,
    intrinsics: torch.Tensor,
    rotation: torch.Tensor,
    translation: torch.Tensor,
    target_intrinsics: torch.Tensor | None = None,
    *,
    tolerance: float = TOLERANCE,
    max_points: int = MAX_POINTS,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(first_frame, frames)`` with ``frames`` ``(B,Fc,3,H,W)``, all frames of all images in chunks.

    Args:
        rgb: ``(B,3,H,W)`` in [0,1].
        depth: ``(B,1,H,W)`` Euclidean metres (invalid pixels are set to the image's farthest valid depth).
        intrinsics: ``(B,3,3)`` pixels, source camera.
        rotation: ``(B,F,3,3)``, translation ``(B,F,3)`` metres: ``P_new = R·P_src + t`` (OpenCV frame).
        target_intrinsics: ``(B,3,3)`` of the rendered views (default: ``intrinsics``).
    """
    b, _, h, w = rgb.shape
    nf = rotation.shape[1]
    if rotation.shape != (b, nf, 3, 3) or translation.shape != (b, nf, 3):
        raise ValueError(
            f"rotation must be (B,F,3,3) and translation (B,F,3) with B={b}, got {tuple(rotation.shape)} "
            f"and {tuple(translation.shape)}"
        )
    dt = rgb.dtype
    depth = fill_invalid_depth(depth.to(dt))
    k = intrinsics.to(rgb.device, dt)
    points = backproject(depth, k).flatten(2)  # (B,3,N)
    z_near = points[:, 2].amin(1)
    v, u = torch.meshgrid(
        torch.arange(h, device=rgb.device, dtype=dt), torch.arange(w, device=rgb.device, dtype=dt), indexing="ij"
    )
    src_uv = torch.stack([u.flatten(), v.flatten()]).expand(b, 2, h * w)
    flying = flying_pixels(depth).flatten(1)
    target_k = k if target_intrinsics is None else target_intrinsics.to(rgb.device, dt)
    colors = rgb.flatten(2)
    step = max(1, max_points // (b * h * w))
    for f0 in range(0, nf, step):
        sl = slice(f0, f0 + step)
        yield (
            f0,
            _splat_chunk(
                colors,
                points,
                src_uv,
                flying,
                z_near,
                rotation[:, sl].to(rgb.device, dt),
                translation[:, sl].to(rgb.device, dt),
                target_k,
                (h, w),
                tolerance,
            ),
        )


def render_views(
    rgb: torch.Tensor,
    depth: torch.Tensor,
    intrinsics: torch.Tensor,
    rotation: torch.Tensor,
    translation: torch.Tensor,
    target_intrinsics: torch.Tensor | None = None,
    **kwargs,
) -> torch.Tensor:
    """All rendered frames ``(B,F,3,H,W)`` in [0,1] (arguments as :func:`render_chunks`)."""
    chunks = render_chunks(rgb, depth, intrinsics, rotation, translation, target_intrinsics, **kwargs)
    return torch.cat([c for _, c in chunks], 1).clamp(0, 1)


def render_average(
    rgb: torch.Tensor,
    depth: torch.Tensor,
    intrinsics: torch.Tensor,
    rotation: torch.Tensor,
    translation: torch.Tensor,
    frame_weights: torch.Tensor,
    **kwargs,
) -> torch.Tensor:
    """Weighted mean of the rendered frames ``(B,3,H,W)``; ``frame_weights`` ``(B,F)`` >= 0, one positive per row.

    Memory does not grow with F (frames are accumulated chunk by chunk).
    """
    wts = frame_weights.to(rgb.device, rgb.dtype)
    total = torch.zeros_like(rgb)
    for f0, frames in render_chunks(rgb, depth, intrinsics, rotation, translation, **kwargs):
        total += torch.einsum("bf,bfchw->bchw", wts[:, f0 : f0 + frames.shape[1]], frames)
    return (total / wts.sum(1).view(-1, 1, 1, 1)).clamp(0, 1)


__all__ = ["flying_pixels", "push_pull_fill", "render_average", "render_chunks", "render_views"]
