"""Image-space mid-level domains computed from rendered buffers: texture and occlusion edges, principal
curvature and corner (keypoint) responses. All take and return one view's float32 numpy arrays ``(C,H,W)``;
filters run in OpenCV, the geometric per-pixel passes are compiled (numba); borders are replicated.

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

The Sobel kernel is [[-1,0,1],[-2,0,2],[-1,0,1]]/8 (a derivative per pixel).
"""

from __future__ import annotations

import math

import cv2
import numba
import numpy as np

EDGE_TEXTURE_GAIN = 0.1
OCCLUSION_RATIO = (2.0, 6.0)
CURVATURE_SCALE_M = 0.25
KEYPOINT_GAIN = {"2d": 0.08, "3d": 0.3}
LUMA = (0.299, 0.587, 0.114)
"""Rec. 601 luma weights of rgb."""


def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    """σ px Gaussian blur of each ``(H,W)`` plane of ``(C,H,W)`` float32, radius ``int(4σ + 0.5)`` (scipy's
    rule, as :func:`corruptions3d.filters.gaussian_blur`), replicated borders (OpenCV)."""
    k, out = 2 * int(4 * sigma + 0.5) + 1, np.empty_like(x)
    for p, o in zip(x, out):
        cv2.GaussianBlur(p, (k, k), sigma, dst=o, borderType=cv2.BORDER_REPLICATE)
    return out


