"""Fused Triton kernels vs their torch references: on CPU under ``TRITON_INTERPRET=1``, on CUDA with ``-m gpu``.

The interpreter runs the kernels with numpy float32 arithmetic, so kernel and reference agree bit for bit on
integers (Philox) and to a few ulp on floats (summation order, ``exp``/``log``/``cos`` implementations). Compiled
CUDA kernels use approximate division and transcendentals: tolerances there are one order looser.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any @triton.jit module is imported
triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")

import corruptions3d.functional as Fn  # noqa: E402
import corruptions3d.functional.digital as digital  # noqa: E402
import corruptions3d.functional.lighting as lighting  # noqa: E402
import corruptions3d.functional.noise as noise  # noqa: E402
import corruptions3d.functional.sensor as sensor  # noqa: E402
import corruptions3d.kernels as kernels  # noqa: E402
from corruptions3d import splatting  # noqa: E402
from corruptions3d.functional.defocus import depth_defocus  # noqa: E402
from corruptions3d.functional.motion import reference_intrinsics  # noqa: E402
from corruptions3d.kernels import defocus, ops, philox, pointwise, splat  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*encountered in log2:RuntimeWarning")  # imadjust of 0: 0^γ = 0
DEVICES = [pytest.param("cpu", id="interpreter"), pytest.param("cuda", id="cuda", marks=pytest.mark.gpu)]


def _tol(device: str, cpu: float) -> float:
    return cpu if device == "cpu" else 10 * cpu


def _data(device: str, b: int = 2, h: int = 16, w: int = 24) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    depth = 0.5 + 10 * torch.rand(b, 1, h, w, generator=g)
    depth[0, 0, 0, :3] = 0  # invalid pixels, filled by the ops
    batch = {
        "rgb": torch.rand(b, 3, h, w, generator=g),
        "depth_euclidean": depth,
        "reshading": torch.rand(b, 1, h, w, generator=g),
        "relighting": torch.rand(b, 6, h, w, generator=g),
    }
    return {k: v.to(device) for k, v in batch.items()}


@triton.jit
def _philox_probe(seed_ptr, ints_ptr, uniform_ptr, normal_ptr, N, BLOCK: tl.constexpr):
    img = tl.program_id(1)
    seed = tl.load(seed_ptr + img)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    i0, _, _, _ = tl.randint4x(seed, offs)
    tl.store(ints_ptr + img * N + offs, i0.to(tl.int32, bitcast=True), mask=mask)
    tl.store(uniform_ptr + img * N + offs, tl.rand(seed, offs), mask=mask)
    tl.store(normal_ptr + img * N + offs, tl.randn(seed, offs), mask=mask)


@pytest.mark.parametrize("device", DEVICES)
def test_philox_port_matches_triton(device):
    seeds = torch.tensor([0, 12345, 2**62 + 7, 2**40 + 3], device=device)
    n = 700
    ints = torch.empty(4, n, dtype=torch.int32, device=device)
    uniform = torch.empty(4, n, device=device)
    normal = torch.empty(4, n, device=device)
    _philox_probe[(triton.cdiv(n, 256), 4)](seeds, ints, uniform, normal, n, BLOCK=256)
    offs = torch.arange(n, dtype=torch.int32)
    ref = philox.randint4x(seeds.cpu()[:, None], offs[None])[0]
    assert torch.equal(torch.where(ref >= 2**31, ref - 2**32, ref).to(torch.int32), ints.cpu())
    assert torch.equal(philox.rand(seeds.cpu()[:, None], offs[None]), uniform.cpu())
    # Box-Muller: sqrt(-2 log u)·cos(2πu') with |z| < 6: a few ulp of log/cos implementations
    torch.testing.assert_close(philox.randn(seeds.cpu()[:, None], offs[None]), normal.cpu(), atol=2e-6, rtol=0)


DETERMINISTIC = {
    "color_quant": (sensor.color_quant, None),
    "fog_3d": (Fn.fog_3d, "depth_euclidean"),
    "flash": (lighting.flash, "reshading"),
    "shadow": (lighting.shadow, "relighting"),
    "multi_illumination": (lighting.multi_illumination, "relighting"),
    "brightness": (digital.brightness, None),
    "saturate": (digital.saturate, None),
    "contrast": (digital.contrast, None),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(DETERMINISTIC))
def test_fused_matches_reference(name, device):
    """Ops without per-pixel randomness (lighting draws per image, from the reference's streams) match exactly
    up to float32 rounding of reordered products: 2 ulp of values ≤ 1."""
    ref, domain = DETERMINISTIC[name]
    batch = _data(device)
    args = (batch[domain],) if domain else ()
    for severity in (1, 5):
        expected = ref(batch["rgb"], *args, severity=severity, generator=7)
        got = getattr(ops, name)(batch["rgb"], *args, severity=severity, generator=7)
        torch.testing.assert_close(got, expected, atol=_tol(device, 2.5e-7), rtol=0)


def _reference_poisson(lam: torch.Tensor, u: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The kernel's Poisson sampler in torch (inversion up to the rate threshold, corrected normal above)."""
    p = torch.exp(-lam)
    cdf = p
    count = (cdf < u).float()
    done = torch.zeros_like(u, dtype=torch.bool)
    for k in range(1, pointwise.INVERSION_STEPS):
        p = p * lam / torch.full_like(p, k)  # a true division, as the kernel
        new = cdf + p
        done |= (new == cdf) & (k > lam)
        cdf = new
        count += ((cdf < u) & ~done).float()
    approx = torch.floor(lam + torch.sqrt(lam) * z + (z * z - 1.0) / 6.0 + 0.5).clamp(min=0)
    return torch.where(lam <= pointwise.INVERSION_MAX_RATE, count, approx)


def _reference_noise(op: str, x: torch.Tensor, p0: torch.Tensor, p1: torch.Tensor, seeds: torch.Tensor):
    """Torch port of the kernel's noise math with the same Philox numbers (offset = c·H·W + pixel)."""
    b = x.shape[0]
    offs = torch.arange(x[0].numel(), dtype=torch.int32).view(1, *x.shape[1:])
    u1, u2, u3, u4 = philox.rand4x(seeds.view(b, 1, 1, 1), offs)
    z1 = philox.pair_uniform_to_normal(u1, u2)[0]
    p0, p1 = p0.view(b, 1, 1, 1), p1.view(b, 1, 1, 1)
    if op == "gaussian_noise":
        y = x + p0 * z1
    elif op == "speckle_noise":
        y = x + x * p0 * z1
    elif op == "shot_noise":
        y = _reference_poisson(x.clamp(0, 1) * p0, u1, z1) / p0
    elif op == "impulse_noise":
        y = torch.where(u1 < p0, (u2 < 0.5).float(), x)
    else:
        y = (_reference_poisson(x * p0, u1, z1) / p0).clamp(0, 1)
        y = y + p1 * philox.pair_uniform_to_normal(u3, u4)[0]
    return y.clamp(0, 1)


NOISES = {
    "gaussian_noise": (noise.GAUSSIAN_NOISE, "sigma", None),
    "speckle_noise": (noise.SPECKLE_NOISE, "sigma", None),
    "shot_noise": (noise.SHOT_NOISE, "photons", None),
    "impulse_noise": (noise.IMPULSE_NOISE, "amount", None),
    "iso_noise": (sensor.ISO_NOISE, "photons", "sigma"),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(NOISES))
def test_noise_kernels_match_philox_reference(name, device):
    """Same Philox integers; floats differ by a few ulp of log/cos, which can flip a Poisson count only where a
    uniform lies within rounding of a CDF step (never in these 4608 draws on the interpreter)."""
    table, c0, c1 = NOISES[name]
    batch = _data(device)
    seeds = torch.tensor([11, 2**61 + 5])
    severity = 5 if name == "shot_noise" else 3  # photons 3 (inversion) / 12-60 (both samplers)
    got = getattr(ops, name)(batch["rgb"], severity=severity, generator=seeds).cpu()
    p = {k: torch.full((2,), float(v[severity - 1])) for k, v in table.items()}
    op = "poisson_gaussian" if name == "iso_noise" else name
    expected = _reference_noise(op, batch["rgb"].cpu(), p[c0], p[c1] if c1 else p[c0], seeds)
    torch.testing.assert_close(got, expected, atol=_tol(device, 2e-6), rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_low_light_matches_reference_math(device):
    """imadjust (exp2/log2 power: a few ulp) then the Poisson-Gaussian sampler of ``iso_noise``."""
    batch = _data(device)
    seeds = torch.tensor([3, 4])
    got = ops.low_light(batch["rgb"], severity=2, generator=seeds).cpu()
    p = {k: torch.full((2,), float(v[1])) for k, v in sensor.LOW_LIGHT.items()}
    dark = sensor.imadjust(batch["rgb"].cpu(), p["gain"], p["gamma"])
    expected = _reference_noise("poisson_gaussian", dark, p["photons"], p["sigma"], seeds)
    torch.testing.assert_close(got, expected, atol=_tol(device, 2e-6), rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_poisson_sampler_moments(device):
    """Counts at rates across the inversion/approximation switch have Poisson mean and variance (3072 draws
    per rate: 4.5 standard errors; the corrected normal approximation is unbiased to O(1/λ))."""
    rates = torch.tensor([0.3, 4.0, 11.5, 12.5, 40.0])
    x = torch.full((5, 3, 32, 32), 0.1, device=device)
    params = torch.stack([rates / 0.1, torch.zeros(5)], 1)
    counts = pointwise.pointwise(x, "poisson_gaussian", params, torch.arange(5) + 100).cpu() * (rates / 0.1).view(
        -1, 1, 1, 1
    )
    counts = counts.flatten(1).round()
    n = counts.shape[1]
    assert ((counts.mean(1) - rates).abs() < 4.5 * (rates / n).sqrt()).all(), counts.mean(1)
    assert ((counts.var(1) / rates - 1).abs() < 4.5 * (2 / n) ** 0.5).all(), counts.var(1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["gaussian_noise", "impulse_noise", "low_light"])
def test_in_kernel_rng_is_batch_independent(name, device):
    """An image gets the same noise alone or inside a batch (same seed), and a different seed changes it."""
    rgb = _data(device)["rgb"]
    seeds = torch.tensor([5, 6])
    batch = getattr(ops, name)(rgb, severity=3, generator=seeds)
    alone = getattr(ops, name)(rgb[1:2], severity=3, generator=seeds[1:2])
    assert torch.equal(batch[1:2], alone)
    other = getattr(ops, name)(rgb[1:2], severity=3, generator=torch.tensor([8]))
    assert not torch.equal(other, alone)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("focus", "aperture"), [(0, 3.0), (7, 1.5)])
def test_defocus_matches_reference(focus, aperture, device):
    """Per-pixel 2D gather vs the reference's separable blur stack: same taps, different summation order
    (2 × ≤ 81 float32 products of weights summing to 1: error ≲ 81·ulp(1)/2 = 5e-6). Depth spans 2-4 m so the
    σ-bank stays small (the interpreter runs (2R+1)² taps per pixel in Python)."""
    batch = _data(device)
    depth = 2 + batch["depth_euclidean"] / 5
    f = torch.full((2,), focus, device=device)
    a = torch.tensor([aperture, aperture / 2], device=device)
    expected = depth_defocus(batch["rgb"], depth, f, a)
    got = defocus.depth_defocus(batch["rgb"], depth, f, a, block=512)
    assert defocus.sigma_bank(torch.ones(1, 9)).shape[-1] > 1
    torch.testing.assert_close(got, expected, atol=_tol(device, 5e-6), rtol=0)


def _camera_path(b: int, frames: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    angle = torch.linspace(0, 0.05, frames)
    rot = torch.zeros(b, frames, 3, 3)
    rot[..., 0, 0] = rot[..., 2, 2] = angle.cos()
    rot[..., 0, 2], rot[..., 2, 0], rot[..., 1, 1] = angle.sin(), -angle.sin(), 1
    trans = torch.zeros(b, frames, 3)
    trans[..., 0], trans[..., 2] = torch.linspace(0, 0.1, frames), torch.linspace(0, 0.2, frames)
    return rot.to(device), trans.to(device)


@pytest.mark.parametrize("device", DEVICES)
def test_splatting_matches_reference(device, monkeypatch):
    """Atomic z-buffer + bilinear splats vs ``scatter_reduce``/``index_add_``: same hole mask; colours are ratios
    of reordered weighted sums, so a pixel covered only by near-zero corner weights (total ≥ 1e-6) can differ by
    ulp/total (≤ 1e-4), while the mean difference stays at float rounding (1e-6)."""
    monkeypatch.setenv("ROBUST_DISABLE_NUMBA", "1")  # the torch ops as the reference, not the compiled CPU kernel
    batch = _data(device)
    rgb, depth = batch["rgb"], 2 + batch["depth_euclidean"] / 10
    depth[:, :, 4:10, 5:12] = 1.0  # an occluding box: disocclusions and z-buffer conflicts
    k = reference_intrinsics(rgb)
    rot, trans = _camera_path(2, 3, device)
    masks = []

    fill = splatting.push_pull_fill

    def capture(color, weight):
        masks.append(weight > 0)
        return fill(color, weight)

    monkeypatch.setattr(splat, "push_pull_fill", capture)
    monkeypatch.setattr(splatting, "push_pull_fill", capture)
    expected = splatting.render_views(rgb, depth, k, rot, trans)
    monkeypatch.setattr(splatting, "_splat_chunk", splat.splat_chunk)
    got = splatting.render_views(rgb, depth, k, rot, trans)
    ref_mask, kernel_mask = masks
    assert not ref_mask.all(), "the camera path should open holes"
    assert torch.equal(ref_mask, kernel_mask)
    torch.testing.assert_close(got, expected, atol=_tol(device, 1e-4), rtol=0)
    assert (got - expected).abs().mean() < _tol(device, 1e-6)


def test_dispatch_routes_cuda_tensors_and_honours_disable(monkeypatch):
    calls = []

    @kernels.fused_kernel("fog_3d")
    def reference(rgb, depth, severity=None, params=None, generator=None):
        calls.append("reference")
        return Fn.fog_3d(rgb, depth, severity=severity)

    batch = _data("cpu")
    reference(batch["rgb"], batch["depth_euclidean"], severity=2)
    assert calls == ["reference"]  # CPU tensors: the torch op
    monkeypatch.setattr(kernels, "available", lambda t=None: True)  # as on a CUDA tensor
    out = reference(batch["rgb"], batch["depth_euclidean"], severity=2)
    assert calls == ["reference"]
    torch.testing.assert_close(out, Fn.fog_3d(batch["rgb"], batch["depth_euclidean"], severity=2), atol=2.5e-7, rtol=0)
    monkeypatch.undo()
    monkeypatch.setenv("ROBUST_DISABLE_TRITON", "1")
    assert not kernels.available()
    with pytest.raises(KeyError, match="no fused kernel"):
        kernels.fused_kernel("nope")
    with pytest.raises(ValueError, match="unknown pointwise op"):
        pointwise.pointwise(batch["rgb"], "nope", torch.zeros(2, 1))
