"""The photometric/depth 3DCC corruptions: contract, physics, and fidelity to the per-image reference."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import corruptions3d
import corruptions3d.functional as Fn
from benchmarks.reference_3dcc import imadjust as ref_imadjust
from benchmarks.reference_3dcc import run_reference
from corruptions3d.functional.sensor import imadjust
from corruptions3d.geometry import default_intrinsics
from corruptions3d.lighting import derive, relighting_from_depth

GEOMETRY = {
    "near_focus": "depth_euclidean",
    "far_focus": "depth_euclidean",
    "fog_3d": "depth_euclidean",
    "flash": "reshading",
    "shadow": "relighting",
    "multi_illumination": "relighting",
    "iso_noise": None,
    "low_light": None,
    "color_quant": None,
}
MONOTONE = ["near_focus", "far_focus", "fog_3d", "flash", "iso_noise", "low_light", "color_quant"]


def _batch(b: int = 3, size: int = 48, seed: int = 0) -> dict[str, torch.Tensor]:
    """Textured images over a slanted depth ramp (0.8..5 m), with shading and 10 relighting images."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0.8, 5.0, size).view(1, 1, size, 1).expand(b, 1, size, size)
    depth = ramp * (1 + 0.2 * torch.rand(b, 1, 1, 1, generator=g))
    return {
        "rgb": 0.1 + 0.8 * torch.rand(b, 3, size, size, generator=g),
        "depth_euclidean": depth.contiguous(),
        "reshading": torch.rand(b, 1, size, size, generator=g),
        "relighting": 0.2 + 0.8 * torch.rand(b, 10, size, size, generator=g),
    }


def _run(name: str, batch: dict, severity: int | None = 3, params=None, generator=0) -> torch.Tensor:
    geo = GEOMETRY[name]
    args = (batch["rgb"],) if geo is None else (batch["rgb"], batch[geo])
    return getattr(Fn, name)(*args, severity=severity, params=params, generator=generator)


@pytest.mark.parametrize("name", GEOMETRY)
def test_registered_shape_dtype_range(name):
    batch = _batch()
    c = corruptions3d.get_corruption(name)
    assert c.family == "3dcc" and c.requires == (() if GEOMETRY[name] is None else (GEOMETRY[name],))
    out = corruptions3d.corrupt(batch, name, severity=5, generator=1)
    assert out.shape == batch["rgb"].shape and out.dtype == torch.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 1


@pytest.mark.parametrize("name", GEOMETRY)
def test_same_seed_same_output_and_batch_independent(name):
    batch = _batch()
    seeds = torch.tensor([11, 22, 33], dtype=torch.int64)
    full = _run(name, batch, generator=seeds)
    assert torch.equal(full, _run(name, batch, generator=seeds))
    for i in range(3):
        alone = _run(name, {k: v[i : i + 1] for k, v in batch.items()}, generator=seeds[i : i + 1])
        # float32 sums in a different order (defocus kernels are zero-padded to the batch's longest): ~1e-7
        torch.testing.assert_close(alone[0], full[i], atol=1e-5, rtol=0)
    if corruptions3d.get_corruption(name).stochastic:
        assert not torch.equal(full, _run(name, batch, generator=torch.tensor([12, 22, 33])))


@pytest.mark.parametrize("name", MONOTONE)
def test_distance_from_clean_grows_with_severity(name):
    batch = _batch(b=1, size=64)
    dist = [float((_run(name, batch, severity=s) - batch["rgb"]).abs().mean()) for s in range(1, 6)]
    assert all(a < b for a, b in itertools.pairwise(dist)), dist


