"""Compiled per-pixel shading of the primary hits (numba): the hit frames; the shading-free per-pixel domains,
albedo and unshadowed lamp terms in one call; then the shadowed composition of rgb and relighting.

Pixels are flattened ``(N,) = (H·W,)``; ``pixels[i]`` is pixel ``i``'s hit index ``m`` (-1: the ray missed).
Per-hit arrays have ``M`` rows.
"""

from __future__ import annotations

import numba
import numpy as np

from robust.synth.textures import mix_weight

GEOMETRY_CHANNELS = {"depth_zbuffer": 0, "normal_cam": 1, "reshading": 4, "points": 5, "smooth": 8}
"""Channel offsets in the ``(11,N)`` geometry buffer: planar depth (m), camera-frame face normal (3, OpenCV axes),
reshading, camera-frame points (3, m), camera-frame interpolated (smooth) normal (3)."""
GEOMETRY_SIZE = 11


@numba.njit(nogil=True, cache=True)
def hit_frames(t, tri, dirs, origin, tri_normal, tri_primitive):  # pragma: no cover
    """From the primary cast (``t`` (N,) m, inf on a miss; triangle ids ``tri`` (N,)) of unit world rays
    ``dirs`` (N,3) from ``origin`` (3,): ``pixels`` (N,) hit index or -1, hit points ``p_w`` (M,3) m, face
    normals ``n_w`` (M,3) turned towards the camera, ``back`` (M,) whether they were turned, primitive (M,)."""
    n = t.shape[0]
    pixels = np.full(n, -1, np.int64)
    m = 0
    for i in range(n):
        if np.isfinite(t[i]):
            pixels[i] = m
            m += 1
    p_w = np.empty((m, 3), np.float32)
    n_w = np.empty((m, 3), np.float32)
    back = np.empty(m, np.bool_)
    prim = np.empty(m, np.int64)
    for i in range(n):
        j = pixels[i]
        if j < 0:
            continue
        f = tri[i]
        dot = tri_normal[f, 0] * dirs[i, 0] + tri_normal[f, 1] * dirs[i, 1] + tri_normal[f, 2] * dirs[i, 2]
        back[j] = dot > 0
        for c in range(3):
            n_w[j, c] = -tri_normal[f, c] if back[j] else tri_normal[f, c]
            p_w[j, c] = origin[c] + t[i] * dirs[i, c]
        prim[j] = tri_primitive[f]
    return pixels, p_w, n_w, back, prim


@numba.njit(nogil=True, cache=True)
def lamp_term(lx, ly, lz, px, py, pz, nx, ny, nz, d2):  # pragma: no cover
    """Unshadowed ``max(0, n·l̂) · D²/(D² + r²)`` of a point lamp at ``(lx,ly,lz)`` for hit point ``(px,py,pz)``
    m with unit normal ``(nx,ny,nz)``; ``d2 = D²`` m²."""
    dx, dy, dz = lx - px, ly - py, lz - pz
    dist2 = dx * dx + dy * dy + dz * dz
    n_dot_l = max(dx * nx + dy * ny + dz * nz, np.float32(0))
    return n_dot_l / max(np.sqrt(dist2), np.float32(1e-9)) * (d2 / (dist2 + d2))


