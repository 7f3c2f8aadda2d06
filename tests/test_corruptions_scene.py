"""Scene re-rendering corruptions ``occlusion`` and ``scale``: coverage, apparent size, seeds, errors, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import corruptions3d
import corruptions3d.functional as CF
from robust.corrupt import CorruptConfig, corrupt_dataset
from robust.io import DataError, ViewKey, read_png
from robust.scene_renderer import (
    COVERAGE_TOLERANCE,
    SynthSceneRenderer,
    move_camera,
    occluded_fraction,
    place_occluder,
)
from robust.synth import Camera, Primitive, Scene, Texture, generate, sample_point_views, sample_scene

SIZE = 64
FOV = math.radians(60)
CUBE_M, DISTANCE_M = 1.0, 3.5


def _flat(rgb: tuple[float, float, float], seed: int = 0) -> Texture:
    return Texture("checker", rgb, rgb, 0.5, seed)


@pytest.fixture(scope="module")
def cube_view() -> tuple[Scene, Camera]:
    """A gray 6×6×3 m room with a red 1 m cube; the camera looks head-on at the cube's front face centre
    from 3.5 m at the face's height, so the cube projects to a square of side ``f · 1 / 3.5`` px."""
    walls = Primitive("box", (3.0, 3.0, 1.475), (6.0, 6.0, 3.05), 0.0, 1, 0, _flat((0.6, 0.6, 0.6)), inward=True)
    floor = Primitive("box", (3.0, 3.0, -0.05), (6.0, 6.0, 0.1), 0.0, 1, 0, _flat((0.5, 0.5, 0.5), 1))
    cube = Primitive("box", (3.0, 4.5, 1.0), (CUBE_M,) * 3, 0.0, 4, 1, _flat((0.9, 0.1, 0.1), 2))
    scene = Scene(0, (6.0, 6.0, 3.0), (3.0, 1.0, 2.7), (walls, floor, cube))
    face = (3.0, 4.5 - CUBE_M / 2, 1.0)
    return scene, Camera.look_at((3.0, face[1] - DISTANCE_M, 1.0), face, FOV)


def _red_pixels(rgb: torch.Tensor) -> torch.Tensor:
    """Cube pixels per image ``(B,)``: red dominates (albedo 0.9 vs 0.1, any shading keeps the ratio 9)."""
    return (rgb[:, 0] > 3 * rgb[:, 1]).sum((1, 2))


def test_scale_grows_the_fixation_object_as_one_over_distance(cube_view):
    renderer = SynthSceneRenderer([cube_view])
    rgb = torch.zeros(1, 3, SIZE, SIZE)
    factors = [1.0, *corruptions3d.get_corruption("scale").severities["distance_factor"]]
    counts = [int(_red_pixels(CF.scale(rgb, renderer, params={"distance_factor": f}))[0]) for f in factors]
    assert counts == sorted(counts) and len(set(counts)) == len(counts), counts
    focal = (SIZE / 2) / math.tan(FOV / 2)
    for f, n in zip(factors, counts):
        side = min(SIZE, focal * CUBE_M / (f * DISTANCE_M))
        # A square of side s px sampled at pixel centres covers between (s-1)² and (s+1)² pixels.
        assert abs(math.sqrt(n) - side) <= 1.0, (f, n, side)


def test_move_camera_keeps_orientation_and_line_of_sight(cube_view):
    _, cam = cube_view
    moved = move_camera(cam, 0.4)
    assert moved.rotation == cam.rotation and moved.fov == cam.fov and moved.point == cam.point
    d = [p - c for p, c in zip(cam.point, moved.location)]
    assert math.dist(moved.location, cam.point) == pytest.approx(0.4 * DISTANCE_M)
    assert sum(a * b for a, b in zip(d, (r[2] for r in cam.rotation))) == pytest.approx(0.4 * DISTANCE_M)


@pytest.mark.parametrize("scene_seed", [0, 3])
def test_occluder_coverage_within_tolerance_and_growing(scene_seed):
    scene = sample_scene(scene_seed)
    camera = sample_point_views(scene, 0, 1)[0]
    targets = corruptions3d.get_corruption("occlusion").severities["coverage"]
    got = [place_occluder(scene, camera, c, seed=5, size=32)[1] for c in targets]
    assert all(abs(g - c) <= COVERAGE_TOLERANCE for g, c in zip(got, targets)), got
    assert got == sorted(got)


