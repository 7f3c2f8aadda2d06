"""Geometric and video 3D Common Corruptions: splatting renderer, motion blur, view changes, codecs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import corruptions3d
import corruptions3d.functional as CF
import corruptions3d.kernels as kernels
from corruptions3d.geometry import default_intrinsics
from corruptions3d.splatting import flying_pixels, render_average, render_prefix_means, render_views

SIZE = 48


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest.one_thread


def _scene(b: int = 2, size: int = SIZE, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random texture over a tilted floor (2-3 m) with a near box (1 m): has depth edges and parallax."""
    g = torch.Generator().manual_seed(seed)
    rgb = F.interpolate(torch.rand(b, 3, size // 4, size // 4, generator=g), size=(size, size), mode="bilinear")
    depth = (2 + torch.linspace(0, 1, size).view(1, 1, size, 1)).expand(b, 1, size, size).clone()
    depth[:, :, size // 3 : size // 2, size // 3 : 2 * size // 3] = 1.0
    return rgb, depth


@pytest.fixture(scope="module")
def sample_small(sample_batch):
    """The real Taskonomy view at 48² (area-downsampled rgb, nearest depth)."""
    rgb = F.interpolate(sample_batch["rgb"], size=(48, 48), mode="area")
    depth = F.interpolate(sample_batch["depth_euclidean"], size=(48, 48), mode="nearest")
    return rgb, depth


DEPTH_OPS = ["xy_motion_blur", "z_motion_blur", "view_jitter"]
VIEW_OPS = ["camera_pitch", "camera_roll", "field_of_view"]


@pytest.mark.parametrize("name", DEPTH_OPS + VIEW_OPS)
def test_shape_dtype_range_and_registry(name):
    rgb, depth = _scene()
    batch = {"rgb": rgb, "depth_euclidean": depth}
    out = corruptions3d.corrupt(batch, name, severity=2, generator=3)
    assert out.shape == rgb.shape and out.dtype == rgb.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, rgb)
    assert corruptions3d.get_corruption(name).family == "3dcc"


@pytest.mark.parametrize("name", ["xy_motion_blur", "view_jitter", "camera_roll"])
def test_seeded_and_independent_of_batch(name):
    rgb, depth = _scene(b=3)
    args = (depth,) if name in DEPTH_OPS else ()
    seeds = torch.tensor([11, 22, 33], dtype=torch.int64)
    kw = {"params": {"frames": 6, "motion": 1.0}} if name == "xy_motion_blur" else {"severity": 1}
    full = getattr(CF, name)(rgb, *args, generator=seeds, **kw)
    again = getattr(CF, name)(rgb, *args, generator=seeds, **kw)
    alone = getattr(CF, name)(rgb[1:2], *(a[1:2] for a in args), generator=seeds[1:2], **kw)
    assert torch.equal(full, again)
    # Same points, same order, same per-image seed: only float summation order could differ.
    torch.testing.assert_close(alone, full[1:2], atol=1e-6, rtol=0)
    other = getattr(CF, name)(rgb, *args, generator=torch.tensor([12, 22, 33]), **kw)
    assert not torch.equal(other[0], full[0])


def test_identity_pose_reproduces_input_including_depth_edges():
    rgb, depth = _scene()
    assert flying_pixels(depth).any()  # the box edges are flying pixels, which stay when nothing moves
    k = default_intrinsics(2, SIZE, SIZE)
    eye = torch.eye(3).expand(2, 3, 3, 3)
    out = render_views(rgb, depth, k, eye, torch.zeros(2, 3, 3))
    # Identity projection lands each point on its own pixel centre up to float rounding (~1e-6 px).
    torch.testing.assert_close(out, rgb[:, None].expand_as(out), atol=1e-4, rtol=0)


def test_translation_gives_parallax_and_fills_holes():
    rgb, depth = _scene(b=1)
    rgb = torch.zeros_like(rgb)
    rgb[:, 0] = 1.0  # red background
    rgb[:, :, SIZE // 3 : SIZE // 2, SIZE // 3 : 2 * SIZE // 3] = torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1)
    k = default_intrinsics(1, SIZE, SIZE)
    t = torch.tensor([[[0.1, 0.0, 0.0]]])  # points move +0.1 m in x: the 1 m box moves f·0.1/1 = 2.4 px
    out = render_views(rgb, depth, k, torch.eye(3).expand(1, 1, 3, 3), t)[0, 0]
    blue_cols = (out[2] > 0.5).any(0).nonzero().flatten()
    assert abs(blue_cols.float().mean().item() - ((SIZE // 3 + 2 * SIZE // 3 - 1) / 2 + 2.4)) < 0.6
    # The disoccluded strip left of the box is filled from the (farther) red floor, not the blue box.
    row = SIZE // 3 + 3
    assert out[0, row, SIZE // 3] > 0.9 and out[2, row, SIZE // 3] < 0.1


@pytest.mark.parametrize(
    "name,params",
    [
        ("xy_motion_blur", {"frames": 60, "motion": 0.0}),
        ("z_motion_blur", {"frames": 38, "motion": 0.0}),
        ("view_jitter", {"rotation_deg": 0.0, "translation": 0.0}),
        ("camera_roll", {"angle_deg": 0.0}),
        ("camera_pitch", {"angle_deg": 0.0}),
        ("field_of_view", {"fov_reduction_deg": 0.0}),
    ],
)
def test_zero_strength_is_identity(name, params):
    rgb, depth = _scene()
    args = (depth,) if name in DEPTH_OPS else ()
    out = getattr(CF, name)(rgb, *args, params=params, generator=0)
    torch.testing.assert_close(out, rgb, atol=1e-4, rtol=0)  # float rounding of the projection only


def _blob(size: int, u: float, v: float) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    g = torch.exp(-((xx - u) ** 2 + (yy - v) ** 2) / (2 * 1.5**2))
    return g.expand(1, 3, size, size).clone()


def _centroid(img: torch.Tensor) -> tuple[float, float]:
    w = img[0, 0].clamp(min=0)
    yy, xx = torch.meshgrid(torch.arange(img.shape[-2]) + 0.5, torch.arange(img.shape[-1]) + 0.5, indexing="ij")
    return float((w * xx).sum() / w.sum()), float((w * yy).sum() / w.sum())


def test_pitch_moves_the_centre_by_f_tan_theta():
    size, deg = 64, 10.0
    f = size / 2  # 90° default FoV: f = W/2
    out = CF.camera_pitch(_blob(size, 32, 32), params={"angle_deg": deg}, generator=0, border="zeros")
    u, v = _centroid(out)
    # K·R·K⁻¹ maps the principal point to (cx, cy ± f·tan θ) = (32, 32 ± 5.64); a 1.5 px blob is nearly affine.
    assert abs(u - 32) < 0.05 and abs(abs(v - 32) - f * math.tan(math.radians(deg))) < 0.15


def test_roll_rotates_about_the_principal_point():
    size, deg, r = 64, 10.0, 16.0
    out = CF.camera_roll(_blob(size, 32 + r, 32), params={"angle_deg": deg}, generator=0, border="zeros")
    u, v = _centroid(out)
    a = math.radians(deg)
    assert abs(u - (32 + r * math.cos(a))) < 0.05 and abs(abs(v - 32) - r * math.sin(a)) < 0.05


def test_fov_is_a_centre_zoom_and_crop_border_has_no_reflection():
    size = 64
    out = CF.field_of_view(_blob(size, 40, 32), params={"fov_reduction_deg": 30.0})
    zoom = math.tan(math.radians(45)) / math.tan(math.radians(30))
    u, v = _centroid(out)
    assert abs(u - (32 + 8 * zoom)) < 0.1 and abs(v - 32) < 0.05
    ones = torch.ones(1, 3, size, size)
    cropped = CF.camera_roll(ones, params={"angle_deg": 10.0}, generator=0, border="crop")
    black = CF.camera_roll(ones, params={"angle_deg": 10.0}, generator=0, border="zeros")
    assert cropped.min() > 0.999 and black.min() < 0.01  # crop zooms until no output pixel leaves the frame


@pytest.mark.parametrize("name", ["xy_motion_blur", "z_motion_blur"])
def test_motion_blur_grows_with_severity(sample_small, name):
    rgb, depth = sample_small
    diffs = [(getattr(CF, name)(rgb, depth, severity=s, generator=5) - rgb).abs().mean().item() for s in range(1, 6)]
    # Same seed = same path; more frames average views farther along it. Allow float noise only.
    assert all(b >= a - 1e-4 for a, b in itertools.pairwise(diffs)), diffs
    assert diffs[-1] > 0.01


def test_h265_crf_error_grows_with_crf(sample_small):
    rgb, depth = sample_small
    errs = [
        (CF.h265_crf(rgb, depth, severity=s, generator=1, path_frames=8) - rgb).abs().mean().item() for s in (1, 3, 5)
    ]
    assert errs[0] < errs[1] < errs[2], errs  # CRF 24 < 32 < 41: coarser quantisation, larger error


def test_h265_abr_and_bit_error_decode(sample_small):
    rgb, depth = sample_small
    abr = CF.h265_abr(rgb, depth, severity=5, generator=1, path_frames=8)
    assert abr.shape == rgb.shape and abr.min() >= 0 and abr.max() <= 1
    clean = CF.bit_error(rgb, depth, params={"amount": 10**9}, generator=1, path_frames=8)  # ~no byte changed
    s5 = CF.bit_error(rgb, depth, severity=5, generator=1, path_frames=8)
    heavy = CF.bit_error(rgb, depth, params={"amount": 300}, generator=1, path_frames=8)
    assert s5.shape == rgb.shape and torch.isfinite(heavy).all()
    assert (heavy - clean).abs().mean() > 0.01
    assert corruptions3d.get_corruption("bit_error").video


def test_video_handles_odd_sizes():
    rgb, depth = _scene(b=1, size=33)
    out = CF.h265_crf(rgb, depth, severity=1, generator=0, path_frames=4)
    assert out.shape == rgb.shape
    torch.testing.assert_close(out[..., -1], rgb[..., -1])  # uncoded last column is copied


def test_bad_input_raises_clear_errors():
    rgb, depth = _scene()
    with pytest.raises(ValueError, match="depth_euclidean"):
        CF.xy_motion_blur(rgb, None, severity=1)
    with pytest.raises(ValueError, match="depth_euclidean"):
        corruptions3d.corrupt({"rgb": rgb}, "z_motion_blur", severity=1)
    for bad in (0, 6):
        with pytest.raises(ValueError, match="severity"):
            CF.camera_roll(rgb, severity=bad)
    with pytest.raises(ValueError, match=r"\(B,3,H,W\)"):
        CF.view_jitter(rgb[:, :1], depth, severity=1)
    with pytest.raises(ValueError, match="depth_euclidean must have shape"):
        CF.z_motion_blur(rgb, depth[..., :10], severity=1)
    with pytest.raises(ValueError, match="intrinsics"):
        CF.camera_pitch(rgb, severity=1, intrinsics=torch.eye(3))
    with pytest.raises(ValueError, match="frames"):
        CF.xy_motion_blur(rgb, depth, params={"frames": 61, "motion": 1.0})
    with pytest.raises(ValueError, match="border"):
        CF.camera_roll(rgb, severity=1, border="wrap")


def test_batch_intrinsics_are_used():
    blob = _blob(64, 32, 32)
    narrow = default_intrinsics(1, 64, 64, fov_deg=45.0)
    wide = CF.camera_pitch(blob, params={"angle_deg": 10.0}, generator=0, border="zeros")
    tele = corruptions3d.corrupt(
        {"rgb": blob, "intrinsics": narrow}, "camera_pitch", params={"angle_deg": 10.0}, generator=0
    )
    shift = lambda img: abs(_centroid(img)[1] - 32)  # noqa: E731
    assert shift(tele) > 2 * shift(wide)  # longer focal length, larger image shift f·tan θ


@pytest.mark.parametrize("name", ["xy_motion_blur", "z_motion_blur", "camera_roll"])
def test_all_severities_at_once_equal_single_calls(name):
    rgb, depth = _scene(b=2, size=32)
    seeds = torch.tensor([4, 9])
    entry = corruptions3d.get_corruption(name)
    assert (entry.all_severities is not None) == (name != "camera_roll")  # roll falls back to one call per severity
    batch = {"rgb": rgb, "depth_euclidean": depth}
    allv = entry.apply_severities(batch, [1, 3, 5], generator=seeds)
    assert allv.shape == (2, 3, 3, 32, 32)
    for j, s in enumerate([1, 3, 5]):
        # One render of the path, one running sum in path order: exactly the single-severity result.
        assert torch.equal(allv[:, j], corruptions3d.corrupt(batch, name, severity=s, generator=seeds))


@pytest.fixture(params=["numba", "torch"])
def splat_backend(request, monkeypatch) -> str:
    """Run a test with the compiled CPU splatting kernel and with the torch reference ops."""
    monkeypatch.setenv("ROBUST_DISABLE_NUMBA", "0" if request.param == "numba" else "1")
    assert kernels.cpu_available(torch.zeros(1)) == (request.param == "numba")
    return request.param


@pytest.mark.parametrize("threads", [1, 2])
def test_splatting_is_independent_of_chunking_and_batch(splat_backend, threads):
    torch.set_num_threads(threads)  # the compiled kernel splits frames over threads; the one_thread fixture resets
    rgb, depth = _scene(b=3, size=32)
    k = default_intrinsics(3, 32, 32)
    angle = torch.linspace(-0.05, 0.05, 4)
    c, s, o, i = angle.cos(), angle.sin(), torch.zeros(4), torch.ones(4)
    rot = torch.stack([c, o, s, o, i, o, -s, o, c], -1).view(1, 4, 3, 3).expand(3, 4, 3, 3)  # yaw about y
    t = torch.linspace(0, 0.2, 4).view(1, 4, 1) * torch.tensor([1.0, 0.5, -0.3])
    t = t.expand(3, 4, 3)
    full = render_views(rgb, depth, k, rot, t)
    # Elementwise projection and in-order scatters per image: no rounding depends on how work is split.
    assert torch.equal(full, render_views(rgb, depth, k, rot, t, max_points=500))  # one image, one frame a call
    assert torch.equal(full, render_views(rgb, depth, k, rot, t, max_points=3 * 32 * 32 * 3))
    assert torch.equal(full[1:2], render_views(rgb[1:2], depth[1:2], k[1:2], rot[1:2], t[1:2]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_cpu_splatting_matches_torch_reference(dtype, monkeypatch):
    """The numba kernel runs the reference's float ops in its order up to the splatted sums (bit-identical); it
    normalises in float64 and upsamples with its own rounding, so colours agree to a few float32 ulp (≤ 1e-6 on
    [0,1]) and to float64 rounding in float64. The path has parallax, a rotation, flying pixels at the box edges,
    points behind the camera (the box at 1 m with the camera 1.5 m forward) and an odd-sized pyramid (40×36)."""
    rgb, depth = _scene(b=2, size=40)
    rgb, depth = rgb[..., :36].to(dtype), depth[..., :36].to(dtype)
    assert flying_pixels(depth).any()
    k = default_intrinsics(2, 40, 36).to(dtype)
    angle = torch.tensor([0.0, 0.03, -0.02, 0.0], dtype=dtype)
    c, s, o, i = angle.cos(), angle.sin(), torch.zeros_like(angle), torch.ones_like(angle)
    rot = torch.stack([c, o, s, o, i, o, -s, o, c], -1).view(1, 4, 3, 3).expand(2, 4, 3, 3)
    t = torch.tensor([[0.0, 0.0, 0.0], [0.1, -0.05, 0.0], [-0.2, 0.1, -0.3], [0.0, 0.0, -1.5]], dtype=dtype)
    t = t.expand(2, 4, 3)
    monkeypatch.setenv("ROBUST_DISABLE_NUMBA", "1")
    expected = render_views(rgb, depth, k, rot, t)
    monkeypatch.setenv("ROBUST_DISABLE_NUMBA", "0")
    got = render_views(rgb, depth, k, rot, t)
    assert got.dtype == dtype
    torch.testing.assert_close(got, expected, atol=1e-6 if dtype == torch.float32 else 1e-12, rtol=0)


def test_prefix_means_match_weighted_average():
    rgb, depth = _scene(b=2, size=32)
    k = default_intrinsics(2, 32, 32)
    rot = torch.eye(3).expand(2, 6, 3, 3)
    t = torch.linspace(0, 0.15, 6).view(1, 6, 1) * torch.tensor([[1.0, 0.2, 0.0], [-0.5, 0.5, 0.3]]).view(2, 1, 3)
    frames = torch.tensor([[2.0, 4.5], [6.0, 1.0]])
    means = render_prefix_means(rgb, depth, k, rot, t, frames)
    for j in range(2):
        weights = (frames[:, j : j + 1] - torch.arange(6.0)).clamp(0, 1)  # the fractional last frame counts partly
        # Same frames, summed in a different order (einsum vs running sum): float rounding only.
        torch.testing.assert_close(means[:, j], render_average(rgb, depth, k, rot, t, weights), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="frames must lie in"):
        render_prefix_means(rgb, depth, k, rot, t, torch.tensor([[7.0], [1.0]]))


@pytest.mark.parametrize("name", ["h265_crf", "bit_error"])
def test_video_severities_render_the_clip_once_and_equal_single_calls(name):
    rgb, depth = _scene(b=1, size=64)
    seeds = torch.tensor([3])
    entry = corruptions3d.get_corruption(name)
    allv = entry.all_severities(rgb, depth, severities=(1, 5), generator=seeds, path_frames=8)
    for j, s in enumerate((1, 5)):
        # Same seed, same clip, same codec settings: the codec output is deterministic.
        single = entry.fn(rgb, depth, severity=s, generator=seeds, path_frames=8)
        assert torch.equal(allv[:, j], single)


def test_fov_reduction_scales_with_narrow_cameras():
    """Severity 5 (−50° at 90°) must work on a 45° camera (robust.synth samples 45–90°): it keeps 4/9 of it."""
    size = 64
    k = default_intrinsics(1, size, size, fov_deg=45.0)
    out = CF.field_of_view(_blob(size, 40, 32), severity=5, intrinsics=k)
    half = math.radians(22.5)
    zoom = math.tan(half) / math.tan(half * (1 - 50 / 90))
    u, _ = _centroid(out)
    assert abs(u - (32 + 8 * zoom)) < 0.1
    with pytest.raises(ValueError, match="must be below"):
        CF.field_of_view(_blob(size, 40, 32), params={"fov_reduction_deg": 90.0})


def test_codec_input_is_padded_to_safe_sizes():
    """The bundled libx264/libx265 differ run to run on 64² frames: clips are edge-padded to whole 64 px blocks and
    at least 128 px per side (512² untouched), and coding crops back."""
    from corruptions3d.functional.video import codec_safe

    clip = np.arange(2 * 64 * 50 * 3, dtype=np.uint8).reshape(2, 64, 50, 3)
    padded = codec_safe(clip)
    assert padded.shape == (2, 128, 128, 3)
    assert np.array_equal(padded[:, :64, :50], clip) and np.array_equal(padded[:, 100, 120], clip[:, 63, 49])
    assert codec_safe(np.zeros((1, 130, 200, 3), np.uint8)).shape == (1, 192, 256, 3)
    big = np.zeros((1, 512, 512, 3), np.uint8)
    assert codec_safe(big) is big