def test_shadow_uses_five_distinct_lights_ordered_by_brightness():
    # constant image 0.5 and constant lights v_k = 0.09·(k+1): out = 0.5·v·u with u ∈ [1, 1.1), and the
    # intervals [v_k, 1.1·v_k) are disjoint, so each output identifies its light.
    values = 0.09 * torch.arange(1, 11, dtype=torch.float32)
    lights = values.view(1, 10, 1, 1).expand(1, 10, 8, 8).contiguous()
    rgb = torch.full((1, 3, 8, 8), 0.5)
    picked = []
    for s in range(1, 6):
        gain = float(Fn.shadow(rgb, lights, severity=s, generator=7)[0, 0, 0, 0]) / 0.5
        k = int(((values <= gain + 1e-6) & (gain < 1.1 * values)).nonzero()[0])
        picked.append(float(values[k]))
    assert len(set(picked)) == 5 and picked == sorted(picked, reverse=True)


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_multi_illumination_sums_n_lights_with_reference_coefficients(severity):
    n = [5, 4, 3, 2, 1][severity - 1]
    lo, hi = [(0.20, 0.30), (0.25, 0.35), (0.35, 0.45), (0.50, 0.60), (1.0, 1.1)][severity - 1]
    rgb = torch.full((4, 3, 4, 4), 0.1)
    out = Fn.multi_illumination(rgb, torch.ones(4, 10, 4, 4), severity=severity, generator=3)
    total = out[:, 0, 0, 0] / 0.1  # = Σ_j c_j over the n lights
    assert bool((total >= n * lo - 1e-5).all() and (total < n * hi + 1e-5).all()), total


def test_fog_identity_at_zero_depth_and_airlight_far_away():
    batch = _batch()
    near = Fn.fog_3d(batch["rgb"], torch.full_like(batch["depth_euclidean"], 1e-6), severity=5)
    torch.testing.assert_close(near, batch["rgb"], atol=1e-5, rtol=0)  # t = exp(−20·6.4e-8) ≈ 1 − 1.3e-6
    far = Fn.fog_3d(batch["rgb"], torch.full_like(batch["depth_euclidean"], 100.0), severity=1)
    airlight = batch["rgb"].mean(dim=(1, 2, 3), keepdim=True).expand_as(far)  # per image, t = e^−25.6
    torch.testing.assert_close(far, airlight, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["near_focus", "far_focus"])
def test_in_focus_plane_stays_sharp(name):
    batch = _batch(b=1, size=64)
    plane = torch.full_like(batch["depth_euclidean"], 2.0)
    # constant depth: every σ = A·1e-4/q < 0.1 px, so each layer is the identity
    assert torch.equal(getattr(Fn, name)(batch["rgb"], plane, severity=5), batch["rgb"])
    # two planes: half the pixels at 1 m (near focus) and half at 4 m; near_focus keeps the 1 m half exact
    two = torch.where(torch.arange(64).view(1, 1, 1, 64) < 32, 1.0, 4.0).expand(1, 1, 64, 64).contiguous()
    out = Fn.near_focus(batch["rgb"], two, severity=5)
    assert torch.equal(out[..., :32], batch["rgb"][..., :32])
    assert float((out[..., 40:] - batch["rgb"][..., 40:]).abs().mean()) > 0.05


def test_color_quant_keeps_exactly_the_top_bits():
    v = torch.randint(0, 256, (2, 3, 16, 16), generator=torch.Generator().manual_seed(0))
    for s, bits in enumerate([5, 4, 3, 2, 1], start=1):
        out = Fn.color_quant(v / 255.0, severity=s) * 255
        mask = 256 - 2 ** (8 - bits)
        assert torch.equal(out.round().long(), v & mask)
        torch.testing.assert_close(out, out.round(), atol=1e-4, rtol=0)


