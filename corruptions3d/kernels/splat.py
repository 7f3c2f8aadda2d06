"""Forward splatting with a z-buffer in two atomic Triton passes (the hot part of :mod:`corruptions3d.splatting`).

Same steps and rules as the torch reference ``corruptions3d.splatting._splat_chunk``: every program projects
``BLOCK`` source points of one (image, frame) pair into the new camera, then

1. z-buffer: ``atomic_max`` of the relative disparity ``z_near / z'`` at the nearest pixel. Disparities are
   ≥ 0, so their float32 bit patterns, read as int32, order like the floats: the key is that integer (a max of
   disparity is a min of depth);
2. ``atomic_add`` of the bilinear weights times (r, g, b, disparity, 1) at the four corner pixels of every point
   within ``tolerance`` of the z-buffer there.

Normalisation, the hole mask (summed weight ≤ 1e-6) and the push-pull hole filling stay in torch
(:func:`corruptions3d.splatting.push_pull_fill`). Atomic float adds make the order of summation nondeterministic
on the GPU; results agree with the reference to float rounding except where a point projects within rounding of
a pixel boundary (a different nearest pixel or depth-test outcome), which the tests bound.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from corruptions3d.splatting import push_pull_fill

__all__ = ["splat_chunk"]


@triton.jit
def _project(pts_ptr, uv_ptr, fly_ptr, rot_ptr, trans_ptr, k_ptr, z_near_ptr, b, bf, N, offs, mask):
    """Pixel-centre coordinates, relative disparity and the keep flag of points ``offs`` of image ``b``."""
    p = pts_ptr + b.to(tl.int64) * 3 * N + offs
    x = tl.load(p, mask=mask, other=0.0)
    y = tl.load(p + N, mask=mask, other=0.0)
    z = tl.load(p + 2 * N, mask=mask, other=1.0)
    rot = rot_ptr + bf * 9
    tr = trans_ptr + bf * 3
    zc = tl.load(rot + 6) * x + tl.load(rot + 7) * y + tl.load(rot + 8) * z + tl.load(tr + 2)
    xc = tl.load(rot) * x + tl.load(rot + 1) * y + tl.load(rot + 2) * z + tl.load(tr)
    yc = tl.load(rot + 3) * x + tl.load(rot + 4) * y + tl.load(rot + 5) * z + tl.load(tr + 1)
    front = zc > 1e-6
    zs = tl.where(front, zc, 1.0)
    kk = k_ptr + b * 9
    px = tl.load(kk) * xc / zs + tl.load(kk + 2) - 0.5
    py = tl.load(kk + 4) * yc / zs + tl.load(kk + 5) - 0.5
    uv = uv_ptr + b.to(tl.int64) * 2 * N + offs
    moved = tl.maximum(
        tl.abs(px - tl.load(uv, mask=mask, other=0.0)), tl.abs(py - tl.load(uv + N, mask=mask, other=0.0))
    )
    flying = tl.load(fly_ptr + b.to(tl.int64) * N + offs, mask=mask, other=0) != 0
    keep = mask & front & ~(flying & (moved >= 0.5))
    disp = tl.where(keep, tl.load(z_near_ptr + b) / zs, 0.0)
    return px, py, disp, keep


@triton.jit
def _round_half_even(v):
    r = tl.floor(v + 0.5)
    odd = (r - 2.0 * tl.floor(r * 0.5)) == 1.0
    return tl.where(((r - v) == 0.5) & odd, r - 1.0, r)


@triton.jit
def _zbuffer_kernel(
    pts_ptr, uv_ptr, fly_ptr, rot_ptr, trans_ptr, k_ptr, z_near_ptr, zbuf_ptr, N, FC, H, W, BLOCK: tl.constexpr
):
    bf = tl.program_id(1)
    b = bf // FC
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    px, py, disp, keep = _project(pts_ptr, uv_ptr, fly_ptr, rot_ptr, trans_ptr, k_ptr, z_near_ptr, b, bf, N, offs, mask)
    ix = _round_half_even(px)
    iy = _round_half_even(py)
    inside = keep & (ix >= 0) & (ix < W) & (iy >= 0) & (iy < H)
    idx = bf.to(tl.int64) * H * W + tl.where(inside, iy * W + ix, 0).to(tl.int64)
    tl.atomic_max(zbuf_ptr + idx, disp.to(tl.int32, bitcast=True), mask=inside)


@triton.jit
def _accumulate_kernel(
    pts_ptr,
    uv_ptr,
    fly_ptr,
    rot_ptr,
    trans_ptr,
    k_ptr,
    z_near_ptr,
    col_ptr,
    zbuf_ptr,
    acc_ptr,
    tolerance,
    N,
    FC,
    H,
    W,
    BLOCK: tl.constexpr,
):
    bf = tl.program_id(1)
    b = bf // FC
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    px, py, disp, keep = _project(pts_ptr, uv_ptr, fly_ptr, rot_ptr, trans_ptr, k_ptr, z_near_ptr, b, bf, N, offs, mask)
    col = col_ptr + b.to(tl.int64) * 3 * N + offs
    r = tl.load(col, mask=mask, other=0.0)
    g = tl.load(col + N, mask=mask, other=0.0)
    bl = tl.load(col + 2 * N, mask=mask, other=0.0)
    hw = H * W
    x0 = tl.floor(px)
    y0 = tl.floor(py)
    for corner in range(4):
        cx = x0 + corner % 2
        cy = y0 + corner // 2
        wt = (1 - tl.abs(px - cx)) * (1 - tl.abs(py - cy))
        ok = keep & (cx >= 0) & (cx < W) & (cy >= 0) & (cy < H)
        cidx = bf.to(tl.int64) * hw + tl.where(ok, cy * W + cx, 0).to(tl.int64)
        zb = tl.load(zbuf_ptr + cidx, mask=ok, other=0).to(tl.float32, bitcast=True)
        ok = ok & (disp >= zb - tolerance)
        out = acc_ptr + (cidx // hw) * 5 * hw + cidx % hw
        tl.atomic_add(out, r * wt, mask=ok)
        tl.atomic_add(out + hw, g * wt, mask=ok)
        tl.atomic_add(out + 2 * hw, bl * wt, mask=ok)
        tl.atomic_add(out + 3 * hw, disp * wt, mask=ok)
        tl.atomic_add(out + 4 * hw, wt, mask=ok)


def splat_chunk(
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
    block: int = 512,
) -> torch.Tensor:
    """Fused ``corruptions3d.splatting._splat_chunk``: render ``(B,Fc,3,H,W)`` for ``Fc`` poses per image.

    ``colors`` ``(5,B,N)`` (r, g, b, 0, 1), ``points`` ``(B,3,N)`` camera-frame metres, ``src_uv`` ``(B,2,N)``
    source pixel coordinates, ``flying`` the ``(image, point)`` indices of the flying pixels, ``z_near`` ``(B,)``,
    ``rotation`` ``(B,Fc,3,3)``, ``translation`` ``(B,Fc,3)``, ``target_k`` ``(B,3,3)``, ``size`` ``(H, W)``.
    """
    b, fc = rotation.shape[:2]
    h, w = size
    n = points.shape[-1]
    f32 = dict(dtype=torch.float32)
    fly = torch.zeros(b, n, device=points.device, dtype=torch.int8)
    fly[flying[0], flying[1]] = 1
    args = (
        points.to(**f32).contiguous(),
        src_uv.to(**f32).contiguous(),
        fly,
        rotation.to(**f32).contiguous(),
        translation.to(**f32).contiguous(),
        target_k.to(**f32).contiguous(),
        z_near.to(**f32).contiguous(),
    )
    zbuf = torch.zeros(b * fc * h * w, device=points.device, dtype=torch.int32)  # bits of 0.0
    grid = (triton.cdiv(n, block), b * fc)
    _zbuffer_kernel[grid](*args, zbuf, n, fc, h, w, BLOCK=block)
    acc = torch.zeros(b * fc, 5, h, w, device=points.device, dtype=torch.float32)
    _accumulate_kernel[grid](
        *args, colors[:3].transpose(0, 1).to(**f32).contiguous(), zbuf, acc, tolerance, n, fc, h, w, BLOCK=block
    )
    total = acc[:, 4:5]
    known = total > 1e-6
    img = acc[:, :3] / total.clamp(min=1e-12)
    rel_disp = (acc[:, 3:4] / total.clamp(min=1e-12)).clamp(min=1e-3)
    out = push_pull_fill(img, known.to(img) / rel_disp**2)
    return out.view(b, fc, 3, h, w).to(points.dtype)
