"""robust.synth: geometric consistency of the rendered domains, determinism, format round trips and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from corruptions3d.geometry import backproject, euclidean_to_zbuffer, lambertian, normals_from_depth
from robust.io import TaskonomyDataset, ViewKey, read_png
from robust.io.taskonomy import TaskonomyIndex
from robust.synth import (
    CLASS_NAMES,
    DOMAINS,
    Camera,
    Primitive,
    Texture,
    generate,
    load_scene,
    render_view,
    sample_point_views,
    sample_scene,
)
from robust.synth.__main__ import main
from robust.synth.dataset import building_name, view_files
from robust.synth.mesh import compile_scene
from robust.synth.render import LAMP_DISTANCE_M, LAMP_ENERGY, RELIGHT_ALBEDO, SHADOW_STRIDE, shadow_test
from robust.tasks import IGNORE_INDEX, INVALID_DEPTH, get_domain

SIZE = 96


@pytest.fixture(scope="module")
def view():
    scene = sample_scene(11)
    cam = sample_point_views(scene, 0, 2)[1]
    return scene, cam, render_view(scene, cam, SIZE)


def _decode(name: str, t: torch.Tensor) -> torch.Tensor:
    d = get_domain(name)
    if d.per_light:
        return torch.cat([d.decode(d.encode(t[k : k + 1])) for k in range(t.shape[0])])
    return d.decode(d.encode(t))


def _world_points(out: dict, cam: Camera) -> torch.Tensor:
    """``(3,H,W)`` world points of the rendered depth."""
    p = backproject(out["depth_euclidean"][None].double(), out["intrinsics"][None])[0]
    c2w = torch.from_numpy(cam.camera_to_world)
    return torch.einsum("ij,jhw->ihw", c2w[:3, :3], p) + c2w[:3, 3].view(3, 1, 1)


def test_every_domain_has_its_canonical_shape_and_range(view):
    _, _, out = view
    assert out["mask_valid"].all(), "a closed room leaves no ray without a hit"
    for name in DOMAINS:
        d, t = get_domain(name), out[name]
        if name == "segment_semantic":
            assert t.shape == (SIZE, SIZE) and t.dtype == torch.int64
            assert int(t.min()) >= 1 and int(t.max()) < len(CLASS_NAMES)
        else:
            assert t.shape == (d.channels, SIZE, SIZE), name
        if name in ("rgb", "reshading", "relighting", "edge_texture", "edge_occlusion", "principal_curvature"):
            assert float(t.min()) >= 0 and float(t.max()) <= 1, name
    assert torch.allclose(out["normal"].norm(dim=0), torch.ones(SIZE, SIZE), atol=1e-5)
    p = backproject(out["depth_euclidean"][None], out["intrinsics"][None])[0]
    n_cv = out["normal"] * torch.tensor([1.0, 1.0, -1.0]).view(3, 1, 1)
    assert ((n_cv * p).sum(0) < 0).all(), "normals face the camera"


def test_normals_agree_with_depth_away_from_edges(view):
    _, _, out = view
    k = out["intrinsics"][None]
    est = normals_from_depth(out["depth_euclidean"][None], k)[0]
    n = out["normal"]
    angle = torch.rad2deg(torch.acos((est * n).sum(0).clamp(-1, 1)))
    # Exclude pixels within 2 px of an occlusion edge or of a change of the rendered (faceted) normal: there
    # the central difference mixes two surfaces by construction.
    crease = F.max_pool2d((1 - F.avg_pool2d(n[None], 3, 1, 1, count_include_pad=False).norm(dim=1)), 5, 1, 2)[0]
    near_edge = F.max_pool2d(out["edge_occlusion"][None], 5, 1, 2)[0, 0] > 0
    keep = (crease < 1e-6) & ~near_edge
    keep[:2], keep[-2:], keep[:, :2], keep[:, -2:] = False, False, False, False
    assert keep.float().mean() > 0.4, "the check must cover most of the image"
    # Float32 depth of planar facets: the estimate differs only by rounding, far below the 3° budget.
    assert angle[keep].mean() < 3.0


def test_depth_conventions_agree_through_intrinsics(view):
    _, _, out = view
    k = out["intrinsics"][None]
    z = euclidean_to_zbuffer(out["depth_euclidean"][None], k)[0]
    assert (z - out["depth_zbuffer"]).abs().max() < 1e-3
    # After the 16-bit round trip each depth is within half a step (1/1024 m) of its value, so the two
    # stored conventions agree to one step.
    ze = euclidean_to_zbuffer(_decode("depth_euclidean", out["depth_euclidean"])[None], k)[0]
    assert (ze - _decode("depth_zbuffer", out["depth_zbuffer"])).abs().max() <= 1 / 512 + 1e-6


def test_reshading_is_lambertian_with_the_light_at_the_camera(view):
    _, _, out = view
    ref = lambertian(out["normal"][None], out["depth_euclidean"][None], out["intrinsics"][None])[0]
    # 8-bit rounding moves a value by at most half a step.
    assert (_decode("reshading", out["reshading"]) - ref).abs().max() <= 1 / 255


def _unshadowed(out: dict, cam: Camera) -> torch.Tensor:
    """Relighting without shadows, from the rendered geometry: ``(10,H,W)``."""
    p = _world_points(out, cam)
    n_cv = out["normal"].double() * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64).view(3, 1, 1)
    n = torch.einsum("ij,jhw->ihw", torch.from_numpy(cam.camera_to_world[:3, :3]), n_cv)
    to = out["lamps"].double().view(-1, 3, 1, 1) - p[None]
    r = to.norm(dim=1)
    cos = ((to / r[:, None]) * n[None]).sum(1).clamp(min=0)
    return (LAMP_ENERGY * RELIGHT_ALBEDO * cos * LAMP_DISTANCE_M**2 / (LAMP_DISTANCE_M**2 + r**2)).clamp(0, 1)


def test_relighting_lamps_sit_behind_the_camera_and_shadows_darken(view):
    scene, cam, out = view
    lamps = out["lamps"].double().numpy()
    # Jitter is horizontal only, so the height fixes c in (1-c)·camera + c·point: c ∈ [-0.5, 0].
    c = (lamps[:, 2] - cam.location[2]) / (cam.point[2] - cam.location[2])
    assert np.all((c >= -0.5 - 1e-6) & (c <= 1e-6))
    assert scene.free(lamps, 0.3).all()
    free = _unshadowed(out, cam)
    # Shadows only remove light (tolerance: float32 geometry).
    assert (out["relighting"] <= free + 1e-3).all()
    # An occluder between lamp 0 and the fixation point must cast a shadow near that point.
    lamp, point = out["lamps"][0].double().numpy(), np.asarray(cam.point)
    centre = point + 0.35 * (lamp - point) / np.linalg.norm(lamp - point)
    blocker = Primitive(
        "sphere", tuple(centre), (0.3, 0.3, 0.3), 0.0, 7, 99, Texture("checker", (1,) * 3, (0,) * 3, 1, 0)
    )
    occ = render_view(scene, cam, SIZE, extra_objects=[blocker])
    assert torch.equal(occ["lamps"], out["lamps"]), "lamps do not depend on inserted objects"
    free_occ = _unshadowed(occ, cam)[0]
    on_scene = occ["primitive_id"] < len(scene.primitives)
    shadowed = on_scene & (free_occ > 0.3) & (occ["relighting"][0] < 0.02)
    assert shadowed.sum() > 20


def test_camera_point_info_round_trip_and_fixation_at_the_centre(view):
    _, cam, out = view
    info = cam.to_point_info(SIZE, "b")
    assert Camera.from_point_info(info) == cam
    no_matrix = {k: v for k, v in info.items() if k != "camera_to_world"}
    euler_cam = Camera.from_point_info(no_matrix)
    assert np.allclose(euler_cam.rotation, cam.rotation, atol=1e-9)
    # The fixation point projects to the image centre.
    rel = np.asarray(cam.point) - np.asarray(cam.location)
    x = np.asarray(cam.rotation).T @ rel
    kk = out["intrinsics"].double().numpy()
    uv = (kk @ (x / x[2]))[:2]
    assert np.allclose(uv, [SIZE / 2, SIZE / 2], atol=1e-6)
    assert math.radians(45) <= info["field_of_view_rads"] <= math.radians(90)


def test_generate_is_deterministic_resumable_and_round_trips(tmp_path):
    args = dict(buildings=1, points=1, views=2, size=32)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    keys = generate(a, seed=3, **args)
    generate(b, seed=3, **args)
    generate(c, seed=4, **args)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 2 * (len(DOMAINS) + 9 + 1) + 1  # per view: domains, 10 relightings, point_info; scene
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert (a / "synth000" / "rgb").is_dir() and all(
        (a / f).read_bytes() != (c / f).read_bytes() for f in files if f.parts[1] == "rgb"
    )
    # Resume: a deleted file is re-rendered identically, complete views are left alone.
    victim = view_files(a, keys[1])[0]
    kept = view_files(a, keys[0])[0]
    before, mtime = victim.read_bytes(), kept.stat().st_mtime_ns
    victim.unlink()
    generate(a, seed=3, **args)
    assert victim.read_bytes() == before and kept.stat().st_mtime_ns == mtime
    # decode -> encode -> decode is bit-exact for every stored domain.
    index = TaskonomyIndex.scan(a)
    for paths in index.files[keys[0]].items():
        name, path = paths
        if name == "point_info":
            continue
        d = get_domain(name)
        for p in path.values() if isinstance(path, dict) else [path]:
            raw = read_png(p, d.codec.bit_depth)
            t = d.decode(raw)
            assert np.array_equal(d.encode(t), raw), p
            assert torch.equal(d.decode(d.encode(t)), t), p
    # The scene can be reloaded and a view re-rendered exactly from its point_info.
    ds = TaskonomyDataset(a, ["rgb", "depth_euclidean", "intrinsics"])
    info = json.loads((a / building_name(0) / "point_info" / keys[0].file_name("fixatedpose", "json")).read_text())
    again = render_view(load_scene(a, building_name(0)), Camera.from_point_info(info), 32)
    assert torch.equal(_decode("rgb", again["rgb"]), ds[0]["rgb"])


def test_cli_writes_tree_and_preview(tmp_path, capsys):
    out = tmp_path / "synth"
    assert (
        main(["--out", str(out), "--buildings", "1", "--points", "1", "--views", "1", "--size", "32", "--preview"]) == 0
    )
    printed = capsys.readouterr().out
    assert str(out / "preview.png") in printed
    sheet = read_png(out / "preview.png")
    assert sheet.ndim == 3 and sheet.shape[1] == 6 * 32
    assert all(f.is_file() for f in view_files(out, ViewKey(building_name(0), 0, 0)))
    assert (out / building_name(0) / "scene.json").is_file()


@pytest.mark.parametrize(
    ("flag", "value"), [("--size", "0"), ("--points", "-1"), ("--buildings", "0"), ("--views", "-2")]
)
def test_bad_arguments_are_named(tmp_path, capsys, flag, value):
    assert main(["--out", str(tmp_path), flag, value]) == 2
    assert flag in capsys.readouterr().err
    with pytest.raises(ValueError, match=flag.lstrip("-")):
        generate(tmp_path, **{flag.lstrip("-"): int(value)})


def test_shadows_against_the_room_interior_equal_shadows_against_every_solid_and_need_few_rays(view):
    """Shadow rays are tested against ``occluders`` (the room box and floor slab left out); the occlusion
    results must equal those against the whole scene exactly."""
    scene, cam, out = view
    rs = compile_scene(scene)
    assert len(scene.primitives) > 2 and rs.occluders is not rs.raycaster
    p = _world_points(out, cam).float().flatten(1).T.contiguous().numpy()
    n_cv = out["normal"] * torch.tensor([1.0, 1.0, -1.0]).view(3, 1, 1)
    n = (torch.from_numpy(np.asarray(cam.rotation, np.float32)) @ n_cv.flatten(1)).T.contiguous().numpy()
    t = out["depth_euclidean"].flatten().numpy()
    lights = np.concatenate([np.asarray(scene.light, np.float32)[None], out["lamps"].numpy()])
    pixels, prim = np.arange(SIZE * SIZE).reshape(SIZE, SIZE), out["primitive_id"].flatten().numpy()
    inner = shadow_test(rs.occluders, lights, p, n, t, pixels, prim)
    full = shadow_test(rs.raycaster, lights, p, n, t, pixels, prim)
    assert full.any() and not full.all()
    assert np.array_equal(inner, full)
    # Grid rays first, then rays only where the grid pixels around a pixel disagree or change primitive: the
    # result can differ from one ray per pixel only in shadows (or lit gaps) narrower than the grid stride
    # lying between grid pixels on one primitive, which cover a tiny part of the image.
    every = shadow_test(rs.occluders, lights, p, n, t, pixels, prim, stride=1)
    grid = (slice(None), slice(None, None, SHADOW_STRIDE), slice(None, None, SHADOW_STRIDE))
    assert SHADOW_STRIDE > 1 and np.array_equal(
        every.reshape(-1, SIZE, SIZE)[grid], inner.reshape(-1, SIZE, SIZE)[grid]
    )
    assert (every != inner).mean() < 1e-3


def test_rays_that_miss_get_the_invalid_codes():
    # From outside the room, looking at its corner: part of the rays hit the outer walls, the rest miss.
    cam = Camera.look_at((-1.0, -1.0, 1.5), (2.0, 2.0, 1.0), 1.2)
    out = render_view(sample_scene(0), cam, 32)
    valid = out["mask_valid"][0]
    assert 0.2 < valid.float().mean() < 0.95
    assert (out["depth_euclidean"][0][~valid] == INVALID_DEPTH).all() and (out["depth_euclidean"][0][valid] < 20).all()
    assert (out["primitive_id"][~valid] == -1).all() and (out["primitive_id"][valid] >= 0).all()
    assert (out["segment_semantic"][~valid] == IGNORE_INDEX).all()
    for name in ("rgb", "normal", "reshading", "relighting"):
        assert (out[name][:, ~valid] == 0).all(), name
    assert (out["normal"][:, valid].norm(dim=0) - 1).abs().max() < 1e-5


def test_minimal_render_equals_the_full_one(view):
    """Re-renders (occlusion, scale) ask for rgb and ids only: same values, without the relighting work."""
    scene, cam, out = view
    minimal = render_view(scene, cam, SIZE, minimal=True)
    assert set(minimal) == {"rgb", "depth_euclidean", "mask_valid", "intrinsics", "primitive_id"}
    for name, value in minimal.items():
        assert torch.equal(value, out[name]), name


def test_procedural_textures_follow_their_patterns():
    """Checker cells alternate by the parity of their integer cell index; noise is a deterministic function of
    (point, seed) in [0,1], continuous (a 1e-4-cell step moves it by at most ~1e-3: the smoothstep-weighted
    lattice blend has slope ≤ 1.5 per cell per octave) and changes with the seed."""
    from robust.synth.scene import Texture
    from robust.synth.textures import albedo

    a, b = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)
    checker = Texture("checker", a, b, 0.5, 3)
    centres = (np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [-1, 0, 0], [2, -3, 1]], np.float64) + 0.5) * 0.5
    got = albedo(centres, np.zeros(5, np.int64), [checker])
    parity = np.floor(centres / 0.5).sum(1).astype(int) & 1
    np.testing.assert_array_equal(got, np.where(parity[:, None] == 1, b, a).astype(np.float32))

    noise = [Texture("noise", a, b, 0.3, 7), Texture("noise", a, b, 0.3, 8)]
    pts = np.random.default_rng(0).uniform(-3, 3, (2000, 3))
    n7 = albedo(pts, np.zeros(2000, np.int64), noise)[:, 2]  # blue = the mix weight
    assert n7.min() >= 0 and n7.max() <= 1 and n7.std() > 0.05
    np.testing.assert_array_equal(n7, albedo(pts, np.zeros(2000, np.int64), noise)[:, 2])
    step = albedo(pts + 1e-4 * 0.3, np.zeros(2000, np.int64), noise)[:, 2]
    assert np.abs(step - n7).max() < 2e-3
    assert np.abs(albedo(pts, np.ones(2000, np.int64), noise)[:, 2] - n7).mean() > 0.05


def test_render_is_identical_when_repeated_with_any_thread_count(view):
    """Files must not depend on the machine's thread count or on the run (OpenCV's ``magnitude`` was neither)."""
    scene, cam, out = view
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        renders = [render_view(scene, cam, SIZE)]
    finally:
        torch.set_num_threads(threads)
    renders += [render_view(scene, cam, SIZE) for _ in range(3)]
    for again in renders:
        assert set(again) == set(out)
        for name, value in again.items():
            assert torch.equal(value, out[name]), name