def test_occlusion_changes_about_the_covered_fraction(cube_view):
    """At SIZE = the search size the occluder covers its target ± tolerance; every covered pixel changes
    (its colour is not the wall's), and shadows of the occluder may change a few more."""
    renderer = SynthSceneRenderer([cube_view] * 2)
    clean = CF.scale(torch.zeros(2, 3, SIZE, SIZE), renderer, params={"distance_factor": 1.0})
    out = corruptions3d.corrupt(
        {"rgb": clean, "scene": renderer}, "occlusion", severity=3, generator=torch.tensor([1, 2])
    )
    assert out.shape == clean.shape and out.dtype == clean.dtype and out.min() >= 0 and out.max() <= 1
    changed = (out - clean).abs().amax(1).gt(1e-6).float().mean((1, 2))
    assert (changed >= 0.3 - COVERAGE_TOLERANCE).all() and (changed <= 0.6).all(), changed
    assert not torch.equal(out[0], out[1])  # different seeds, different occluders


def test_deterministic_per_image_seed_and_batch_independent(cube_view):
    scene = sample_scene(1)
    views = [(scene, c) for c in sample_point_views(scene, 0, 2)]
    seeds = torch.tensor([7, 8])
    rgb = torch.zeros(2, 3, 32, 32)
    a = CF.occlusion(rgb, SynthSceneRenderer(views), severity=2, generator=seeds)
    b = CF.occlusion(rgb, SynthSceneRenderer(views), severity=2, generator=seeds)
    alone = CF.occlusion(rgb[1:], SynthSceneRenderer(views[1:]), severity=2, generator=seeds[1:])
    assert torch.equal(a, b) and torch.equal(a[1:], alone)
    other = CF.occlusion(rgb[:1], SynthSceneRenderer(views[:1]), severity=2, generator=torch.tensor([9]))
    assert not torch.equal(a[:1], other)


def test_clear_errors(cube_view):
    rgb = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="needs a scene mesh"):
        CF.occlusion(rgb, None, severity=1)
    with pytest.raises(ValueError, match="scene"):
        corruptions3d.corrupt(rgb, "scale", severity=1)
    with pytest.raises(TypeError, match="SceneRenderer"):
        CF.scale(rgb, torch.zeros(1), severity=1)
    renderer = SynthSceneRenderer([cube_view])
    with pytest.raises(ValueError, match="renders 1 views but rgb has 2"):
        CF.scale(torch.rand(2, 3, 32, 32), renderer, severity=1)
    with pytest.raises(ValueError, match="square"):
        CF.scale(torch.rand(1, 3, 32, 48), renderer, severity=1)
    with pytest.raises(ValueError, match="distance_factor must lie in"):
        CF.scale(rgb, renderer, params={"distance_factor": 1.5})
    with pytest.raises(ValueError, match="coverage must lie in"):
        CF.occlusion(rgb, renderer, params={"coverage": 0.95})


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate(root, buildings=1, points=1, views=2, size=32, seed=0)
    return root


def test_renderer_from_dataset_reproduces_the_stored_rgb(synth_root):
    keys = [ViewKey("synth000", 0, v) for v in range(2)]
    renderer = SynthSceneRenderer.from_dataset(synth_root, keys)
    clean = renderer.render(32, distance_factor=torch.ones(2), coverage=torch.zeros(2), seeds=torch.zeros(2))
    stored = [read_png(synth_root / "synth000" / "rgb" / k.file_name("rgb"), 8) for k in keys]
    stored = torch.from_numpy(np.stack(stored)).permute(0, 3, 1, 2).float() / 255
    # The stored PNG is the same render rounded to 8 bits: at most half a level apart.
    assert (clean - stored).abs().max() <= 0.5 / 255 + 1e-6
    assert occluded_fraction(*renderer.views[0], 32, []) == 0.0


def test_cli_writes_occlusion_and_scale_for_synth_data(synth_root, tmp_path):
    out = tmp_path / "out"
    cfg = CorruptConfig(
        data_root=str(synth_root),
        out=str(out),
        corruptions="occlusion,scale",
        severities="1,5",
        workers=0,
        batch_size=2,
        device="cpu",
    )
    manifest = corrupt_dataset(cfg)
    assert set(manifest["corruptions"]) == {"occlusion", "scale"} and not manifest["skipped"]
    for name in ("occlusion", "scale"):
        for s in (1, 5):
            for v in range(2):
                assert (out / name / str(s) / "synth000" / f"point_0_view_{v}_domain_rgb.png").is_file()
    assert json.loads((out / "manifest.json").read_text())["written_this_run"] == 8


def test_cli_skips_scene_corruptions_without_scene_files(synth_root, tmp_path, capsys):
    cfg = CorruptConfig(
        data_root=str(synth_root), out=str(tmp_path / "o"), corruptions="occlusion", workers=0, device="cpu"
    )
    (synth_root / "synth000" / "scene.json").rename(tmp_path / "scene.json")
    try:
        with pytest.raises(DataError, match="none of the requested corruptions"):
            corrupt_dataset(cfg)
    finally:
        (tmp_path / "scene.json").rename(synth_root / "synth000" / "scene.json")
    assert "needs a scene mesh" in capsys.readouterr().out
