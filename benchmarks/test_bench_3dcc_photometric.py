"""Batched photometric/depth 3DCC ops vs the per-image reference (``benchmarks/reference_3dcc.py``).

One pytest-benchmark group per corruption, both implementations side by side on the same batch: the real
Taskonomy sample view tiled to ``BENCH_3DCC_N`` images (default 16) of ``BENCH_3DCC_SIZE`` px (default 512),
severity 3. ``extra_info["images_per_s"]`` holds the throughput. Run:

    python -m pytest benchmarks/test_bench_3dcc_photometric.py --benchmark-only \
        --benchmark-columns=mean,stddev,rounds --benchmark-group-by=group
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import corruptions3d
from benchmarks.reference_3dcc import REFERENCES, run_reference
from robust.io import TaskonomyDataset, collate_views

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "taskonomy_sample"

N_IMAGES = int(os.environ.get("BENCH_3DCC_N", "16"))
SIZE = int(os.environ.get("BENCH_3DCC_SIZE", "512"))
ROUNDS = int(os.environ.get("BENCH_3DCC_ROUNDS", "3"))
SEVERITY = 3


@pytest.fixture(scope="module")
def bench_batch() -> dict[str, torch.Tensor]:
    if not SAMPLE.is_dir():
        pytest.fail(f"the real Taskonomy sample is missing at {SAMPLE}")
    sample_batch = collate_views([TaskonomyDataset(SAMPLE, ["rgb", "depth_euclidean", "reshading", "relighting"])[0]])
    out = {}
    for k in ("rgb", "depth_euclidean", "reshading", "relighting"):
        v = sample_batch[k]
        if v.shape[-1] != SIZE:
            v = F.interpolate(v, size=(SIZE, SIZE), mode="nearest" if k == "depth_euclidean" else "area")
        out[k] = v.expand(N_IMAGES, *v.shape[1:]).contiguous()
    return out


@pytest.mark.parametrize("impl", ["batched", "reference"])
@pytest.mark.parametrize("name", list(REFERENCES))
def test_bench(benchmark, bench_batch, name, impl):
    benchmark.group = f"3dcc {name} ({N_IMAGES}x{SIZE}²)"
    if impl == "batched":
        seeds = torch.arange(N_IMAGES, dtype=torch.int64)
        fn = lambda: corruptions3d.corrupt(bench_batch, name, severity=SEVERITY, generator=seeds)  # noqa: E731
    else:
        fn = lambda: run_reference(name, bench_batch, SEVERITY)  # noqa: E731
    out = benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    assert out.shape == bench_batch["rgb"].shape
    benchmark.extra_info["images_per_s"] = N_IMAGES / benchmark.stats.stats.mean