def test_imadjust_matches_reference_formula():
    rgb = _batch(b=1)["rgb"]
    for s, gain in enumerate([0.6, 0.5, 0.4, 0.3, 0.2], start=1):
        ours = imadjust(rgb, torch.tensor([gain]), torch.tensor([2.0]))[0].permute(1, 2, 0)
        ref = torch.from_numpy(ref_imadjust(rgb[0].permute(1, 2, 0).double().numpy(), s)).float()
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("name", "severities"),
    [
        ("near_focus", (5,)),
        ("far_focus", (5,)),
        ("fog_3d", range(1, 6)),
        ("flash", range(1, 6)),
        ("color_quant", range(1, 6)),
    ],
)
def test_reproduces_reference_on_real_view(sample_batch, name, severities):
    for s in severities:
        ours = _run(name, sample_batch, severity=s)
        ref = run_reference(name, sample_batch, s)
        # the reference truncates to 8 bits (≤ 1 level below the float), so the mean gap is ≈ 0.5/255
        mad = float((ours - ref).abs().mean())
        assert mad <= 1 / 255, (name, s, mad * 255)


def test_low_light_noise_matches_reference_statistics(sample_batch):
    ours = _run("low_light", sample_batch, severity=2)
    ref = run_reference("low_light", sample_batch, 2)
    # same Poisson–Gaussian model, different random numbers: means agree to well under one 8-bit level
    assert abs(float(ours.mean() - ref.mean())) < 1 / 255


def test_bad_input_raises_clear_errors():
    batch = _batch()
    with pytest.raises(ValueError, match="depth_euclidean"):
        Fn.fog_3d(batch["rgb"], None, severity=1)
    with pytest.raises(ValueError, match="depth_euclidean"):
        corruptions3d.corrupt({"rgb": batch["rgb"]}, "near_focus", severity=1)
    for bad in (0, 6):
        with pytest.raises(ValueError, match="severity"):
            Fn.flash(batch["rgb"], batch["reshading"], severity=bad)
    with pytest.raises(ValueError, match=r"\(B,3,H,W\)"):
        Fn.iso_noise(batch["rgb"][:, :1], severity=1)
    with pytest.raises(ValueError, match="depth_euclidean must have shape"):
        Fn.far_focus(batch["rgb"], batch["depth_euclidean"][:, :, :10], severity=1)
    with pytest.raises(ValueError, match="unknown parameter"):
        Fn.color_quant(batch["rgb"], params={"levels": 3})
    with pytest.raises(ValueError, match="at least 5"):
        Fn.shadow(batch["rgb"], batch["relighting"][:, :4], severity=1)


def test_derive_reshading_correlates_with_real_reshading(sample_batch):
    derived = derive({"depth_euclidean": sample_batch["depth_euclidean"]}, ["reshading", "normal", "depth_zbuffer"])
    assert derived["normal"].shape == (1, 3, 512, 512) and derived["depth_zbuffer"].shape == (1, 1, 512, 512)
    r = torch.corrcoef(torch.stack([derived["reshading"].flatten(), sample_batch["reshading"].flatten()]))[0, 1]
    print(f"derived vs real reshading correlation: {float(r):.3f}")
    assert float(r) > 0.3
    with pytest.raises(ValueError, match="no 'depth_euclidean'"):
        derive({"rgb": sample_batch["rgb"]}, ["relighting"])
    with pytest.raises(ValueError, match="cannot derive"):
        derive(sample_batch, ["segment_semantic"])


def test_derived_relighting_feeds_shadow():
    batch = derive({k: v for k, v in _batch(b=2, size=24).items() if k != "relighting"}, ["relighting"], generator=0)
    assert batch["relighting"].shape == (2, 10, 24, 24)
    assert float(batch["relighting"].min()) >= 0 and float(batch["relighting"].max()) <= 1
    out = corruptions3d.corrupt(batch, "shadow", severity=2, generator=0)
    assert out.shape == (2, 3, 24, 24)


