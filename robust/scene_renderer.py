"""Re-render ``robust.synth`` views for the ``occlusion`` and ``scale`` corruptions.

:class:`SynthSceneRenderer` implements ``corruptions3d.functional.scene.SceneRenderer`` over a list of
(scene, camera) views; :meth:`SynthSceneRenderer.from_dataset` builds it from a dataset root
(``<root>/<building>/scene.json`` and ``point_info``) and the batch's view keys.

- ``scale``: the camera moves along its line of sight to ``distance_factor`` × its distance to the fixation
  point (rotation and field of view unchanged). The generator checked that this segment is free of geometry.
- ``occlusion``: :func:`place_occluder` inserts one box panel (a vertical board facing the camera, 10% of
  its distance as thickness) between the camera and the fixation point, at 35–60% of the way, with a random
  offset, aspect ratio and texture. Its size is refined by re-rendering at ``SEARCH_SIZE`` px until the
  fraction of pixels whose ``primitive_id`` is the box is within ``COVERAGE_TOLERANCE`` of the target
  (scene geometry in front of the box hides part of it, which the search compensates); after
  ``MAX_RENDERS`` renders the closest placement is kept and a warning is issued.

Each view is ray-cast separately (open3d, CPU): the per-view loop is the renderer's, not a per-pixel one.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from robust.io import POINT_INFO, ViewKey, domain_path, read_point_info
from robust.synth.camera import Camera
from robust.synth.render import render_view
from robust.synth.scene import CLASS_IDS, PATTERNS, SCENE_FILE, Primitive, Scene, Texture, load_scene

OCCLUDER_DEPTH = (0.35, 0.6)
"""Occluder centre along the camera-to-fixation segment (fraction of the distance)."""
OCCLUDER_OFFSET = 0.3
"""Largest offset of the occluder centre from the optical axis (fraction of the half view width there)."""
OCCLUDER_ASPECT = (0.6, 1.0 / 0.6)
"""Width / height range of the occluder (log-uniform)."""
COVERAGE_TOLERANCE = 0.02
"""Accepted absolute difference between the occluded fraction and its target (at ``SEARCH_SIZE``)."""
SEARCH_SIZE = 64
"""Side (px) of the renders used to size the occluder (the output size when smaller)."""
MAX_RENDERS = 8


def move_camera(camera: Camera, distance_factor: float) -> Camera:
    """``camera`` moved to ``distance_factor`` × its distance from its fixation point, same orientation."""
    loc, point = np.asarray(camera.location), np.asarray(camera.point)
    return replace(camera, location=tuple(float(x) for x in point + distance_factor * (loc - point)))


def occluded_fraction(scene: Scene, camera: Camera, size: int, occluders: Sequence[Primitive]) -> float:
    """Fraction of the ``size``² view in which one of ``occluders`` is the visible surface."""
    ids = render_view(scene, camera, size, occluders, minimal=True)["primitive_id"]
    return float((ids >= len(scene.primitives)).float().mean())


def place_occluder(scene: Scene, camera: Camera, coverage: float, seed: int, size: int) -> tuple[Primitive, float]:
    """A box occluding ``coverage`` of ``camera``'s view; returns it and the fraction achieved at ``size`` px.

    Deterministic in ``(seed, scene, camera, coverage, size)``.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) % 2**63, 0x0CC1]))
    loc, point = np.asarray(camera.location), np.asarray(camera.point)
    right, down, fwd = np.asarray(camera.rotation).T
    depth = rng.uniform(*OCCLUDER_DEPTH) * np.linalg.norm(point - loc)
    half_view = depth * math.tan(camera.fov / 2)
    du, dv = rng.uniform(-OCCLUDER_OFFSET, OCCLUDER_OFFSET, 2) * half_view
    centre = tuple(float(x) for x in loc + depth * fwd + du * right + dv * down)
    aspect = math.exp(rng.uniform(*np.log(OCCLUDER_ASPECT)))
    yaw = math.atan2(-fwd[0], fwd[1])  # local +y (thickness) along the horizontal viewing direction
    colors = rng.uniform(0.1, 0.9, (2, 3))
    texture = Texture(
        PATTERNS[int(rng.integers(len(PATTERNS)))],
        tuple(float(c) for c in colors[0]),
        tuple(float(c) for c in colors[1]),
        float(rng.uniform(0.05, 0.3)),
        int(rng.integers(2**31)),
    )
    object_id = 1 + max(p.object_id for p in scene.primitives)
    area = coverage * (2 * half_view) ** 2  # m² of a fronto-parallel face at the occluder's depth
    width, height = math.sqrt(area * aspect), math.sqrt(area / aspect)
    best: tuple[float, Primitive, float] | None = None
    for _ in range(MAX_RENDERS):
        box = Primitive("box", centre, (width, 0.1 * depth, height), yaw, CLASS_IDS["cabinet"], object_id, texture)
        got = occluded_fraction(scene, camera, size, [box])
        if best is None or abs(got - coverage) < best[0]:
            best = (abs(got - coverage), box, got)
        if abs(got - coverage) <= COVERAGE_TOLERANCE:
            break
        k = min(2.0, max(0.5, math.sqrt(coverage / max(got, 1.0 / size**2))))  # area ∝ (linear size)²
        width, height = width * k, height * k
    err, box, got = best
    if err > COVERAGE_TOLERANCE:
        warnings.warn(
            f"occlusion: view point {camera.point_id} view {camera.view_id}: best occluder covers {got:.3f} "
            f"of the image, target {coverage:.3f}",
            stacklevel=2,
        )
    return box, got


