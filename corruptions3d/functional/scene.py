"""Semantic 3D Common Corruptions that re-render the scene: ``occlusion`` and ``scale``.

The 3DCC reference chooses new viewpoints of a Replica mesh where a target object is occluded or seen at
another scale (``create_3dcc/semantics/``); its severity bins are not published. Here the batch carries a
:class:`SceneRenderer` as ``batch["scene"]`` (a Python object, not a tensor) that re-renders each image's
view with occluders inserted or with the camera moved towards its fixation point. corruptions3d does not
depend on any renderer: ``robust.scene_renderer.SynthSceneRenderer`` implements the protocol for
``robust.synth`` data.

Severity tables (chosen here, monotone in effect):

- ``occlusion``: fraction of the image covered by inserted occluders, 0.1 .. 0.5.
- ``scale``: new camera-to-fixation distance as a fraction of the original, 0.85 .. 0.25, so objects at the
  fixation point appear 1.18×, 1.43×, 1.82×, 2.5× and 4× larger (linear size ∝ 1 / distance).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch

from corruptions3d.core import check_rgb, register_corruption, resolve_params, seeds_for
from corruptions3d.random import Seeds

__all__ = ["SceneRenderer", "occlusion", "scale"]

OCCLUSION = {"coverage": (0.1, 0.2, 0.3, 0.4, 0.5)}
SCALE = {"distance_factor": (0.85, 0.7, 0.55, 0.4, 0.25)}
MAX_COVERAGE = 0.9
"""Largest occluded fraction a caller may ask for (the renderer needs some of the view to stay visible)."""


@runtime_checkable
class SceneRenderer(Protocol):
    """Re-renders the views of one batch (image ``i`` of the batch is view ``i`` of the renderer)."""

    def __len__(self) -> int:
        """Number of views (the batch size)."""
        ...

    def subset(self, indices: Sequence[int]) -> SceneRenderer:
        """The renderer of a sub-batch (views ``indices``, in that order)."""
        ...

    def render(
        self, size: int, *, distance_factor: torch.Tensor, coverage: torch.Tensor, seeds: torch.Tensor
    ) -> torch.Tensor:
        """Render every view at ``size``² with the camera moved to ``distance_factor`` ``(B,)`` of its distance
        to the fixation point and occluders covering ``coverage`` ``(B,)`` of the image (0: none), placed
        from the int64 ``seeds`` ``(B,)``. Returns rgb ``(B,3,size,size)`` in [0,1]."""
        ...


def _rerender(
    rgb: torch.Tensor, scene: object, name: str, distance_factor: torch.Tensor, coverage: torch.Tensor, seeds
) -> torch.Tensor:
    if scene is None:
        raise ValueError(
            f"{name} needs a scene mesh (batch['scene']); this dataset has none: use robust.synth data "
            "(robust.corrupt attaches robust.scene_renderer.SynthSceneRenderer for it)"
        )
    if not isinstance(scene, SceneRenderer):
        raise TypeError(f"{name}: batch['scene'] must be a SceneRenderer (len + render), got {type(scene).__name__}")
    if not bool(((distance_factor > 0) & (distance_factor <= 1)).all()):
        raise ValueError(f"{name}: distance_factor must lie in (0, 1] (moving closer), got {distance_factor.tolist()}")
    if not bool(((coverage >= 0) & (coverage <= MAX_COVERAGE)).all()):
        raise ValueError(f"{name}: coverage must lie in [0, {MAX_COVERAGE}], got {coverage.tolist()}")
    b, _, h, w = rgb.shape
    if h != w:
        raise ValueError(f"{name}: scene re-rendering makes square images; rgb is {h}×{w}")
    if len(scene) != b:
        raise ValueError(f"{name}: batch['scene'] renders {len(scene)} views but rgb has {b} images")
    out = scene.render(h, distance_factor=distance_factor.cpu(), coverage=coverage.cpu(), seeds=seeds)
    if out.shape != rgb.shape:
        raise ValueError(f"{name}: the scene renderer returned {tuple(out.shape)}, expected {tuple(rgb.shape)}")
    return out.to(device=rgb.device, dtype=rgb.dtype)


@register_corruption(
    "occlusion",
    family="3dcc",
    requires=("scene",),
    severities=OCCLUSION,
    ranges={"coverage": (0.05, 0.5)},
    stochastic=True,
)
def occlusion(
    rgb: torch.Tensor,
    scene: SceneRenderer | None,
    severity: int | None = None,
    params: dict | None = None,
    generator: Seeds = None,
) -> torch.Tensor:
    """Re-render each view with box occluders between the camera and its fixation point covering
    ``coverage`` of the image (see the renderer for the tolerance). ``(B,3,H,W)`` -> ``(B,3,H,W)``."""
    check_rgb(rgb)
    p = resolve_params(OCCLUSION, severity, params, rgb)
    ones = torch.ones_like(p["coverage"])
    return _rerender(rgb, scene, "occlusion", ones, p["coverage"], seeds_for(rgb, generator))


@register_corruption(
    "scale",
    family="3dcc",
    requires=("scene",),
    severities=SCALE,
    ranges={"distance_factor": (0.25, 1.0)},
)
def scale(
    rgb: torch.Tensor,
    scene: SceneRenderer | None,
    severity: int | None = None,
    params: dict | None = None,
    generator: Seeds = None,
) -> torch.Tensor:
    """Re-render each view from ``distance_factor`` of its camera-to-fixation distance, on the same line of
    sight (same rotation and field of view). ``(B,3,H,W)`` -> ``(B,3,H,W)``; deterministic."""
    check_rgb(rgb)
    p = resolve_params(SCALE, severity, params, rgb)
    zeros = torch.zeros_like(p["distance_factor"])
    return _rerender(rgb, scene, "scale", p["distance_factor"], zeros, seeds_for(rgb, 0))
