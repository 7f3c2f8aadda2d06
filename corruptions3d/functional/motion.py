"""Camera-motion corruptions rendered by forward splatting: XY/Z motion blur (3DCC) and view jitter.

Reference protocol (3DCC ``create_motion.py``, 3D Ken Burns path), re-implemented on
:mod:`corruptions3d.splatting`:

- a 60-frame camera path at steps ``linspace(0, 1, 60)``; severity = the number of leading frames averaged
  (xy: 20/30/40/50/60, z: 20/25/30/35/38). ``frames`` may be fractional (the last frame gets the fraction).
- the path is anchored on the nearest point (minimum depth inside the central half of the image):
  xy moves it by ``(u, v)`` px with ``u ~ U{50..74}`` or ``U{-75..-51}`` (coin flip), ``v ~ U{-75..74}``;
  z moves the camera forward so the nearest depth shrinks by the crop factor ``a ~ U[0.5, 0.6)`` and shifts
  the view centre by ``U{-30..29}`` px in x and y.
- pixel shifts are defined at 512 px and scaled by ``W/512`` (same relative motion at any resolution).
- camera: the reference hard-codes a 512 px focal length at 512 px (53° FoV), i.e. ``f = W``; pass
  ``intrinsics`` to use the real camera. Depth is Euclidean (back-projected along the rays).
- ``motion`` scales the whole path (1 = reference, 0 = a static camera, which returns the input exactly).
- all severities share one path per seed: :func:`xy_motion_blur_severities` / :func:`z_motion_blur_severities`
  (registered as ``Corruption.all_severities``) render it once and return every severity, each bit-identical to
  the single-severity call with the same seed.

Deviations: no inpainting CNN (background-biased push-pull fill), float averaging without uint8 truncation,
the unused crop-height draw of the reference is not made.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from corruptions3d import random as crandom
from corruptions3d.core import check_geometry, check_rgb, register_corruption, resolve_params, seeds_for
from corruptions3d.geometry import backproject, default_intrinsics, fill_invalid_depth
from corruptions3d.random import Seeds
from corruptions3d.splatting import render_prefix_means, render_views

PATH_STEPS = 60
REFERENCE_WIDTH = 512.0
XY_SEVERITIES = {"frames": (20, 30, 40, 50, 60), "motion": (1.0,) * 5}
Z_SEVERITIES = {"frames": (20, 25, 30, 35, 38), "motion": (1.0,) * 5}
JITTER_SEVERITIES = {"rotation_deg": (0.5, 1.0, 1.5, 2.0, 2.5), "translation": (0.01, 0.02, 0.03, 0.04, 0.05)}
"""View jitter: rotation by ``rotation_deg`` about a random axis and translation by ``translation`` × the
image's median depth in a random direction (one static re-rendered view, no blur)."""


def reference_intrinsics(rgb: torch.Tensor) -> torch.Tensor:
    """``(B,3,3)`` with the reference's focal length ``W`` px (512 px at 512²), principal point at the centre."""
    b, _, h, w = rgb.shape
    k = torch.tensor([[w, 0, w / 2], [0, w, h / 2], [0, 0, 1]], device=rgb.device, dtype=rgb.dtype)
    return k.expand(b, 3, 3).clone()


def motion_camera(rgb: torch.Tensor, intrinsics: torch.Tensor | None, default: str = "reference") -> torch.Tensor:
    """Validated ``(B,3,H,W)`` intrinsics, or the ``reference`` (``f = W``) / ``default`` (90°) camera."""
    if intrinsics is None:
        b, _, h, w = rgb.shape
        return reference_intrinsics(rgb) if default == "reference" else default_intrinsics(b, h, w, device=rgb.device)
    if intrinsics.shape != (rgb.shape[0], 3, 3):
        raise ValueError(f"intrinsics must be (B,3,3) with B={rgb.shape[0]}, got {tuple(intrinsics.shape)}")
    return intrinsics.to(rgb.device, rgb.dtype)


