"""On the CPU a corruption runs in chunks of images (``core.CPU_CHUNK_PIXELS``); the result must not change."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import corruptions3d
from corruptions3d import core
from corruptions3d.geometry import default_intrinsics

B, SIZE = 5, 48
NAMES = [
    n for n in corruptions3d.list_corruptions(video=False) if "scene" not in corruptions3d.get_corruption(n).requires
]


@pytest.fixture(scope="module")
def batch(sample_batch) -> dict[str, torch.Tensor]:
    """Five different 48² views made from the real sample (flips, crops, gains)."""
    views = []
    for i in range(B):
        v = {k: sample_batch[k][..., 64 * i : 64 * i + 256, 32 * i : 32 * i + 256] for k in sample_batch if k != "key"}
        v = {k: F.interpolate(t.float(), size=(SIZE, SIZE), mode="nearest") for k, t in v.items()}
        if i % 2:
            v = {k: t.flip(-1) for k, t in v.items()}
        v["rgb"] = (v["rgb"] * (0.7 + 0.1 * i)).clamp(0, 1)
        views.append(v)
    out = {k: torch.cat([v[k] for v in views]) for k in views[0]}
    out["intrinsics"] = default_intrinsics(B, SIZE, SIZE)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_chunked_equals_one_call(name, batch, monkeypatch):
    c = corruptions3d.get_corruption(name)
    params = {k: torch.linspace(lo, hi, B) for k, (lo, hi) in c.ranges.items() if k in c.severities and lo != hi}
    monkeypatch.setattr(core, "CPU_CHUNK_PIXELS", 10**9)
    whole = c(batch, severity=3, params=params, generator=7)
    whole_all = c.apply_severities(batch, [1, 5], generator=7)
    monkeypatch.setattr(core, "CPU_CHUNK_PIXELS", 2 * SIZE * SIZE)  # chunks of 2, 2 and 1 images
    # Per-image kernels are zero-padded to the chunk's longest, so sums run in another order: float32 rounding
    # of ~100-tap filters (< 1e-4). glass_blur quantises its first blur to 8 bits, where such a rounding
    # difference can move a pixel by one level (1/255) before the swaps and second blur.
    atol = 1 / 255 if name == "glass_blur" else 1e-4
    torch.testing.assert_close(c(batch, severity=3, params=params, generator=7), whole, rtol=0, atol=atol)
    torch.testing.assert_close(c.apply_severities(batch, [1, 5], generator=7), whole_all, rtol=0, atol=atol)


def test_global_rng_draws_the_same_seeds(batch, monkeypatch):
    c = corruptions3d.get_corruption("gaussian_noise")
    torch.manual_seed(3)
    whole = c(batch, severity=2)
    monkeypatch.setattr(core, "CPU_CHUNK_PIXELS", 2 * SIZE * SIZE)
    torch.manual_seed(3)
    torch.testing.assert_close(c(batch, severity=2), whole, rtol=0, atol=0)


THREADED = [n for n in NAMES if corruptions3d.get_corruption(n).stochastic] + ["jpeg_compression"]


@pytest.mark.parametrize("name", THREADED)
def test_thread_count_does_not_change_results(name, batch):
    """Per-image random fills, codecs and compiled kernels run on parallel threads (``corruptions3d.parallel``);
    each image has its own generator and output, so the result is bit-identical for any thread count."""
    c = corruptions3d.get_corruption(name)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = c(batch, severity=3, generator=7)
        torch.set_num_threads(3)
        assert torch.equal(c(batch, severity=3, generator=7), one)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("border", ["replicate", "reflect101", "symmetric", "constant"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_separable_convolution_matches_torch_ops(border, dtype):
    """The numba row/column filter (CPU default) vs grouped ``conv2d``: per-image kernels of different lengths
    along x and y, a non-square batch. Only the summation order differs: ≤ ~40 products of magnitude ≤ 1 per
    output, so float32 rounding stays below 1e-5 (float64: 1e-12). With autograd the torch ops run."""
    from corruptions3d import filters

    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 23, 31, generator=g, dtype=dtype)
    kx = filters.gaussian_kernel1d(torch.tensor([0.8, 2.0, 0.0]), 6).to(dtype)
    ky = torch.rand(3, 9, generator=g, dtype=dtype)
    got = filters.conv_separable(x, kx, ky, border)
    expected = filters.conv_separable.reference(x, kx, ky, border)
    torch.testing.assert_close(got, expected, atol=1e-5 if dtype == torch.float32 else 1e-12, rtol=0)
    xg = x.clone().requires_grad_()
    filters.conv_separable(xg, kx, ky, border).sum().backward()
    assert xg.grad is not None and xg.grad.shape == x.shape


def _noise_in_child(queue) -> None:
    torch.set_num_threads(2)
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    queue.put(corruptions3d.corrupt(x, "gaussian_noise", severity=2, generator=3).numpy())  # by value


def test_forked_worker_gets_its_own_thread_pool():
    """A DataLoader-style forked child that corrupts on the CPU after the parent used the image thread pool must
    not wait on the parent's (absent) pool threads, and gets the parent's result."""
    import multiprocessing as mp

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        expected = corruptions3d.corrupt(x, "gaussian_noise", severity=2, generator=3)  # the pool now exists
        ctx = mp.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_noise_in_child, args=(queue,))
        child.start()
        try:
            got = queue.get(timeout=30)  # a child waiting on the parent's pool never answers
            child.join(timeout=30)
        finally:
            child.kill()
        assert child.exitcode == 0
        assert torch.equal(torch.from_numpy(got), expected)
    finally:
        torch.set_num_threads(threads)