def test_relighting_casts_shadows_behind_occluders():
    # wall at z = 3 m, a 0.4 m square occluder at z = 1.5 m on the optical axis, lamp at (1, 0, −0.5) m:
    # the wall point x = −0.75 m (pixel u = 24) lies on the lamp's line through the occluder.
    size = 64
    k = default_intrinsics(1, size, size)  # 90°: f = 32 px
    rays = torch.linalg.inv(k[0]) @ torch.stack(
        [torch.arange(size).repeat(size) + 0.5, torch.arange(size).repeat_interleave(size) + 0.5, torch.ones(size**2)]
    )
    box = ((rays[0] * 1.5).abs() <= 0.2) & ((rays[1] * 1.5).abs() <= 0.2)
    z = torch.where(box, 1.5, 3.0)
    depth = (z * rays.norm(dim=0)).view(1, 1, size, size)
    lamp = torch.tensor([[[1.0, 0.0, -0.5]]])
    lit = relighting_from_depth(depth, k, lights=lamp, shadows=False)
    shaded = relighting_from_depth(depth, k, lights=lamp, shadows=True)
    assert float(shaded[0, 0, 32, 24]) < 0.5 * float(lit[0, 0, 32, 24])  # behind the occluder
    assert math.isclose(float(shaded[0, 0, 32, 56]), float(lit[0, 0, 32, 56]))  # open wall on the other side


@pytest.mark.parametrize("name", ["near_focus", "far_focus"])
def test_defocus_compiled_fft_and_direct_layers_agree(name, monkeypatch):
    import corruptions3d.functional.defocus as defocus

    batch = _batch(b=2, size=64)
    focus = torch.tensor([0.0, 0.0]) if name == "near_focus" else torch.tensor([7.0, 7.0])
    params = {"aperture": torch.tensor([20.0, 30.0]), "focus": focus}  # σ up to 25 px (radius 37): mostly FFT layers
    fn = getattr(Fn, name)
    compiled = fn(batch["rgb"], batch["depth_euclidean"], params=params)
    monkeypatch.setenv("ROBUST_DISABLE_NUMBA", "1")
    fft = fn(batch["rgb"], batch["depth_euclidean"], params=params)
    monkeypatch.setattr(defocus, "FFT_MIN_RADIUS", 10**9)
    direct = fn(batch["rgb"], batch["depth_euclidean"], params=params)
    # same exact truncated kernels and replicate borders; float32 FFT rounding is ~1e-6 on values in [0,1], direct
    # sums of <= 75 taps per pass in another order ~1e-7
    assert (fft - direct).abs().max() < 1e-4
    assert (compiled - direct).abs().max() < 1e-5


def test_compiled_defocus_on_depth_bands_equals_torch_ops():
    """Depth rising down the image puts each layer on a band of rows: the compiled kernel blurs a layer only on
    its rows and the rows its column taps reach, with the torch ops' per-pixel layers and weights."""
    from corruptions3d.functional.defocus import defocus_layers, depth_defocus, layer_quantiles
    from corruptions3d.kernels.defocus_cpu import _layer_weights

    g = torch.Generator().manual_seed(1)
    rgb = torch.rand(2, 3, 48, 40, generator=g)
    depth = (torch.linspace(1, 9, 48).view(1, 1, 48, 1) + 0.2 * torch.rand(2, 1, 48, 40, generator=g)).contiguous()
    focus, aperture = torch.tensor([0, 7]), torch.tensor([6.0, 4.0])
    got = depth_defocus(rgb, depth, focus, aperture)
    torch.testing.assert_close(got, depth_defocus.reference(rgb, depth, focus, aperture), rtol=0, atol=1e-5)
    _, layer, w_lo, w_hi = defocus_layers(depth, focus, aperture)
    d, q = layer_quantiles(depth)
    lay, lo, hi = np.empty((48, 40), np.int64), np.empty((48, 40), np.float32), np.empty((48, 40), np.float32)
    _layer_weights(d[1, 0].numpy(), q[1].numpy(), lay, lo, hi)
    assert np.array_equal(lay.ravel(), layer[1].numpy())
    assert np.array_equal(lo.ravel(), w_lo[1].numpy()) and np.array_equal(hi.ravel(), w_hi[1].numpy())


