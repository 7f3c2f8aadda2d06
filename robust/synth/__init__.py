"""Embedded synthetic Taskonomy dataset: procedural indoor scenes ray-cast with open3d (CPU) into every domain.

Public API: :func:`generate` / :func:`ensure_dataset` (write a dataset), :func:`render_view` (one view of a
scene, optionally with ``extra_objects``), :class:`Camera` (with ``to_point_info``/``from_point_info``),
:class:`Scene` / :class:`Primitive` / :func:`sample_scene` / :func:`load_scene`, :data:`CLASS_NAMES`.
"""

from robust.synth.camera import FOV_RANGE_DEG, Camera
from robust.synth.dataset import SynthConfig, building_name, ensure_dataset, generate
from robust.synth.preview import contact_sheet
from robust.synth.render import DOMAINS, RELIGHT_COUNT, relighting_lamps, render_view
from robust.synth.scene import CLASS_NAMES, Primitive, Scene, Texture, load_scene, sample_scene, save_scene
from robust.synth.views import sample_point_views

__all__ = [
    "CLASS_NAMES",
    "DOMAINS",
    "FOV_RANGE_DEG",
    "RELIGHT_COUNT",
    "Camera",
    "Primitive",
    "Scene",
    "SynthConfig",
    "Texture",
    "building_name",
    "contact_sheet",
    "ensure_dataset",
    "generate",
    "load_scene",
    "relighting_lamps",
    "render_view",
    "sample_point_views",
    "sample_scene",
    "save_scene",
]