@numba.njit(nogil=True, cache=True)
def shade_pixels(
    pixels,
    t,
    tri,
    uv,
    ray_cam,
    rot,
    p_w,
    n_w,
    back,
    prim,
    tri_vertex_normals,
    tex,
    lights,
    d2,
    geometry,
    albedo,
    unshadowed,
):  # pragma: no cover
    """Per-hit ``albedo`` (M,3) and ``unshadowed`` lamp terms (L,M) (:func:`lamp_term`), and, when ``geometry``
    has rows, its ``(11,N)`` channels (:data:`GEOMETRY_CHANNELS`; 0 on misses, whose depth the caller fills).
    ``ray_cam`` (N,3) are the unit rays in the camera frame, ``rot`` (3,3) camera-to-world, ``uv`` (N,2)
    barycentrics, ``tri_vertex_normals`` (T,3,3) smooth corner normals (world), ``tex`` the texture table of
    :func:`robust.synth.textures.texture_table`, lamps ``lights`` (L,3) with ``d2 = D²`` m²."""
    pattern, scale, seeds, direction, color_a, color_b = tex
    for m in range(p_w.shape[0]):
        s = prim[m]
        x, y, z = np.float64(p_w[m, 0]), np.float64(p_w[m, 1]), np.float64(p_w[m, 2])
        w = mix_weight(x, y, z, pattern[s], scale[s], seeds[s], direction[s])
        for c in range(3):
            albedo[m, c] = color_a[s, c] * (1 - w) + color_b[s, c] * w
    d2 = np.float32(d2)
    for k in range(lights.shape[0]):  # one lamp at a time: contiguous rows
        lx, ly, lz = lights[k, 0], lights[k, 1], lights[k, 2]
        for m in range(p_w.shape[0]):
            unshadowed[k, m] = lamp_term(
                lx, ly, lz, p_w[m, 0], p_w[m, 1], p_w[m, 2], n_w[m, 0], n_w[m, 1], n_w[m, 2], d2
            )
    if geometry.shape[0] == 0:
        return
    corner = tri_vertex_normals
    for i in range(pixels.shape[0]):
        m = pixels[i]
        if m < 0:
            geometry[:, i] = 0
            continue
        ti = t[i]
        geometry[0, i] = ti * ray_cam[i, 2]
        u, v, f = uv[i, 0], uv[i, 1], tri[i]
        s0 = corner[f, 0, 0] * (1 - u - v) + corner[f, 1, 0] * u + corner[f, 2, 0] * v
        s1 = corner[f, 0, 1] * (1 - u - v) + corner[f, 1, 1] * u + corner[f, 2, 1] * v
        s2 = corner[f, 0, 2] * (1 - u - v) + corner[f, 1, 2] * u + corner[f, 2, 2] * v
        inv = (np.float32(-1) if back[m] else np.float32(1)) / max(np.sqrt(s0 * s0 + s1 * s1 + s2 * s2), 1e-12)
        shading = np.float32(0)
        for c in range(3):  # camera frame = rot.T @ world
            nc = rot[0, c] * n_w[m, 0] + rot[1, c] * n_w[m, 1] + rot[2, c] * n_w[m, 2]
            geometry[1 + c, i] = nc
            geometry[5 + c, i] = ray_cam[i, c] * ti
            geometry[8 + c, i] = (rot[0, c] * s0 + rot[1, c] * s1 + rot[2, c] * s2) * inv
            shading -= nc * ray_cam[i, c]
        geometry[4, i] = max(shading, np.float32(0))


@numba.njit(nogil=True, cache=True)
def compose(pixels, albedo, unshadowed, blocked, ambient, key_gain, relight_gain, rgb, relighting):  # pragma: no cover
    """``rgb`` (3,N) = albedo · (ambient + (1 - ambient) · min(1, key_gain · lamp 0)) and, when it has rows,
    ``relighting`` (L-1,N) = min(1, relight_gain · lamp k); lamps blocked per ``blocked`` (L,M) contribute 0,
    misses are 0."""
    ambient, key_gain, relight_gain = np.float32(ambient), np.float32(key_gain), np.float32(relight_gain)
    zero, one = np.float32(0), np.float32(1)
    for i in range(pixels.shape[0]):
        m = pixels[i]
        key = zero if m < 0 or blocked[0, m] else min(max(key_gain * unshadowed[0, m], zero), one)
        for c in range(3):
            rgb[c, i] = zero if m < 0 else albedo[m, c] * (ambient + (one - ambient) * key)
    for k in range(relighting.shape[0]):  # one lamp at a time: contiguous rows
        for i in range(pixels.shape[0]):
            m = pixels[i]
            lit = zero if m < 0 or blocked[k + 1, m] else relight_gain * unshadowed[k + 1, m]
            relighting[k, i] = min(max(lit, zero), one)
