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

On the CPU steps 2-6 run compiled (:mod:`corruptions3d.kernels.splat_cpu`, numba, one frame at a time per thread,
the same splatted sums), on CUDA as Triton kernels; these torch ops are the reference (``ROBUST_DISABLE_NUMBA=1`` /
``ROBUST_DISABLE_TRITON=1`` select them). Frames are rendered in chunks of about ``max_points`` points × frames:
memory stays flat at any clip length. Every step is elementwise or an in-order scatter per image, so results are
bit-identical for any chunking and batch composition. :func:`render_prefix_means` renders a path once for several
"first N frames" means (the motion-blur severities).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from corruptions3d.filters import pad
from corruptions3d.geometry import backproject, fill_invalid_depth
from corruptions3d.kernels import fused_kernel

TOLERANCE = 1.0 / 40.0
"""Relative-disparity tolerance of the depth test (reference: 1 unit with the nearest point at 40 units)."""
EDGE_THRESHOLD = 0.03
"""Flying-pixel threshold on ``|Laplacian(disp / max disp)|`` (reference value)."""
MAX_POINTS = 1 << 18
"""Points × frames per call on a single-threaded CPU (about 100 bytes each: a 512² frame's buffers stay in cache)."""
MAX_POINTS_PARALLEL = 1 << 23
"""Points × frames per call on CUDA and multi-threaded CPUs: fewer, larger ops (each op's thread synchronisation
costs far more than the cache misses on an oversubscribed CPU)."""
PAD = 2
"""Border pixels around every rendered frame that absorb out-of-view points."""

_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def flying_pixels(depth: torch.Tensor, threshold: float = EDGE_THRESHOLD) -> torch.Tensor:
    """Bool ``(B,1,H,W)``: pixels at depth edges, ``|Laplacian(disp / max disp)| >= threshold``.

    ``depth`` ``(B,1,H,W)`` metres, valid everywhere. Border: reflect-101 (OpenCV's default, as the reference).
    """
    disp = 1.0 / depth.clamp(min=1e-6)
    disp = disp / disp.flatten(1).amax(1).view(-1, 1, 1, 1)
    lap = F.conv2d(pad(disp, 1, 1, 1, 1, "reflect101"), _LAPLACIAN.to(disp).view(1, 1, 3, 3))
    return lap.abs() >= threshold


def _sum_pool(x: torch.Tensor) -> torch.Tensor:
    """2×2 sums ``(N,C,⌈H/2⌉,⌈W/2⌉)`` of ``(N,C,H,W)``; an odd last row/column is summed with zeros."""
    h, w = x.shape[-2:]
    if h % 2 or w % 2:
        x = F.pad(x, (0, w % 2, 0, h % 2))
    rows = x[..., 0::2, :] + x[..., 1::2, :]
    return rows[..., 0::2] + rows[..., 1::2]


