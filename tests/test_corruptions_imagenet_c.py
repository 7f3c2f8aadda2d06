"""ImageNet-C: contract of all 19 ops, agreement with the ``imagecorruptions`` reference, noise statistics."""

from __future__ import annotations

import importlib.util
import itertools
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import corruptions3d
from corruptions3d import frost as frost_textures
from corruptions3d import functional as Fn
from corruptions3d.functional.blur import ZOOM_BLUR
from corruptions3d.functional.imagenet_c import IMAGENET_C, imagenet_c_names

DETERMINISTIC = (
    "defocus_blur",
    "zoom_blur",
    "brightness",
    "contrast",
    "pixelate",
    "jpeg_compression",
    "gaussian_blur",
    "saturate",
)
# distance to the clean image rises strictly with severity (same seed); checked against the reference's own
# behaviour: glass_blur (sev. 2 is weaker than 1 by its table), saturate (0.3, 0.1, 2, 5, 20), frost, fog (3 and 4
# share strength), snow, spatter and motion_blur (random angle/layer) are not monotone in the reference either, and
# neither is pixelate on this scene (block grids alias with its 8-px stripes: reference 2.2, 2.3, 4.2, 5.4, 4.9 levels).
MONOTONE = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "speckle_noise",
    "defocus_blur",
    "zoom_blur",
    "gaussian_blur",
    "brightness",
    "contrast",
    "elastic_transform",
    "jpeg_compression",
)


