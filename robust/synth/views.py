"""Taskonomy-style view sampling: a fixation point on a visible surface, then cameras that all see it."""

from __future__ import annotations

import math

import numpy as np
import open3d as o3d

from robust.synth.camera import FOV_RANGE_DEG, Camera
from robust.synth.mesh import compile_scene
from robust.synth.scene import Scene

CAMERA_CLEARANCE_M = 0.3
"""Cameras stay at least this far from every solid and wall."""
CAMERA_HEIGHT_M = (0.8, 2.2)
VIEW_DISTANCE_M = (1.0, 5.0)
"""Camera-to-fixation distance range."""


def _free_positions(scene: Scene, rng: np.random.Generator, n: int) -> np.ndarray:
    lx, ly, lz = scene.room
    top = min(CAMERA_HEIGHT_M[1], lz - CAMERA_CLEARANCE_M)
    pos = rng.uniform([0, 0, CAMERA_HEIGHT_M[0]], [lx, ly, top], (n, 3))
    return pos[scene.free(pos, CAMERA_CLEARANCE_M)]


def sample_point_views(scene: Scene, point_id: int, views: int, attempts: int = 50) -> list[Camera]:
    """``views`` cameras fixated on one point of ``scene``; deterministic per ``(scene.seed, point_id)``.

    The point is where a ray from a random free position (elevation -50°..10°) hits a surface. Each camera
    is a free position 1–5 m from the point, on the side its surface faces (cosine > 0.25), with a clear
    line of sight, not looking steeper than ~64° up or down; FoV ~ U(45°, 90°).
    """
    rs = compile_scene(scene)
    rng = np.random.default_rng(np.random.SeedSequence([scene.seed, point_id, 0xF1C5]))
    for _ in range(attempts):
        origin = _free_positions(scene, rng, 16)
        if not len(origin):
            continue
        az, el = rng.uniform(0, 2 * math.pi), math.radians(rng.uniform(-50, 10))
        d = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        ray = np.concatenate([origin[0], d])[None].astype(np.float32)
        hit = rs.raycaster.cast_rays(o3d.core.Tensor(ray))
        t = float(hit["t_hit"].numpy()[0])
        if not np.isfinite(t):
            continue
        point = origin[0] + t * d
        normal = rs.tri_normal[int(hit["primitive_ids"].numpy()[0])].astype(np.float64)
        normal = -normal if normal @ d > 0 else normal
        cand = _free_positions(scene, rng, 512)
        off = point - cand
        dist = np.linalg.norm(off, axis=1)
        fwd = off / dist[:, None]
        ok = (dist > VIEW_DISTANCE_M[0]) & (dist < VIEW_DISTANCE_M[1])
        ok &= (-fwd @ normal > 0.25) & (np.abs(fwd[:, 2]) < 0.9)
        cand, off = cand[ok], off[ok]
        if len(cand) < views:
            continue
        shadow = np.concatenate([cand, off], axis=1).astype(np.float32)
        blocked = rs.raycaster.test_occlusions(o3d.core.Tensor(shadow), tfar=0.99).numpy()
        cand = cand[~blocked]
        if len(cand) < views:
            continue
        fovs = np.radians(rng.uniform(*FOV_RANGE_DEG, views))
        return [Camera.look_at(cand[v], point, float(fovs[v]), point_id, v) for v in range(views)]
    raise RuntimeError(f"could not place {views} views for point {point_id} of scene seed {scene.seed}")
