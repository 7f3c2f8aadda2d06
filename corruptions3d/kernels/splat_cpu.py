"""Forward splatting compiled for the CPU: ``corruptions3d.splatting._splat_chunk`` as one numba pass per frame.

For every (image, frame) pair, in one thread with buffers reused across its frames: project every point, z-buffer
its nearest pixel, add its bilinear weights times (r, g, b, disparity, 1) to its four corner pixels when it is
within ``tolerance`` of the z-buffer there, normalise, and fill holes by push-pull. The projection, z-buffer and
sums use the reference's float operations in the reference's order (corner by corner, points in order), so the
splatted sums are bit-identical to it; the push-pull's bilinear upsampling rounds differently from
``F.interpolate`` (float rounding). Pairs are split over the threads of
:func:`corruptions3d.parallel.parallel_map`: the compiled loops release the GIL and every pair writes only its own
output.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from corruptions3d.parallel import parallel_map, workers_for
from corruptions3d.splatting import PAD, projection_matrices

__all__ = ["splat_chunk"]


@numba.njit(nogil=True, cache=True)
def _splat(pts, rgb, src_uv, flying, m, zn, consts, w, acc, zbuf, fx, fy, disp, corner):  # pragma: no cover
    """Splatted sums ``acc`` ``(Hp·Wp, 5)`` of one frame; ``m`` the ``(3,4)`` projection, the rest scratch."""
    tol, eps, one, half, lo = consts[0], consts[1], consts[2], consts[3], consts[4]
    w_max, h_max, w_near, h_near = consts[5], consts[6], consts[7], consts[8]
    wp = w + 2 * PAD
    acc[:] = 0
    zbuf[:] = 0
    for i in range(pts.shape[1]):
        x, y, z = pts[0, i], pts[1, i], pts[2, i]
        xs = m[0, 0] * x + m[0, 1] * y
        xs += m[0, 2] * z
        xs += m[0, 3]
        ys = m[1, 0] * x + m[1, 1] * y
        ys += m[1, 2] * z
        ys += m[1, 3]
        zs = m[2, 0] * x + m[2, 1] * y
        zs += m[2, 2] * z
        zs += m[2, 3]
        inv_z = one / zs
        u, v = xs * inv_z, ys * inv_z
        d = inv_z * zn
        if not (zs > eps) or u != u or v != v:  # behind the camera, or NaN: dropped into the border
            u, v = -np.inf, -np.inf
        if flying[i] and max(abs(u - src_uv[0, i]), abs(v - src_uv[1, i])) >= half:
            u = -np.inf
        near = (int(min(max(np.rint(v), lo), h_near)) + PAD) * wp + int(min(max(np.rint(u), lo), w_near)) + PAD
        zbuf[near] = max(zbuf[near], d)
        x0 = min(max(np.floor(u), lo), w_max)
        y0 = min(max(np.floor(v), lo), h_max)
        fx[i], fy[i], disp[i] = u - x0, v - y0, d
        corner[i] = (int(y0) + PAD) * wp + int(x0) + PAD if u > -np.inf else -1
    for j in range(zbuf.shape[0]):
        zbuf[j] -= tol
    for c in range(4):
        dx, dy = c % 2, c // 2
        off = dy * wp + dx
        for i in range(pts.shape[1]):
            if corner[i] < 0 or zbuf[corner[i] + off] > disp[i]:
                continue
            k = corner[i] + off
            wt = (fx[i] if dx else one - fx[i]) * (fy[i] if dy else one - fy[i])
            acc[k, 0] += rgb[0, i] * wt
            acc[k, 1] += rgb[1, i] * wt
            acc[k, 2] += rgb[2, i] * wt
            acc[k, 3] += disp[i] * wt
            acc[k, 4] += wt


@numba.njit(nogil=True, cache=True)
def _upsample_into(est, dst, y, x):  # pragma: no cover
    """``dst[:, y, x]`` = bilinear sample of ``est`` ``(3,h',w')`` at pixel ``(y, x)`` of ``dst``'s grid (half-pixel
    centres, as ``F.interpolate(mode="bilinear", align_corners=False)``)."""
    hi, wi = est.shape[1], est.shape[2]
    sy = max((y + 0.5) * (hi / dst.shape[1]) - 0.5, 0.0)
    sx = max((x + 0.5) * (wi / dst.shape[2]) - 0.5, 0.0)
    y0, x0 = int(sy), int(sx)
    y1, x1 = min(y0 + 1, hi - 1), min(x0 + 1, wi - 1)
    ly, lx = sy - y0, sx - x0
    for c in range(3):
        top = (1 - lx) * est[c, y0, x0] + lx * est[c, y0, x1]
        bottom = (1 - lx) * est[c, y1, x0] + lx * est[c, y1, x1]
        dst[c, y, x] = (1 - ly) * top + ly * bottom


@numba.njit(nogil=True, cache=True)
def _resolve(acc, h, w, pyramid, out):  # pragma: no cover
    """Normalise ``acc`` into colour and push-pull weight, then fill holes; writes ``out`` ``(3,H,W)``.

    ``pyramid``: scratch levels ``(4, ⌈H/2^l⌉, ⌈W/2^l⌉)`` of (colour·weight, weight), level 0 at full size.
    Same rules as ``corruptions3d.splatting.push_pull_fill`` on the reference's colour and weight.
    """
    wp = w + 2 * PAD
    base = pyramid[0]
    for y in range(h):
        for x in range(w):
            k = (y + PAD) * wp + x + PAD
            total = max(acc[k, 4], 1e-12)
            rel = max(acc[k, 3] / total, 1e-3)
            wt = 1 / (rel * rel) if acc[k, 4] > 1e-6 else 0.0
            for c in range(3):
                out[c, y, x] = acc[k, c] / total
                base[c, y, x] = out[c, y, x] * wt
            base[3, y, x] = wt
    for level in range(1, len(pyramid)):  # 2x2 sums, (a + b) + (c + d) as the reference; odd edges add zeros
        src, dst = pyramid[level - 1], pyramid[level]
        sh, sw = src.shape[1], src.shape[2]
        zero = src[0, 0, 0] * 0
        for c in range(4):
            for y in range(dst.shape[1]):
                ya, yb = 2 * y, min(2 * y + 1, sh - 1)
                keep_b = yb > ya
                for x in range(dst.shape[2]):
                    xa, xb = 2 * x, min(2 * x + 1, sw - 1)
                    left = src[c, ya, xa] + (src[c, yb, xa] if keep_b else zero)
                    right = (src[c, ya, xb] + (src[c, yb, xb] if keep_b else zero)) if xb > xa else zero
                    dst[c, y, x] = left + right
    top = pyramid[-1]
    est = np.empty((3, top.shape[1], top.shape[2]), out.dtype)
    for c in range(3):
        est[c] = top[c] / np.maximum(top[3], 1e-12)
    for level in range(len(pyramid) - 2, -1, -1):
        lv = pyramid[level]
        hl, wl = lv.shape[1], lv.shape[2]
        nxt = out if level == 0 else np.empty((3, hl, wl), out.dtype)
        for y in range(hl):
            for x in range(wl):
                if lv[3, y, x] <= 0:
                    _upsample_into(est, nxt, y, x)
                elif level > 0:
                    for c in range(3):
                        nxt[c, y, x] = lv[c, y, x] / max(lv[3, y, x], 1e-12)
        est = nxt


@numba.njit(nogil=True, cache=True)
def _render_pairs(pairs, fc, points, rgb, src_uv, flying, z_near, krt, consts, h, w, out):  # pragma: no cover
    """Render ``out[pair]`` ``(3,H,W)`` for the (image·Fc + frame) indices in ``pairs``."""
    n, dt = points.shape[2], points.dtype
    hw_pad = (h + 2 * PAD) * (w + 2 * PAD)
    acc, zbuf = np.empty((hw_pad, 5), dt), np.empty(hw_pad, dt)
    fx, fy, disp, corner = np.empty(n, dt), np.empty(n, dt), np.empty(n, dt), np.empty(n, np.int64)
    pyramid = [np.empty((4, h, w), dt)]
    hl, wl = h, w
    while min(hl, wl) > 1:
        hl, wl = (hl + 1) // 2, (wl + 1) // 2
        pyramid.append(np.empty((4, hl, wl), dt))
    for pair in pairs:
        b = pair // fc
        _splat(
            points[b],
            rgb[b],
            src_uv,
            flying[b],
            krt[b, pair % fc],
            z_near[b],
            consts,
            w,
            acc,
            zbuf,
            fx,
            fy,
            disp,
            corner,
        )
        _resolve(acc, h, w, pyramid, out[pair])


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
) -> torch.Tensor:
    """Compiled ``corruptions3d.splatting._splat_chunk``: ``(B,Fc,3,H,W)``, same arguments, CPU tensors."""
    b, fc = rotation.shape[:2]
    h, w = size
    n = points.shape[-1]
    dt = points.dtype
    fly = torch.zeros(b, n, dtype=torch.bool)
    fly[flying[0], flying[1]] = True
    out = torch.empty(b * fc, 3, h, w, dtype=dt)
    consts = torch.tensor([tolerance, 1e-6, 1.0, 0.5, -PAD, w, h, w + PAD - 1, h + PAD - 1], dtype=dt).numpy()
    args = (
        points.contiguous().numpy(),
        colors[:3].transpose(0, 1).contiguous().numpy(),
        src_uv[0].contiguous().numpy(),  # the same pixel grid for every image
        fly.numpy(),
        z_near.contiguous().numpy(),
        projection_matrices(rotation, translation, target_k).contiguous().numpy(),
        consts,
        h,
        w,
        out.numpy(),
    )
    threads = workers_for(b * fc)
    parallel_map(lambda t: _render_pairs(np.arange(t, b * fc, threads), fc, *args), range(threads))
    return out.view(b, fc, 3, h, w)