def _nearest_point(depth: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel centre ``(B,2)`` and planar depth ``(B,)`` of the nearest point inside the central half."""
    h, w = depth.shape[-2:]
    z = backproject(depth, k)[:, 2, h // 4 : h - h // 4, w // 4 : w - w // 4]
    idx = z.flatten(1).argmin(1)
    cw = z.shape[-1]
    uv = torch.stack([idx % cw + w // 4, idx // cw + h // 4], 1).to(depth.dtype) + 0.5
    return uv, z.flatten(1).gather(1, idx[:, None])[:, 0]


def _randint(u: torch.Tensor, low: int, high: int) -> torch.Tensor:
    """Map uniforms in [0,1) to integers in ``[low, high)`` (numpy ``randint`` semantics)."""
    return (low + (u * (high - low)).floor()).clamp(max=high - 1)


def motion_path(
    kind: str,
    rgb: torch.Tensor,
    depth: torch.Tensor,
    k: torch.Tensor,
    seeds: torch.Tensor,
    motion: torch.Tensor,
    steps: int = PATH_STEPS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference camera path ``kind`` (``xy``/``z``): rotations ``(B,F,3,3)`` (identity), translations ``(B,F,3)``.

    ``P_frame = P + t`` moves the nearest point (pixel ``c``, depth ``z0``) as described in the module docstring.
    """
    b = rgb.shape[0]
    scale = rgb.shape[-1] / REFERENCE_WIDTH
    r = crandom.rand(seeds, (4,), rgb.device, rgb.dtype, stream=1 if kind == "xy" else 2)
    _, z0 = _nearest_point(depth, k)
    f = k[:, 0, 0]
    s = torch.linspace(0, 1, steps, device=rgb.device, dtype=rgb.dtype).view(1, -1)
    m = motion.view(-1, 1)
    if kind == "xy":
        du = torch.where(r[:, 0] < 0.5, _randint(r[:, 1], 50, 75), _randint(r[:, 1], -75, -50))
        dv = _randint(r[:, 2], -75, 75)
        zc = z0.view(-1, 1).expand(b, steps)
    elif kind == "z":
        crop = 0.5 + 0.1 * r[:, 0]
        du, dv = _randint(r[:, 1], -30, 30), _randint(r[:, 2], -30, 30)
        zc = z0.view(-1, 1) * (1 - s * m * (1 - crop.view(-1, 1)))
    else:
        raise ValueError(f"motion path kind must be 'xy' or 'z', got {kind!r}")
    tx = s * m * (du * scale).view(-1, 1) * zc / f.view(-1, 1)
    ty = s * m * (dv * scale).view(-1, 1) * zc / f.view(-1, 1)
    t = torch.stack([tx, ty, zc - z0.view(-1, 1)], -1)
    rot = torch.eye(3, device=rgb.device, dtype=rgb.dtype).expand(b, steps, 3, 3)
    return rot, t


def _motion_blur(
    kind: str,
    rgb: torch.Tensor,
    depth_euclidean: torch.Tensor,
    frames: torch.Tensor,
    motion: torch.Tensor,
    generator: Seeds,
    intrinsics: torch.Tensor | None,
) -> torch.Tensor:
    """Means ``(B,S,3,H,W)`` of the leading ``frames`` ``(B,S)`` of one ``kind`` path per image, ``motion`` ``(B,)``."""
    depth = fill_invalid_depth(check_geometry(rgb, depth_euclidean, "depth_euclidean"))
    k = motion_camera(rgb, intrinsics)
    rot, t = motion_path(kind, rgb, depth, k, seeds_for(rgb, generator), motion)
    return render_prefix_means(rgb, depth, k, rot, t, frames)


def _motion_blur_severities(kind, table, rgb, depth_euclidean, severities, generator, intrinsics) -> torch.Tensor:
    check_rgb(rgb)
    rows = [resolve_params(table, s, None, rgb) for s in severities]
    motions = {float(r["motion"][0]) for r in rows}
    if len(motions) > 1:
        raise ValueError(f"severities {tuple(severities)} use different motion scales {sorted(motions)}")
    frames = torch.stack([r["frames"] for r in rows], 1)
    return _motion_blur(kind, rgb, depth_euclidean, frames, rows[0]["motion"], generator, intrinsics)


def xy_motion_blur_severities(
    rgb: torch.Tensor,
    depth_euclidean: torch.Tensor,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    generator: Seeds = None,
    intrinsics: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(B,S,3,H,W)``: :func:`xy_motion_blur` at every one of ``severities`` from one render of the 60-frame path.

    Column ``j`` is bit-identical to ``xy_motion_blur(rgb, depth_euclidean, severities[j], generator=generator)``.
    """
    return _motion_blur_severities("xy", XY_SEVERITIES, rgb, depth_euclidean, severities, generator, intrinsics)


def z_motion_blur_severities(
    rgb: torch.Tensor,
    depth_euclidean: torch.Tensor,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    generator: Seeds = None,
    intrinsics: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(B,S,3,H,W)``: :func:`z_motion_blur` at every one of ``severities`` from one render of the dolly path.

    Column ``j`` is bit-identical to ``z_motion_blur(rgb, depth_euclidean, severities[j], generator=generator)``.
    """
    return _motion_blur_severities("z", Z_SEVERITIES, rgb, depth_euclidean, severities, generator, intrinsics)


@register_corruption(
    "xy_motion_blur",
    family="3dcc",
    requires=("depth_euclidean",),
    optional=("intrinsics",),
    severities=XY_SEVERITIES,
    ranges={"frames": (1.0, 60.0), "motion": (0.0, 1.0)},
    stochastic=True,
    all_severities=xy_motion_blur_severities,
)
def xy_motion_blur(
    rgb: torch.Tensor,
    depth_euclidean: torch.Tensor,
    severity: int | None = None,
    params: Mapping[str, Any] | None = None,
    generator: Seeds = None,
    intrinsics: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sideways camera motion blur ``(B,3,H,W)``: mean of the first ``frames`` of a 60-frame parallax path.

    ``depth_euclidean`` ``(B,1,H,W)`` metres; ``intrinsics`` ``(B,3,3)`` (default: the reference's ``f = W``).
    """
    p = resolve_params(XY_SEVERITIES, severity, params, check_rgb(rgb))
    return _motion_blur("xy", rgb, depth_euclidean, p["frames"][:, None], p["motion"], generator, intrinsics)[:, 0]


@register_corruption(
    "z_motion_blur",
    family="3dcc",
    requires=("depth_euclidean",),
    optional=("intrinsics",),
    severities=Z_SEVERITIES,
    ranges={"frames": (1.0, 38.0), "motion": (0.0, 1.0)},
    stochastic=True,
    all_severities=z_motion_blur_severities,
)
def z_motion_blur(
    rgb: torch.Tensor,
    depth_euclidean: torch.Tensor,
    severity: int | None = None,
    params: Mapping[str, Any] | None = None,
    generator: Seeds = None,
    intrinsics: torch.Tensor | None = None,
) -> torch.Tensor:
    """Forward (zoom) camera motion blur ``(B,3,H,W)``: mean of the first ``frames`` of a 60-frame dolly path.

    ``depth_euclidean`` ``(B,1,H,W)`` metres; ``intrinsics`` ``(B,3,3)`` (default: the reference's ``f = W``).
    """
    p = resolve_params(Z_SEVERITIES, severity, params, check_rgb(rgb))
    return _motion_blur("z", rgb, depth_euclidean, p["frames"][:, None], p["motion"], generator, intrinsics)[:, 0]


def _axis_angle(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``(B,3,3)`` from unit axes ``(B,3)`` and angles ``(B,)`` radians (Rodrigues)."""
    x, y, z = axis.unbind(1)
    o = torch.zeros_like(x)
    cross = torch.stack([o, -z, y, z, o, -x, -y, x, o], 1).view(-1, 3, 3)
    s, c = angle.sin().view(-1, 1, 1), angle.cos().view(-1, 1, 1)
    eye = torch.eye(3, device=axis.device, dtype=axis.dtype)
    return eye + s * cross + (1 - c) * (cross @ cross)


@register_corruption(
    "view_jitter",
    family="3dcc",
    requires=("depth_euclidean",),
    optional=("intrinsics",),
    severities=JITTER_SEVERITIES,
    ranges={"rotation_deg": (0.0, 2.5), "translation": (0.0, 0.05)},
    stochastic=True,
)
def view_jitter(
    rgb: torch.Tensor,
    depth_euclidean: torch.Tensor,
    severity: int | None = None,
    params: Mapping[str, Any] | None = None,
    generator: Seeds = None,
    intrinsics: torch.Tensor | None = None,
) -> torch.Tensor:
    """The view from a slightly perturbed camera ``(B,3,H,W)``, re-rendered by forward splatting.

    Rotation by ``rotation_deg`` about a uniformly random axis; translation by ``translation`` × the image's
    median depth in a uniformly random direction. Disoccluded borders are filled (push-pull, background
    biased). ``intrinsics`` ``(B,3,3)`` default to :func:`corruptions3d.geometry.default_intrinsics` (90°).
    """
    check_rgb(rgb)
    depth = fill_invalid_depth(check_geometry(rgb, depth_euclidean, "depth_euclidean"))
    p = resolve_params(JITTER_SEVERITIES, severity, params, rgb)
    k = motion_camera(rgb, intrinsics, "default")
    seeds = seeds_for(rgb, generator)
    dirs = torch.nn.functional.normalize(crandom.randn(seeds, (2, 3), rgb.device, rgb.dtype, stream=3), dim=-1)
    rot = _axis_angle(dirs[:, 0], torch.deg2rad(p["rotation_deg"]))
    t = dirs[:, 1] * (p["translation"] * depth.flatten(1).median(1).values).view(-1, 1)
    return render_views(rgb, depth, k, rot[:, None], t[:, None])[:, 0]


__all__ = [
    "motion_camera",
    "motion_path",
    "reference_intrinsics",
    "view_jitter",
    "xy_motion_blur",
    "xy_motion_blur_severities",
    "z_motion_blur",
    "z_motion_blur_severities",
]
