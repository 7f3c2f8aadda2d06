"""Reader throughput: rgb + depth_euclidean views decoded into 256² batches.

Side by side in one run: the DataLoader with 2 worker processes against the same reader in the main
process (what a naive loop gets). Target (issue 3): ≥ 300 views/s with 2 workers.

    python -m pytest benchmarks/test_bench_reader.py --benchmark-columns=mean,ops
"""

from __future__ import annotations

import os

import pytest
import torch
from torch.utils.data import DataLoader

from robust.io import TaskonomyDataset, ViewKey, collate_views, write_view

N_VIEWS = int(os.environ.get("BENCH_READER_VIEWS", "128"))
SIZE = 256


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Smooth images with mild noise (compress like real photos, unlike white noise)."""
    root = tmp_path_factory.mktemp("reader")
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, SIZE), torch.linspace(0, 1, SIZE), indexing="ij")
    for i in range(N_VIEWS):
        phase = torch.rand(3, 1, 1, generator=g) * 6.28
        rgb = 0.5 + 0.4 * torch.sin(6 * xx + 4 * yy + phase) + 0.02 * torch.randn(3, SIZE, SIZE, generator=g)
        depth = 1.0 + 3.0 * yy[None] + 0.01 * torch.rand(1, SIZE, SIZE, generator=g)
        write_view(root, ViewKey("b", i // 4, i % 4), {"rgb": rgb.clamp(0, 1), "depth_euclidean": depth})
    return root


def _epoch(root, workers: int) -> int:
    ds = TaskonomyDataset(root, ["rgb", "depth_euclidean"])
    loader = DataLoader(ds, batch_size=16, num_workers=workers, collate_fn=collate_views)
    return sum(b["rgb"].shape[0] for b in loader)


@pytest.mark.benchmark(group="reader rgb+depth 256²")
@pytest.mark.parametrize("workers", [0, 2])
def test_reader_throughput(benchmark, root, workers):
    n = benchmark.pedantic(_epoch, args=(root, workers), rounds=3, iterations=1)
    assert n == N_VIEWS
    benchmark.extra_info["views_per_s"] = N_VIEWS / benchmark.stats["mean"]