def push_pull_fill(color: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Fill pixels with ``weight == 0`` from a weighted mip pyramid; known pixels are kept exactly.

    ``color`` ``(N,C,H,W)``, ``weight`` ``(N,1,H,W)`` >= 0 (larger weight = preferred source). Batched over N.
    Each level is the weighted 2×2 mean of the one above (an odd last row/column averages what it has); a hole
    takes the bilinear upsampling of the next coarser level's estimate.
    """
    n, c, h, w = color.shape
    level = torch.empty(n, c + 1, h, w, device=color.device, dtype=color.dtype)
    torch.mul(color, weight, out=level[:, :c])
    level[:, c:] = weight
    pyramid = [level]
    while min(level.shape[-2:]) > 1:
        level = _sum_pool(level)  # weighted sums: the mean's divisor cancels in sum(c·w) / sum(w)
        pyramid.append(level)
    estimate = level[:, :c] / level[:, c:].clamp(min=1e-12)
    for level in reversed(pyramid[1:-1]):
        up = F.interpolate(estimate, size=level.shape[-2:], mode="bilinear", align_corners=False)
        wl = level[:, c:]
        estimate = torch.where(wl > 0, level[:, :c] / wl.clamp(min=1e-12), up)
    up = F.interpolate(estimate, size=(h, w), mode="bilinear", align_corners=False)
    return torch.where(weight > 0, color, up)


def projection_matrices(rotation: torch.Tensor, translation: torch.Tensor, target_k: torch.Tensor) -> torch.Tensor:
    """``K·[R|t]`` ``(B,Fc,3,4)`` with the pixel-centre shift (-0.5 px) folded into the principal point.

    ``rotation`` ``(B,Fc,3,3)``, ``translation`` ``(B,Fc,3)``, ``target_k`` ``(B,3,3)`` (skew is ignored).
    Elementwise products and sums in a fixed order (not bmm), so no result depends on the chunking.
    """
    b = rotation.shape[0]
    kk = torch.zeros(b, 1, 3, 3, device=rotation.device, dtype=rotation.dtype)
    kk[:, 0, 0, 0], kk[:, 0, 1, 1], kk[:, 0, 2, 2] = target_k[:, 0, 0], target_k[:, 1, 1], 1.0
    kk[:, 0, 0, 2], kk[:, 0, 1, 2] = target_k[:, 0, 2] - 0.5, target_k[:, 1, 2] - 0.5
    krt = kk.unsqueeze(-1) * torch.cat([rotation, translation.unsqueeze(-1)], -1).unsqueeze(-3)  # (B,Fc,3,3,4)
    return krt[..., 0, :] + krt[..., 1, :] + krt[..., 2, :]


def _accumulate(
    colors: torch.Tensor,
    points: torch.Tensor,
    src_uv: torch.Tensor,
    flying: tuple[torch.Tensor, torch.Tensor],
    z_near: torch.Tensor,
    krt: torch.Tensor,
    size: tuple[int, int],
    tolerance: float,
) -> torch.Tensor:
    """Splatted sums ``(5, B*Fc, H+2·PAD, W+2·PAD)`` of (r, g, b, disparity, 1) × bilinear weight (steps 2-4).

    ``colors`` ``(5,B,N)`` (r, g, b, 0, 1), ``points`` ``(B,3,N)`` metres, ``src_uv`` ``(B,2,N)`` source pixel
    coordinates, ``flying`` the ``(image, point)`` indices of the flying pixels, ``z_near`` ``(B,)``, ``krt``
    ``(B,Fc,3,4)`` from :func:`projection_matrices`.

    Every frame is rendered into a buffer with a ``PAD``-pixel border: points outside the view (and dropped
    ones, sent to -inf) are clamped into the border, so no bounds masks are needed, and the four bilinear
    corners of a point are the buffer shifted by ``0, 1, Wp, Wp + 1`` read at one index.
    """
    b, fc = krt.shape[:2]
    h, w = size
    n = points.shape[-1]
    hp, wp = h + 2 * PAD, w + 2 * PAD
    dev, dt = points.device, points.dtype
    krt = krt.unsqueeze(-1)  # (B,Fc,3,4,1)
    p = points.view(b, 1, 1, 3, n)
    xyz = krt[..., 0, :] * p[..., 0, :] + krt[..., 1, :] * p[..., 1, :]
    xyz += krt[..., 2, :] * p[..., 2, :]
    xyz += krt[..., 3, :]  # (B,Fc,3,N)
    z = xyz[:, :, 2]
    inv_z = z.reciprocal()
    px = xyz[:, :, 0] * inv_z  # (B,Fc,N) pixel-centre coordinates
    py = xyz[:, :, 1] * inv_z
    disp = inv_z.mul_(z_near.view(b, 1, 1))  # relative disparity, 1 = the nearest source point
    behind = z <= 1e-6
    px.masked_fill_(behind, -math.inf)
    py.masked_fill_(behind, -math.inf)
    fb, fn = flying
    if fb.numel():  # flying pixels are dropped once they move by half a pixel or more
        fu, fv = px[fb, :, fn], py[fb, :, fn]  # (K,Fc)
        moved = (fu - src_uv[fb, 0, fn, None]).abs().maximum((fv - src_uv[fb, 1, fn, None]).abs()) >= 0.5
        px[fb, :, fn] = fu.masked_fill(moved, -math.inf)

    base = (torch.arange(b * fc, device=dev) * (hp * wp) + (PAD * wp + PAD)).view(b, fc, 1)
    near = py.round().clamp_(-PAD, h + PAD - 1).mul_(wp).add_(px.round().clamp_(-PAD, w + PAD - 1))
    near = near.long().add_(base).view(-1)
    zbuf = torch.zeros(b * fc * hp * wp, device=dev, dtype=dt)
    zbuf.scatter_reduce_(0, near, disp.view(-1), "amax")
    zbuf.sub_(tolerance)  # a corner takes a point with disp >= zbuf - tolerance there
    x0 = px.floor().clamp_(-PAD, w)
    y0 = py.floor().clamp_(-PAD, h)
    corner = y0.mul(wp).add_(x0).long().add_(base).view(-1)  # top-left corner of every point
    fx, fy = px.sub_(x0), py.sub_(y0)
    gx, gy = 1 - fx, 1 - fy

    vals = colors.unsqueeze(2).repeat(1, 1, fc, 1)  # (5,B,Fc,N): r, g, b, disp, 1
    vals[3] = disp
    vals = vals.view(5, -1)
    disp = disp.view(-1)
    acc = torch.zeros(5, b * fc * hp * wp, device=dev, dtype=dt)
    wt, src = torch.empty_like(disp), torch.empty_like(vals)
    for off, wx, wy in ((0, gx, gy), (1, fx, gy), (wp, gx, fy), (wp + 1, fx, fy)):
        torch.mul(wx.view(-1), wy.view(-1), out=wt).masked_fill_(zbuf[off:].index_select(0, corner) > disp, 0.0)
        acc[:, off:].index_add_(1, corner, torch.mul(vals, wt, out=src))
    return acc.view(5, b * fc, hp, wp)


@fused_kernel("splat_chunk")
def _splat_chunk(
    colors: torch.Tensor,
    points: torch.Tensor,
    src_uv: torch.Tensor,
    flying: tuple[torch.Tensor, torch.Tensor],
    z_near: torch.Tensor,
    rotation: torch.Tensor,
    translation: torch.Tensor,
    target_k: torch.Tensor,
    size: tuple[int, int],
    tolerance: float,
) -> torch.Tensor:
    """Render ``(B,Fc,3,H,W)`` for ``Fc`` poses per image; see the module docstring for the steps.

    Arguments as :func:`_accumulate`, with ``rotation`` ``(B,Fc,3,3)``, ``translation`` ``(B,Fc,3)`` and
    ``target_k`` ``(B,3,3)`` in place of ``krt``.
    """
    b, fc = rotation.shape[:2]
    h, w = size
    krt = projection_matrices(rotation, translation, target_k)
    acc = _accumulate(colors, points, src_uv, flying, z_near, krt, size, tolerance)[:, :, PAD : PAD + h, PAD : PAD + w]
    total = acc[4:5].clamp(min=1e-12)
    img = (acc[:3] / total).transpose(0, 1)
    rel_disp = (acc[3:4] / total).clamp(min=1e-3).transpose(0, 1)
    weight = (acc[4:5] > 1e-6).transpose(0, 1).to(points.dtype) / rel_disp**2
    return push_pull_fill(img, weight).view(b, fc, 3, h, w)


def render_chunks(
    rgb: torch.Tensor,
    depth: torch.Tensor,
    intrinsics: torch.Tensor,
    rotation: torch.Tensor,
    translation: torch.Tensor,
    target_intrinsics: torch.Tensor | None = None,
    *,
    tolerance: float = TOLERANCE,
    max_points: int | None = None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(first_frame, frames)`` with ``frames`` ``(B,Fc,3,H,W)``, all frames of all images in chunks.

    Args:
        rgb: ``(B,3,H,W)`` in [0,1].
        depth: ``(B,1,H,W)`` Euclidean metres (invalid pixels are set to the image's farthest valid depth).
        intrinsics: ``(B,3,3)`` pixels, source camera.
        rotation: ``(B,F,3,3)``, translation ``(B,F,3)`` metres: ``P_new = R·P_src + t`` (OpenCV frame).
        target_intrinsics: ``(B,3,3)`` of the rendered views (default: ``intrinsics``).
        max_points: points × frames splatted per call (default :data:`MAX_POINTS` with one intra-op CPU
            thread, else :data:`MAX_POINTS_PARALLEL`); images are split into groups when one frame of the batch
            is larger. Results do not depend on it.
    """
    b, _, h, w = rgb.shape
    nf = rotation.shape[1]
    if rotation.shape != (b, nf, 3, 3) or translation.shape != (b, nf, 3):
        raise ValueError(
            f"rotation must be (B,F,3,3) and translation (B,F,3) with B={b}, got {tuple(rotation.shape)} "
            f"and {tuple(translation.shape)}"
        )
    dt = rgb.dtype
    if (h + 2 * PAD) * (w + 2 * PAD) > 2 / torch.finfo(dt).eps:  # largest run of exactly representable integers
        raise ValueError(f"rgb of {h}x{w} px is too large for exact {dt} pixel indices; pass float64 images")
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
    colors = torch.cat([rgb.flatten(2), torch.zeros_like(points[:, :1]), torch.ones_like(points[:, :1])], 1)
    colors = colors.transpose(0, 1).contiguous()  # (5,B,N)
    rotation, translation = rotation.to(rgb.device, dt), translation.to(rgb.device, dt)
    if max_points is None:
        max_points = MAX_POINTS_PARALLEL if rgb.is_cuda or torch.get_num_threads() > 1 else MAX_POINTS
    group = min(b, max(1, max_points // (h * w)))  # images per call
    step = max(1, max_points // (group * h * w))  # frames per call
    groups = [slice(i, i + group) for i in range(0, b, group)]
    per_group = [(colors[:, g], points[g], src_uv[g], flying[g].nonzero(as_tuple=True), z_near[g]) for g in groups]
    for f0 in range(0, nf, step):
        sl = slice(f0, f0 + step)
        parts = [
            _splat_chunk(*args, rotation[g, sl], translation[g, sl], target_k[g], (h, w), tolerance)
            for g, args in zip(groups, per_group)
        ]
        yield f0, torch.cat(parts) if len(parts) > 1 else parts[0]


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


def render_prefix_means(
    rgb: torch.Tensor,
    depth: torch.Tensor,
    intrinsics: torch.Tensor,
    rotation: torch.Tensor,
    translation: torch.Tensor,
    frames: torch.Tensor,
    **kwargs,
) -> torch.Tensor:
    """Means of the leading ``frames`` rendered views, ``(B,S,3,H,W)`` in [0,1], from one render of the path.

    ``frames`` ``(B,S)`` in ``[1, F]`` may be fractional: the last frame used is weighted by the fraction. Only
    the frames needed are rendered, once for all S columns; every mean comes from one running sum in path order,
    so a column is bit-identical to a call with that column alone. Other arguments as :func:`render_chunks`.
    """
    b, nf = rotation.shape[:2]
    frames = frames.to(rgb.device, rgb.dtype)
    if frames.dim() != 2 or frames.shape[0] != b:
        raise ValueError(f"frames must be (B,S) with B={b}, got {tuple(frames.shape)}")
    if bool((frames < 1).any()) or bool((frames > nf).any()):
        raise ValueError(f"frames must lie in [1, {nf}], got {frames.tolist()}")
    last = frames.ceil().long() - 1  # (B,S) index of the last frame of each mean
    frac = (frames - last).view(*frames.shape, 1, 1, 1)  # its weight, in (0, 1]
    used = int(last.max()) + 1
    out = torch.empty(*frames.shape, *rgb.shape[1:], device=rgb.device, dtype=rgb.dtype)
    running = torch.zeros_like(rgb)
    for f0, chunk in render_chunks(rgb, depth, intrinsics, rotation[:, :used], translation[:, :used], **kwargs):
        for i, frame in enumerate(chunk.unbind(1)):
            ib, js = (last == f0 + i).nonzero(as_tuple=True)
            out[ib, js] = (running[ib] + frac[ib, js] * frame[ib]) / frames[ib, js].view(-1, 1, 1, 1)
            running += frame
    return out.clamp_(0, 1)


__all__ = ["flying_pixels", "push_pull_fill", "render_average", "render_chunks", "render_prefix_means", "render_views"]