def test_depth_quantiles_equal_torch_quantile():
    """Selection of the order statistics (CPU) gives exactly ``torch.quantile``'s linear-rule values."""
    from corruptions3d.functional.defocus import depth_quantiles

    depth = torch.rand(3, 1, 37, 29, generator=torch.Generator().manual_seed(0)) * 20
    depth[1] = 5.0  # a constant image: every quantile equal
    expected = torch.quantile(depth.flatten(1), torch.linspace(0, 1, 9), dim=1).T
    torch.testing.assert_close(depth_quantiles(depth), expected, atol=1e-5, rtol=0)


def test_compiled_depth_fill_and_radix_select_equal_torch_quantiles():
    """Invalid depths (the 65535 code, zero, NaN) filled with the image's farthest valid depth, scaled to the
    reference's unit, and the order statistics of a radix select: exactly ``layer_quantiles``' depth and quantiles,
    also for a constant image and one with no valid pixel (1 m)."""
    from corruptions3d.functional import defocus
    from corruptions3d.geometry import INVALID_DEPTH
    from corruptions3d.kernels.defocus_cpu import _fill_select

    depth = torch.rand(3, 1, 37, 29, generator=torch.Generator().manual_seed(0)) * 20
    depth[0, 0, :5], depth[0, 0, 5, :3], depth[0, 0, 6, 0] = INVALID_DEPTH, 0.0, float("nan")
    depth[1], depth[2] = 5.0, INVALID_DEPTH
    d_ref, q_ref = defocus.layer_quantiles(depth)
    ranks = defocus.quantile_ranks(37 * 29)
    d, stats = torch.empty(3, 37, 29), torch.empty(3, len(ranks[0]))
    for i in range(3):
        unit, below = np.float32(defocus.DEPTH_UNIT_M), np.float32(INVALID_DEPTH - 1e-3)
        _fill_select(depth[i, 0].numpy(), unit, below, ranks[0].numpy(), d[i].numpy(), stats[i].numpy())
    assert torch.equal(d, d_ref[:, 0])
    assert torch.equal(defocus.widen_quantiles(defocus.interpolate_quantiles(stats, ranks)), q_ref)
    assert torch.equal(d[2], torch.full((37, 29), 1 / defocus.DEPTH_UNIT_M))


def test_compiled_relight_ranked_equals_torch_ops():
    """Shadow's compiled pass (brightness of the picked lights, then one clipped relight of the chosen one) picks
    the same light as the torch ops and writes the same values; equal lights keep the pick order."""
    from corruptions3d.functional.lighting import relight_ranked

    g = torch.Generator().manual_seed(12)
    rgb = torch.rand(3, 3, 20, 24, generator=g)
    lights = torch.rand(3, 7, 20, 24, generator=g) * torch.linspace(0.2, 1.6, 7).view(1, 7, 1, 1)
    lights[2, 1] = torch.randint(0, 5, (20, 24), generator=g) / 8  # eighths: exact sums in any order
    lights[2, 4] = lights[2, 1].flip(-1)  # another image with exactly the same mean: a tie
    picked = torch.tensor([[0, 6, 3, 2, 5], [6, 5, 4, 3, 2], [4, 1, 0, 2, 6]])
    rank, gain = torch.tensor([1, 5, 3]), torch.tensor([1.0, 1.05, 1.1])
    got = relight_ranked(rgb, lights, picked, rank, gain)
    assert torch.equal(got, relight_ranked.reference(rgb, lights, picked, rank, gain))
    torch.testing.assert_close(got[1], (rgb[1] * lights[1, 2] * 1.05).clamp(0, 1), rtol=0, atol=1e-6)  # dimmest
    means = lights[2].mean((1, 2))
    assert means[6] > means[2] > means[1] == means[4] > means[0]  # rank 3: the tie, 4 picked before 1
    torch.testing.assert_close(got[2], (rgb[2] * lights[2, 4] * 1.1).clamp(0, 1), rtol=0, atol=1e-6)