def _load_reference():
    if importlib.util.find_spec("imagecorruptions") is None:
        pytest.skip("imagecorruptions is not installed")
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "imagecorruptions_compat.py"
    spec = importlib.util.spec_from_file_location("imagecorruptions_compat", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return module.load_imagecorruptions()


@pytest.fixture(scope="module")
def reference():
    return _load_reference()


@pytest.fixture(scope="module")
def scene() -> torch.Tensor:
    """A smooth, textured 72×64 test image (1,3,H,W): gradients, edges and a bright disc, 8-bit exact."""
    y, x = torch.meshgrid(torch.linspace(0, 1, 72), torch.linspace(0, 1, 64), indexing="ij")
    r = 0.5 + 0.4 * torch.sin(9 * x) * torch.cos(5 * y)
    g = (x + y) / 2
    b = ((x - 0.6) ** 2 + (y - 0.4) ** 2 < 0.05).float() * 0.8 + 0.1 * (torch.floor(8 * x) % 2)
    img = torch.stack((r, g, b)).clamp(0, 1)[None]
    return torch.round(img * 255) / 255


def _u8(img: torch.Tensor) -> np.ndarray:
    return (img[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


def test_registry_matches_reference_names_and_order(reference):
    assert corruptions3d.list_corruptions("imagenet_c") == list(IMAGENET_C) == reference.get_corruption_names("all")
    for subset in ("common", "validation", "noise", "blur", "weather", "digital"):
        assert imagenet_c_names(subset) == reference.get_corruption_names(subset)
    stochastic = {n for n in IMAGENET_C if corruptions3d.get_corruption(n).stochastic}
    assert stochastic == set(IMAGENET_C) - set(DETERMINISTIC)


def test_zoom_table_is_numpy_arange():
    starts = ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03))
    for zooms, (stop, step) in zip(ZOOM_BLUR["zooms"], starts):
        np.testing.assert_allclose(zooms, np.arange(1, stop, step), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", IMAGENET_C)
def test_contract_seeded_and_batch_independent(name, scene):
    rgb = torch.cat((scene, scene.flip(-1)))
    fn = getattr(Fn, name)
    seeds = torch.tensor([11, 12], dtype=torch.int64)
    out = fn(rgb, severity=3, generator=seeds)
    assert out.shape == rgb.shape and out.dtype == rgb.dtype
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.equal(out, fn(rgb, severity=3, generator=seeds))
    alone = fn(rgb[1:], severity=3, generator=seeds[1:])
    torch.testing.assert_close(alone, out[1:], rtol=0, atol=1e-5)  # FFT/conv sums may reorder: float32 ulps
    if corruptions3d.get_corruption(name).stochastic:
        other = fn(rgb, severity=3, generator=torch.tensor([13, 14], dtype=torch.int64))
        assert not torch.equal(other, out)


@pytest.mark.parametrize("name", IMAGENET_C)
def test_distance_grows_with_severity(name, scene):
    fn = getattr(Fn, name)
    d = [float((fn(scene, severity=s, generator=5) - scene).abs().mean()) for s in range(1, 6)]
    assert min(d) > 0
    if name != "saturate":  # S·0.3 (sev. 1) vs S·20+0.2 capped at 1 (sev. 5): on saturated colours sev. 1 moves more
        assert d[4] > d[0]
    if name in MONOTONE:
        assert all(a < b for a, b in itertools.pairwise(d)), d


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_ops_match_reference(name, scene, reference):
    # The reference truncates its float result to uint8, so ours·255 - ref lies in [0, 1) when both compute the
    # same value; float32 vs float64 (HSV hue, FFT vs OpenCV's DFT) and Pillow's 8-bit rounding between its
    # resize passes (pixelate) move single values across a level: |diff| <= 1 level everywhere, mean well below it.
    img = _u8(scene)
    for s in range(1, 6):
        ref = reference.corrupt(img, s, name).astype(np.float64)
        ours = getattr(Fn, name)(scene, severity=s)[0].permute(1, 2, 0).double().numpy() * 255
        diff = ours - ref
        assert np.abs(diff).max() <= 1.0 + 1e-3, (name, s, np.abs(diff).max())
        assert np.abs(diff).mean() <= 0.6, (name, s, np.abs(diff).mean())


def test_per_image_parameters_equal_single_calls(scene):
    rgb = torch.cat((scene, scene))
    radius = torch.tensor([3.0, 10.0])
    both = Fn.defocus_blur(rgb, params={"radius": radius, "alias_sigma": 0.5})
    for i in range(2):
        one = Fn.defocus_blur(scene, params={"radius": float(radius[i]), "alias_sigma": 0.5})
        torch.testing.assert_close(both[i : i + 1], one, rtol=0, atol=1e-5)


def test_noise_statistics_match_formulas():
    gray = torch.full((2, 3, 64, 64), 0.5)
    n = gray.numel()
    seeds = torch.tensor([1, 2])
    # mean of N samples with std s: sampling error s/sqrt(N) (~0.0006 here); 5 standard errors as the bound.
    # std estimates have relative error ~1/sqrt(2N) (~0.4%): allow 3%.
    d = Fn.gaussian_noise(gray, severity=1, generator=seeds) - gray  # σ = .08: clipping at 0.5 ± 6σ is negligible
    assert abs(float(d.mean())) < 5 * 0.08 / math.sqrt(n)
    assert float(d.std()) == pytest.approx(0.08, rel=0.03)
    d = Fn.speckle_noise(gray, severity=1, generator=seeds) - gray  # x·N(0, .15²): std 0.075
    assert abs(float(d.mean())) < 5 * 0.075 / math.sqrt(n)
    assert float(d.std()) == pytest.approx(0.5 * 0.15, rel=0.03)
    d = Fn.shot_noise(gray, severity=1, generator=seeds) - gray  # Poisson(30)/60: mean 0, std sqrt(30)/60
    assert abs(float(d.mean())) < 5 * math.sqrt(30) / 60 / math.sqrt(n)
    assert float(d.std()) == pytest.approx(math.sqrt(30) / 60, rel=0.03)
    out = Fn.impulse_noise(gray, severity=4, generator=seeds)  # amount .17, salt and pepper equally likely
    salt, pepper = float((out == 1).float().mean()), float((out == 0).float().mean())
    se = math.sqrt(0.085 * 0.915 / n)  # binomial standard error of each fraction
    assert abs(salt - 0.085) < 5 * se and abs(pepper - 0.085) < 5 * se


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


@pytest.mark.parametrize("severity", [1, 5])
def test_glass_blur_strength_matches_reference(severity, reference):
    # Our pointer-jumping shuffle reproduces the reference loop's output distribution, so the blur strength (PSNR to
    # the clean image) must agree up to sampling noise: over 3 textured 64² images the PSNR of one draw varies by
    # ~0.2 dB; 0.6 dB separates a correct shuffle from one without the copy chains (~1 dB at severity 5).
    gen = torch.Generator().manual_seed(0)
    img = F.interpolate(torch.rand(3, 3, 16, 16, generator=gen), size=64, mode="bicubic").clamp(0, 1)
    img = torch.round(img * 255) / 255
    np.random.seed(0)
    ours, ref = [], []
    for i in range(3):
        u8 = _u8(img[i : i + 1])
        ref.append(_psnr(reference.corrupt(u8, severity, "glass_blur"), u8))
        out = Fn.glass_blur(img[i : i + 1], severity=severity, generator=i)
        ours.append(_psnr(np.floor(out[0].permute(1, 2, 0).numpy() * 255), u8))
    assert np.mean(ours) == pytest.approx(np.mean(ref), abs=0.6), (ours, ref)


def test_frost_textures_procedural_and_reference():
    a, b = frost_textures.procedural_frost(1), frost_textures.procedural_frost(1)
    assert a is b and a.shape[0] == 3 and float(a.min()) >= 0 and float(a.max()) <= 1
    assert 0.3 < float(a.mean()) < 0.8 and 0.05 < float(a.mean(0).std()) < 0.25  # like the shipped photographs
    assert "procedural" in frost_textures.texture_source("procedural")
    rgb = torch.rand(1, 3, 48, 48)
    out = Fn.frost(rgb, severity=2, generator=0)
    assert torch.equal(out, Fn.frost(rgb, params={"image_coeff": 0.8, "frost_coeff": 0.6}, generator=0))
    if frost_textures.imagecorruptions_frost_dir() is None:
        pytest.skip("imagecorruptions frost images not installed")
    ref = Fn.frost(rgb, severity=2, params={"texture": "imagecorruptions"}, generator=0)
    assert ref.shape == rgb.shape and not torch.equal(ref, out)
    assert "frost1.png" in frost_textures.texture_source("imagecorruptions")


def test_bad_input_raises_clear_errors(scene):
    for severity in (0, 6):
        with pytest.raises(ValueError, match=r"severity must be an integer 1\.\.5"):
            Fn.gaussian_blur(scene, severity=severity)
    with pytest.raises(ValueError, match=r"shape \(B,3,H,W\)"):
        Fn.contrast(scene[:, :2], severity=1)
    with pytest.raises(KeyError, match="unknown corruption 'glass_blurr'"):
        corruptions3d.corrupt(scene, "glass_blurr", severity=1)
    with pytest.raises(ValueError, match="texture must be one of"):
        Fn.frost(scene, severity=1, params={"texture": "download"})
    with pytest.raises(ValueError, match="zooms must be"):
        Fn.zoom_blur(scene, params={"zooms": (0.5,)})
    with pytest.raises(ValueError, match="unknown parameter"):
        Fn.fog(scene, severity=1, params={"c": 2.0})


def test_spatter_distance_transform_is_exact_capped_euclidean():
    from corruptions3d.functional.weather import _distance_to

    edges = torch.rand(2, 1, 23, 31, generator=torch.Generator().manual_seed(0)) > 0.97
    edges[1] = False  # an image without edges: every distance is the cap
    got = _distance_to(edges, 5)
    grid = torch.stack(torch.meshgrid(torch.arange(23.0), torch.arange(31.0), indexing="ij"), -1)
    for b in range(2):
        pts = torch.nonzero(edges[b, 0]).float()
        brute = (
            torch.cdist(grid.view(-1, 2), pts, compute_mode="donot_use_mm_for_euclid_dist").amin(1)
            if len(pts)
            else torch.full((23 * 31,), 5.0)
        )
        # squared distances are small integers, exact in float32; only the sqrt rounds
        torch.testing.assert_close(got[b, 0], brute.view(23, 31).clamp(max=5), atol=1e-5, rtol=0)


def test_poisson_inversion_equals_brute_force_quantile():
    # The table sampler must return exactly min{k : P(N_lam <= k) > u}; scipy's Poisson CDF (float64) is the brute
    # force. Rates include grid points (multiples of 1/64), values just below them and rate 0; u includes the far
    # tail (1 - 2^-40). Random u lands within float64 rounding (~1e-15) of a CDF step with probability ~1e-10 here.
    from scipy.stats import poisson as scipy_poisson

    from corruptions3d.random import _poisson_inversion

    gen = torch.Generator().manual_seed(0)
    grid = torch.arange(0, 60, 1 / 64)
    lam = torch.cat((torch.rand(8000, generator=gen) * 60, grid[::8], grid[1::8] - 2**-18, torch.zeros(1)))
    u = torch.rand(lam.numel(), generator=gen, dtype=torch.float64)
    u[:50] = 1 - 2**-40
    got = _poisson_inversion(lam, u).double().numpy()
    k = np.arange(160)
    expected = (scipy_poisson.cdf(k[None, :], lam.double().numpy()[:, None]) <= u.numpy()[:, None]).sum(1)
    np.testing.assert_array_equal(got, expected)


def test_compiled_poisson_inversion_equals_torch_ops():
    """The numba kernel (CPU default) makes the reference's float64 CDF sums in its order: identical samples,
    including undecided cells (rates off the 1/64 grid), the far tail (u = 1 - 2^-40) and rate 0."""
    from corruptions3d.random import _poisson_inversion

    gen = torch.Generator().manual_seed(1)
    lam = torch.cat((torch.rand(20000, generator=gen) * 120, torch.arange(0, 120, 1 / 64)[::5], torch.zeros(3)))
    u = torch.rand(lam.numel(), generator=gen, dtype=torch.float64)
    u[:50] = 1 - 2**-40
    for rates in (lam, lam.double(), lam[lam < 7]):  # float32/float64 rates, and a smaller table
        expected = _poisson_inversion.reference(rates, u[: rates.numel()])
        got = _poisson_inversion(rates, u[: rates.numel()])
        assert got.dtype == rates.dtype
        assert torch.equal(got, expected)


@pytest.mark.parametrize("rate", [0.3, 4.7, 40.0, 300.0])  # 300: above the table, drawn by torch.poisson
def test_poisson_samples_match_pmf(rate):
    # 1e5 draws, chi-square over bins with expected count >= 20 (tails merged); the 1e-4 upper quantile bounds
    # the statistic of a correct sampler, while a sampler off by 1% in the mean exceeds it at these counts.
    from scipy.stats import chi2
    from scipy.stats import poisson as scipy_poisson

    from corruptions3d import random as rnd

    rates = torch.full((2, 50000), rate)
    draws = rnd.poisson(rates, torch.tensor([3, 4])).flatten().long().numpy()
    k = np.arange(int(rate + 12 * rate**0.5 + 12))
    expected = scipy_poisson.pmf(k, rate) * draws.size
    keep = np.nonzero(expected >= 20)[0]
    lo, hi = keep[0], keep[-1]
    observed = np.bincount(np.clip(draws, lo, hi) - lo, minlength=hi - lo + 1)
    exp = expected[lo : hi + 1].copy()
    exp[0] += expected[:lo].sum()
    exp[-1] = draws.size - exp[:-1].sum()
    stat = float(((observed - exp) ** 2 / exp).sum())
    assert stat < chi2.ppf(1 - 1e-4, len(exp) - 1), stat
    assert torch.equal(rnd.poisson(rates[1:], torch.tensor([4])).flatten(), torch.from_numpy(draws[50000:]).float())


def test_poisson_rejects_negative_rates():
    from corruptions3d import random as rnd

    with pytest.raises(ValueError, match="rates must be non-negative"):
        rnd.poisson(torch.tensor([[1.0, -0.5]]), torch.tensor([0]))


def test_pixelate_per_image_scales_equal_single_calls(scene):
    # images with different downscaled sizes are processed in separate groups; each must match its own call exactly
    rgb = torch.cat((scene, scene.flip(-1), scene))
    scale = torch.tensor([0.6, 0.25, 0.25])
    both = Fn.pixelate(rgb, params={"scale": scale})
    for i in range(3):
        assert torch.equal(both[i : i + 1], Fn.pixelate(rgb[i : i + 1], params={"scale": float(scale[i])}))


def test_jpeg_thread_pool_equals_single_thread(scene):
    # the codec pool (one libjpeg call per image on torch.get_num_threads() threads) must give the loop's bytes
    rgb = torch.cat((scene, scene.flip(-1), scene.flip(-2)))
    params = {"quality": torch.tensor([25.0, 7.0, 15.0])}
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = Fn.jpeg_compression(rgb, params=params)
        torch.set_num_threads(2)
        pooled = Fn.jpeg_compression(rgb, params=params)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(single, pooled)
    assert torch.equal(pooled[1:2], Fn.jpeg_compression(rgb[1:2], params={"quality": 7.0}))


def test_pixelate_box_means_skip_pillow_gap_lines():
    # 13 -> 6 samples: Pillow's box test leaves line 6 in no range (a rounding tie at t = 1/2); each block mean must
    # be the plain mean of its own range (float32 sums of <= 3 values: ulp-level error)
    from corruptions3d.functional.digital import _box_down, _box_plan

    lo, hi, _ = _box_plan(13, 6, "cpu")
    assert int(lo[3]) == int(hi[2]) + 1  # the gap this test is about
    x = torch.rand(2, 3, 13, 5, generator=torch.Generator().manual_seed(0))
    expected = torch.stack([x[:, :, a:b].mean(2) for a, b in zip(lo.tolist(), hi.tolist())], 2)
    torch.testing.assert_close(_box_down(x, 2, lo, hi), expected, rtol=0, atol=1e-6)


def test_impulse_noise_rejects_amount_outside_unit_interval(scene):
    with pytest.raises(ValueError, match=r"impulse_noise: amount must be in \[0,1\]"):
        Fn.impulse_noise(scene, params={"amount": 1.5})


@pytest.mark.parametrize("name", ["brightness", "saturate"])
def test_closed_form_hsv_ops_equal_scikit_image_round_trip(name):
    """Brightness/saturate change V or S in closed form on RGB; scikit-image's rgb2hsv → edit → hsv2rgb in float64
    is the definition. Colours include black, white, grays (hue 0: red when saturated), channel ties and random
    ones; every severity. float32 vs float64 arithmetic: a few float32 ulp (≤ 1e-6 on [0,1])."""
    color = pytest.importorskip("skimage.color")
    rng = np.random.default_rng(0)
    edge = [[0, 0, 0], [1, 1, 1], [0.5, 0.5, 0.5], [0.2, 0.2, 0.2], [1, 0, 0], [0.3, 0.3, 0.1], [0.1, 0.6, 0.6]]
    pixels = np.concatenate([np.array(edge), rng.random((57, 3))]).reshape(8, 8, 3)
    rgb = torch.from_numpy(pixels).float().permute(2, 0, 1)[None]
    table = getattr(Fn.digital, name.upper())
    for s in range(1, 6):
        hsv = color.rgb2hsv(pixels.astype(np.float32).astype(np.float64))
        if name == "brightness":
            hsv[..., 2] = np.clip(hsv[..., 2] + table["value_shift"][s - 1], 0, 1)
        else:
            hsv[..., 1] = np.clip(hsv[..., 1] * table["scale"][s - 1] + table["shift"][s - 1], 0, 1)
        expected = np.clip(color.hsv2rgb(hsv), 0, 1)
        got = getattr(Fn, name)(rgb, severity=s)[0].permute(1, 2, 0).double().numpy()
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_zoom_mean_equals_torch_ops(dtype, scene):
    """The numba zoom-blur kernel interpolates rows then columns and sums the zooms in the reference's order with
    its float ops: bit-identical, for every severity's zoom set, on a non-square batch."""
    from corruptions3d.functional.blur import ZOOM_BLUR, zoom_mean

    rgb = torch.cat((scene, scene.flip(-1)))[..., :40].to(dtype)  # a batch of two
    for zooms in ZOOM_BLUR["zooms"]:
        assert torch.equal(zoom_mean(rgb, zooms), zoom_mean.reference(rgb, zooms))


def test_compiled_pixelate_matches_torch_ops():
    """The numba block means vs the ``index_add_`` reference on odd sizes and every severity's scale (ranges that
    skip a line at Pillow's rounding ties included): sums of ≤ 4 lines per direction in another order differ by at
    most a couple of float32 ulp of values ≤ 1 (2.5e-7); the nearest read-back is identical."""
    from corruptions3d.functional.digital import PIXELATE, _box_plan, box_pixelate

    x = torch.rand(2, 3, 37, 53, generator=torch.Generator().manual_seed(0)) * 1.2 - 0.1  # clipping exercised
    for scale in PIXELATE["scale"]:
        plan = (*_box_plan(37, int(37 * scale), x.device), *_box_plan(53, int(53 * scale), x.device))
        torch.testing.assert_close(box_pixelate(x, *plan), box_pixelate.reference(x, *plan), atol=2.5e-7, rtol=0)


def test_jpeg_equals_pillow_round_trip_exactly(scene):
    """Our libjpeg round trip (OpenCV's codec) gives the reference's Pillow pixels bit for bit on 8-bit input."""
    import io

    from PIL import Image

    from corruptions3d.functional.digital import JPEG_COMPRESSION

    u8 = (scene[0].permute(1, 2, 0) * 255).round().byte().numpy()
    for quality in JPEG_COMPRESSION["quality"]:
        buf = io.BytesIO()
        Image.fromarray(u8).save(buf, "JPEG", quality=quality)
        expected = np.asarray(Image.open(buf)).astype(np.float32) / 255
        got = Fn.jpeg_compression(scene, params={"quality": float(quality)})[0].permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(got, expected)


def test_jpeg_writes_any_memory_layout(scene):
    """The compiled 8-bit conversions write planes in place; a channels-last batch gets the same pixels."""
    x = torch.cat([scene, scene.flip(-1)])
    expected = Fn.jpeg_compression(x, severity=2)
    got = Fn.jpeg_compression(x.contiguous(memory_format=torch.channels_last), severity=2)
    assert torch.equal(got, expected)


def test_random_bits_are_splitmix64_of_the_element_index():
    """The int64 torch port of the counter-based stream equals splitmix64 in Python's exact integers, and its
    31-bit draws are uniform (mean 2^30 within 5 standard errors over 3·4096 draws)."""
    from corruptions3d import random as rnd

    def splitmix(key: int, j: int) -> int:
        m = (1 << 64) - 1
        z = (key + (j + 1) * rnd.SPLITMIX_GAMMA) & m
        z = ((z ^ (z >> 30)) * rnd.SPLITMIX_MUL[0]) & m
        z = ((z ^ (z >> 27)) * rnd.SPLITMIX_MUL[1]) & m
        return z ^ (z >> 31)

    seeds = torch.tensor([0, 7, 2**62 + 3])
    bits = rnd.random_bits(seeds, (64, 64), "cpu", stream=2)
    for i, seed in enumerate(seeds.tolist()):
        key = rnd.mix(seed, 2)
        assert [splitmix(key, j) >> 33 for j in (0, 1, 2, 4095)] == bits[i].flatten()[[0, 1, 2, 4095]].tolist()
    mean, n = bits.double().mean(), bits.numel()
    assert abs(mean - 2**30) < 5 * 2**31 / math.sqrt(12 * n)
    # float64 uniforms: the top 53 bits; the compiled fill equals the torch ops bit for bit
    key = rnd.mix(7, 2)
    u = rnd.splitmix_uniform_(torch.empty(3, 50, dtype=torch.float64), key)
    assert torch.equal(u, rnd.splitmix_uniform_.reference(torch.empty(3, 50, dtype=torch.float64), key))
    assert [u.flatten()[j].item() for j in (0, 149)] == [(splitmix(key, j) >> 11) * 2.0**-53 for j in (0, 149)]


@pytest.mark.parametrize("name", ["gaussian_noise", "speckle_noise"])
def test_compiled_additive_noise_equals_torch_ops(name):
    """Same per-image normals, then one compiled add-scale-clip pass in the torch ops' rounding order."""
    fn = getattr(Fn, name)
    x = torch.rand(3, 3, 17, 23, generator=torch.Generator().manual_seed(1))
    for batch in (x, x.double(), x.contiguous(memory_format=torch.channels_last)):
        for severity in (1, 5):
            got = fn(batch, severity=severity, generator=4)
            assert torch.equal(got, fn.reference(batch, severity=severity, generator=4)), (batch.dtype, severity)


def test_compiled_frost_blend_equals_torch_ops():
    """Crop windows read in place from the texture bank, one compiled blend-and-clip pass: bit-identical."""
    from corruptions3d.functional.weather import frost_blend

    g = torch.Generator().manual_seed(2)
    rgb, bank = torch.rand(3, 3, 20, 30, generator=g), torch.rand(2, 3, 40, 50, generator=g)
    windows = torch.tensor([[0, 0, 0], [1, 20, 20], [1, 7, 3]])
    frost_coeff, image_coeff = torch.tensor([0.4, 0.7, 1.0]), torch.tensor([1.0, 0.6, 0.9])
    got = frost_blend(rgb, bank, windows, frost_coeff, image_coeff)
    assert torch.equal(got, frost_blend.reference(rgb, bank, windows, frost_coeff, image_coeff))
    assert torch.equal(got[1], (0.7 * bank[1, :, 20:, 20:] + 0.6 * rgb[1]).clamp(0, 1))


def test_compiled_salt_and_pepper_equals_torch_ops():
    """Each draw computed in place from the same counter-based streams, one compiled pass: bit-identical."""
    from corruptions3d.functional.noise import salt_and_pepper

    x = torch.rand(3, 3, 17, 23, generator=torch.Generator().manual_seed(0)) * 1.4 - 0.2
    seeds, cut = torch.tensor([5, 6, 7]), torch.tensor([0, 2**28, 2**30], dtype=torch.int32)  # none, some, all
    got = salt_and_pepper(x, seeds, cut)
    assert torch.equal(got, salt_and_pepper.reference(x, seeds, cut))
    assert torch.equal(got[0], x[0].clamp(0, 1)) and bool(((got[2] == 0) | (got[2] == 1)).all())


def test_compiled_tap_filter_equals_fft_correlation():
    """Motion taps summed as shifted rows with clamped edges equal the dense-kernel FFT correlation. Each output
    sums <= 41 products of [0,1] values and weights summing to 1: both sides round at ~1e-7, so 2e-6 is the bound."""
    from corruptions3d.functional.blur import motion_taps, tap_filter

    g = torch.Generator().manual_seed(3)
    for shape, angles in (((4, 3, 40, 57), [-135.0, -44.0, 0.0, 90.0]), ((4, 1, 5, 7), [40.0, -45.0, 180.0, 10.0])):
        x = torch.rand(*shape, generator=g)
        taps = motion_taps(
            torch.tensor([10.0, 15, 15, 20]), torch.tensor([3.0, 5, 8, 15]), torch.tensor(angles), shape[2:]
        )
        got = tap_filter(x, *taps)
        torch.testing.assert_close(got, tap_filter.reference(x, *taps), rtol=0, atol=2e-6)
    oy, ox, w = (torch.tensor([[0, 2]]), torch.tensor([[0, -3]]), torch.tensor([[0.25, 0.75]]))
    x = torch.rand(1, 1, 6, 9, generator=g)
    shifted = x[..., [2, 3, 4, 5, 5, 5], :][..., [0, 0, 0, 0, 1, 2, 3, 4, 5]]  # rows +2, columns -3, edges clamped
    # the direct sum rounds once per tap; the FFT path (ROBUST_DISABLE_NUMBA=1, CUDA) a few ulps of 1: 1e-6
    torch.testing.assert_close(tap_filter(x, oy, ox, w), 0.25 * x + 0.75 * shifted, rtol=0, atol=1e-6)


def test_clipped_zoom_of_a_drawn_crop_equals_the_centred_zoom():
    """Snow draws only the crop its zoom reads: zooming that crop equals zooming the full field (same gathers)."""
    from corruptions3d.functional.blur import clipped_zoom, crop_size

    x = torch.rand(2, 1, 61, 50, generator=torch.Generator().manual_seed(4))
    zoom = torch.tensor([2.5, 4.0])
    full = clipped_zoom(x, zoom)
    for i, z in enumerate(zoom.tolist()):
        ch, cw = math.ceil(61 / z), math.ceil(50 / z)
        crop = x[i : i + 1, :, (61 - ch) // 2 : (61 - ch) // 2 + ch, (50 - cw) // 2 : (50 - cw) // 2 + cw]
        assert torch.equal(clipped_zoom(crop, zoom[i : i + 1], (61, 50)), full[i : i + 1])
    assert (crop_size(61, zoom), crop_size(50, zoom)) == (25, 20)


def test_compiled_snow_blend_equals_torch_ops():
    """The snow layer, its 180° rotation and the gray lift in one compiled pass, in the torch ops' order: exact."""
    from corruptions3d.functional.weather import snow_blend

    g = torch.Generator().manual_seed(5)
    rgb, layer, blend = torch.rand(3, 3, 20, 30, generator=g), torch.rand(3, 1, 20, 30, generator=g), torch.rand(3)
    got = snow_blend(rgb, layer, blend)
    assert torch.equal(got, snow_blend.reference(rgb, layer, blend))
    lift = torch.maximum(rgb[0], (0.299 * rgb[0, 0] + 0.587 * rgb[0, 1] + 0.114 * rgb[0, 2]) * 1.5 + 0.5)
    snow = torch.round(layer[0, 0] * 255) / 255
    expect = (blend[0] * rgb[0] + (1 - blend[0]) * lift + snow + snow.flip(-2, -1)).clamp(0, 1)
    torch.testing.assert_close(got[0], expect, rtol=0, atol=1e-6)


def test_compiled_disk_filter_equals_fft_correlation():
    """Defocus's disk as running-column-sum spans, the separable anti-alias Gaussian and the sparse reflect-101
    corrections equals the dense kernel's FFT correlation for every radius of the table, also on images smaller
    than the kernel (multiple reflections). Running sums of <= 100 values in [0,1] round at ~100·6e-8 per stored sum
    and each output reads <= 42 of them weighted by 1/area (<= 1/29): 1e-5 bounds the difference."""
    from corruptions3d.functional.blur import DEFOCUS_BLUR, disk_filter

    g = torch.Generator().manual_seed(6)
    radius, sigma = torch.tensor(DEFOCUS_BLUR["radius"], dtype=torch.float32), torch.tensor(DEFOCUS_BLUR["alias_sigma"])
    for shape in ((5, 3, 61, 47), (5, 1, 6, 9)):
        x = torch.rand(*shape, generator=g) * 1.2 - 0.1  # some values outside [0,1]: the clip is part of the op
        got = disk_filter(x, radius, sigma)
        torch.testing.assert_close(got, disk_filter.reference(x, radius, sigma), rtol=0, atol=1e-5)


def test_compiled_plasma_fog_equals_torch_ops():
    """The plasma's uniforms drawn in place from the same counter-based streams, the diamond-square levels and the
    blend in the torch ops' float32 order: bit-identical. The plasma spans [0, 1] exactly (normalised)."""
    from corruptions3d import random as rnd
    from corruptions3d.functional.weather import plasma_draws, plasma_fog, plasma_fractal, plasma_size

    x = torch.rand(3, 3, 40, 70, generator=torch.Generator().manual_seed(7))
    keys, strength, decay = (
        rnd.stream_keys(torch.tensor([1, 2, 3]), 0),
        torch.tensor([1.5, 2.5, 3.0]),
        torch.tensor([2.0, 1.7, 1.4]),
    )
    got = plasma_fog(x, keys, strength, decay)
    assert torch.equal(got, plasma_fog.reference(x, keys, strength, decay))
    assert plasma_size(40, 70) == 128 and plasma_draws(4) == 3 * (1 + 4)
    plasma = plasma_fractal(keys, 128, decay)
    assert torch.equal(plasma.amin((1, 2)), torch.zeros(3)) and torch.equal(plasma.amax((1, 2)), torch.ones(3))
    peak = x.amax((1, 2, 3)).view(-1, 1, 1, 1)
    expect = (x + strength.view(-1, 1, 1, 1) * plasma[:, None, :40, :70]) * (peak / (peak + strength.view(-1, 1, 1, 1)))
    torch.testing.assert_close(got, expect.clamp(0, 1), rtol=0, atol=1e-6)


def test_compiled_edge_distance_equals_torch_ops():
    """Spatter's Canny + capped distance: the compiled sweeps and flood fill reach the torch ops' dilation fixed
    point and separable minima exactly (8-bit levels keep every value an exact integer until the square root)."""
    from corruptions3d.functional.weather import edge_distance

    g = torch.Generator().manual_seed(8)
    blobs = F.avg_pool2d(torch.rand(3, 1, 70, 90, generator=g), 5, 1, 2) > 0.52
    levels = torch.floor(blobs * torch.rand(3, 1, 70, 90, generator=g) * 255)
    levels[1] = 0  # no edges: the cap everywhere
    for img in (levels, torch.floor(torch.rand(2, 1, 9, 13, generator=g) * 255)):  # and smaller than the cap
        got = edge_distance(img, 50.0, 150.0, 20)
        assert torch.equal(got, edge_distance.reference(img, 50.0, 150.0, 20))
    assert torch.equal(edge_distance(levels, 50.0, 150.0, 20)[1], torch.full((1, 70, 90), 20.0))


def test_stencil_equals_convolution_on_integer_levels():
    from corruptions3d import filters

    x = torch.floor(torch.rand(2, 1, 11, 14, generator=torch.Generator().manual_seed(9)) * 256)
    kernel = [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]
    for border in ("replicate", "reflect101"):
        conv = F.conv2d(filters.pad(x, 1, 1, 1, 1, border), torch.tensor(kernel, dtype=torch.float32).view(1, 1, 3, 3))
        assert torch.equal(filters.stencil(x, kernel, border), conv)
    with pytest.raises(ValueError, match="odd-sized"):
        filters.stencil(x, [[1, 1]])


def test_compiled_water_drops_equal_torch_ops():
    """Spatter's shading (box filters, equalised histogram, emboss, normalisation, turquoise blend) in one compiled
    call per image, in the torch ops' float32 operations: bit-identical, also for a flat histogram (one level)."""
    from corruptions3d.functional.weather import edge_distance, water_drops

    g = torch.Generator().manual_seed(10)
    blobs = F.avg_pool2d(torch.rand(3, 1, 40, 56, generator=g), 5, 1, 2) > 0.52
    levels = torch.floor(blobs * torch.rand(3, 1, 40, 56, generator=g) * 255)
    levels[2] = 0  # no edges: every distance at the cap, one histogram level
    dist = edge_distance(levels, 50.0, 150.0, 20)
    rgb, intensity = torch.rand(3, 3, 40, 56, generator=g), torch.tensor([0.6, 1.5, 0.5])
    got = water_drops(rgb, levels, dist, intensity)
    assert torch.equal(got, water_drops.reference(rgb, levels, dist, intensity))
    assert torch.equal(got[2], rgb[2])  # no liquid, no shading


def test_compiled_liquid_levels_equal_torch_ops():
    """The liquid zeroed below its threshold and cast like numpy's uint8 (values above 1 wrap): exact."""
    from corruptions3d.functional.weather import liquid_levels

    liquid = torch.randn(3, 1, 50, 60, generator=torch.Generator().manual_seed(11)) * 0.5 + 0.7
    threshold = torch.tensor([0.68, 0.65, 0.69])
    got = liquid_levels(liquid, threshold)
    assert torch.equal(got, liquid_levels.reference(liquid, threshold))
    expect = np.where(liquid.numpy() < 0.68, 0, np.floor(liquid.numpy() * np.float32(255))).astype(np.int64) % 256
    assert np.array_equal(got[0].numpy(), expect[0].astype(np.float32))


def test_randn_regions_depend_on_the_image_alone():
    """Each image fills only its own leading region, with numbers set by its seed and that region's size."""
    from corruptions3d import random as rnd

    seeds = torch.tensor([3, 4], dtype=torch.int64)
    both = rnd.randn_regions(seeds, [(1, 5, 6), (1, 9, 4)], (1, 9, 6), "cpu")
    alone = rnd.randn_regions(seeds[1:], [(1, 9, 4)], (1, 9, 4), "cpu")
    assert torch.equal(both[1, :, :, :4], alone[0]) and bool((both[1, :, :, 4:] == 0).all())
    assert bool((both[0, :, 5:] == 0).all()) and bool((both[0, :, :5] != 0).all())