class SynthSceneRenderer:
    """``SceneRenderer`` for ``robust.synth`` views: ``views[i]`` = (scene, camera) of batch image ``i``."""

    def __init__(self, views: Sequence[tuple[Scene, Camera]]) -> None:
        self.views = list(views)

    @classmethod
    def from_dataset(cls, root: str | os.PathLike, keys: Sequence[ViewKey]) -> SynthSceneRenderer:
        """Views of ``keys`` under ``root``: the building's ``scene.json`` and each view's ``point_info``."""
        scenes = {b: load_scene(root, b) for b in dict.fromkeys(k.building for k in keys)}
        views = [
            (scenes[k.building], Camera.from_point_info(read_point_info(domain_path(root, k, POINT_INFO))))
            for k in keys
        ]
        return cls(views)

    @staticmethod
    def has_scenes(root: str | os.PathLike, buildings: Sequence[str]) -> bool:
        """Whether every building under ``root`` has a ``scene.json`` (i.e. is ``robust.synth`` data)."""
        return bool(buildings) and all(os.path.isfile(os.path.join(root, b, SCENE_FILE)) for b in buildings)

    def __len__(self) -> int:
        return len(self.views)

    def subset(self, indices: Sequence[int]) -> SynthSceneRenderer:
        """The renderer of a sub-batch (views ``indices``, in that order)."""
        return SynthSceneRenderer([self.views[i] for i in indices])

    def render(
        self, size: int, *, distance_factor: torch.Tensor, coverage: torch.Tensor, seeds: torch.Tensor
    ) -> torch.Tensor:
        """rgb ``(B,3,size,size)`` of every view, moved by ``distance_factor`` ``(B,)`` and occluded by
        ``coverage`` ``(B,)`` (0: no occluder), occluders placed from ``seeds`` ``(B,)`` int64."""
        out = []
        for (scene, camera), f, c, s in zip(self.views, distance_factor.tolist(), coverage.tolist(), seeds.tolist()):
            camera = move_camera(camera, f)
            extra = [place_occluder(scene, camera, c, s, min(size, SEARCH_SIZE))[0]] if c > 0 else []
            out.append(render_view(scene, camera, size, extra, minimal=True)["rgb"])
        return torch.stack(out)