def _sobel(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel derivatives ``(d/dx, d/dy)`` of an ``(H,W)`` float32 plane (OpenCV, replicated borders)."""
    return tuple(
        cv2.Sobel(plane, cv2.CV_32F, dx, 1 - dx, ksize=3, scale=1 / 8, borderType=cv2.BORDER_REPLICATE) for dx in (1, 0)
    )


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luma ``(1,H,W)`` of rgb ``(3,H,W)``."""
    return (LUMA[0] * rgb[0] + LUMA[1] * rgb[1] + LUMA[2] * rgb[2]).astype(np.float32)[None]


def edge_texture(rgb: np.ndarray) -> np.ndarray:
    """``(1,H,W)`` in [0,1] from rgb ``(3,H,W)``."""
    gx, gy = _sobel(_gaussian(luminance(rgb), 1.0)[0])
    return np.minimum(np.sqrt(gx * gx + gy * gy) / np.float32(EDGE_TEXTURE_GAIN), 1)[None]


@numba.njit(nogil=True, cache=True)
def _edge_occlusion(points, normals, valid, focal, lo, width, out):  # pragma: no cover
    h, w = valid.shape
    for y in range(h):
        for i in range(w):
            if not valid[y, i]:
                out[0, y, i] = 0
                continue
            gap = 0.0
            for qy, qi in ((y, max(i - 1, 0)), (y, min(i + 1, w - 1)), (max(y - 1, 0), i), (min(y + 1, h - 1), i)):
                if not valid[qy, qi]:
                    gap = np.inf
                    break
                d = 0.0
                for c in range(3):
                    d += (points[c, qy, qi] - points[c, y, i]) * normals[c, y, i]
                gap = max(gap, abs(d))
            footprint = max(abs(points[2, y, i]), 1e-6) / focal
            out[0, y, i] = min(max((gap / footprint - lo) / width, 0.0), 1.0)


def edge_occlusion(points: np.ndarray, normals: np.ndarray, valid: np.ndarray, focal: float) -> np.ndarray:
    """``(1,H,W)`` in [0,1] from camera-frame points ``(3,H,W)`` m, unit face normals ``(3,H,W)`` (same frame),
    ``valid`` ``(H,W)`` bool and the focal length in pixels. Pixels next to invalid ones are edges."""
    out = np.empty((1, *valid.shape), np.float32)
    _edge_occlusion(points, normals, valid, float(focal), *OCCLUSION_RATIO, out)
    return out


@numba.njit(nogil=True, cache=True)
def _principal_curvature(p, n, primitive, valid, out):  # pragma: no cover
    """Raw (k1, k2) 1/m into ``out`` (2,H,W); central differences are left unhalved and the forms rescaled."""
    h, w = valid.shape
    for y in range(h):
        yu, yd = max(y - 1, 0), min(y + 1, h - 1)
        for i in range(w):
            il, ir, s = max(i - 1, 0), min(i + 1, w - 1), primitive[y, i]
            out[0, y, i] = out[1, y, i] = 0
            if not (valid[y, i] and valid[y, il] and valid[y, ir] and valid[yu, i] and valid[yd, i]):
                continue
            if not (
                primitive[y, il] == s and primitive[y, ir] == s and primitive[yu, i] == s and primitive[yd, i] == s
            ):
                continue
            xu0, xu1, xu2 = p[0, y, ir] - p[0, y, il], p[1, y, ir] - p[1, y, il], p[2, y, ir] - p[2, y, il]
            xv0, xv1, xv2 = p[0, yd, i] - p[0, yu, i], p[1, yd, i] - p[1, yu, i], p[2, yd, i] - p[2, yu, i]
            nu0, nu1, nu2 = n[0, y, ir] - n[0, y, il], n[1, y, ir] - n[1, y, il], n[2, y, ir] - n[2, y, il]
            nv0, nv1, nv2 = n[0, yd, i] - n[0, yu, i], n[1, yd, i] - n[1, yu, i], n[2, yd, i] - n[2, yu, i]
            # First (e, f, g) and second (ll, mm, nn) fundamental forms. With normals facing the camera, a surface
            # bulging towards it has n_u parallel to x_u (sphere: n_u = x_u/r): positive for convex shapes.
            e, f, g = (
                (xu0 * xu0 + xu1 * xu1 + xu2 * xu2) / 4,
                (xu0 * xv0 + xu1 * xv1 + xu2 * xv2) / 4,
                (xv0 * xv0 + xv1 * xv1 + xv2 * xv2) / 4,
            )
            ll, nn = (nu0 * xu0 + nu1 * xu1 + nu2 * xu2) / 4, (nv0 * xv0 + nv1 * xv1 + nv2 * xv2) / 4
            mm = (nu0 * xv0 + nu1 * xv1 + nu2 * xv2 + nv0 * xu0 + nv1 * xu1 + nv2 * xu2) / 8
            det = e * g - f * f
            if det > 1e-12:
                mean = (e * nn - 2 * f * mm + g * ll) / (2 * det)
                root = math.sqrt(max(mean * mean - (ll * nn - mm * mm) / det, 0.0))
                out[0, y, i], out[1, y, i] = mean + root, mean - root


def principal_curvature(
    points: np.ndarray, normals: np.ndarray, primitive: np.ndarray, valid: np.ndarray
) -> np.ndarray:
    """``(2,H,W)`` encoded (k1, k2) from camera-frame points and smooth unit normals ``(3,H,W)`` facing the
    camera, ``primitive`` ids ``(H,W)`` and ``valid`` ``(H,W)`` bool."""
    k = np.empty((2, *valid.shape), np.float32)
    _principal_curvature(points, normals, primitive, valid, k)
    return 0.5 + 0.5 * np.tanh(k * np.float32(CURVATURE_SCALE_M))


def corner_response(x: np.ndarray, gain: float) -> np.ndarray:
    """Shi–Tomasi corner strength ``(1,H,W)`` in [0,1] of ``(C,H,W)`` float32 (channels summed)."""
    j = np.zeros((3, *x.shape[1:]), np.float32)  # (jxx, jyy, jxy)
    for plane in x:
        gx, gy = _sobel(plane)
        j[0] += gx * gx
        j[1] += gy * gy
        j[2] += gx * gy
    jxx, jyy, jxy = _gaussian(j, 1.5)
    lam = (jxx + jyy) / 2 - np.sqrt(((jxx - jyy) / 2) ** 2 + jxy**2)
    return np.minimum(np.sqrt(np.maximum(lam, 0)) / np.float32(gain), 1)[None]
