"""Reader throughput: rgb + depth_euclidean views decoded into 256² float batches of 16.

Side by side in one run (issue 3 target: ≥ 300 views/s with 2 workers):

- ``float``: the per-sample path, ``DataLoader(dataset, collate_fn=collate_views)``: workers decode to float32
  and send 4x (rgb) / 2x (depth) the bytes through shared memory (``float+persistent``: workers kept alive).
- ``raw``: :class:`robust.io.TaskonomyLoader`, what a user runs: workers send the uint8/uint16 values, persist
  across epochs, and :func:`robust.io.decode_batch` converts each batch on the device (CUDA when present,
  pinned and non-blocking), returning the same float batch bit for bit.

Each with 2 workers and in the main process alone (0 workers). DataLoader workers use 1 torch thread each.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python -m pytest benchmarks/test_bench_reader.py \\
        --benchmark-columns=min,median,ops --benchmark-sort=name
"""

from __future__ import annotations

import gc
import os
import resource

import pytest
import torch
from torch.utils.data import DataLoader

from robust.io import TaskonomyDataset, TaskonomyLoader, ViewKey, collate_views, decode_batch, read_png, write_view

N_VIEWS = int(os.environ.get("BENCH_READER_VIEWS", "128"))
SIZE = 256
BATCH = 16
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


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


def _epoch(loader, device: str) -> int:
    n = 0
    for batch in loader:
        assert batch["rgb"].dtype == torch.float32 and batch["rgb"].device.type == device
        n += batch["rgb"].shape[0]
    if device == "cuda":
        torch.cuda.synchronize()
    return n


def _cpu_seconds() -> float:
    """CPU time of this process and its reaped children (DataLoader workers once shut down)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@pytest.mark.benchmark(group="reader rgb+depth 256², batches of 16")
@pytest.mark.parametrize("path, workers", [("float", 0), ("raw", 0), ("float", 2), ("float+persistent", 2), ("raw", 2)])
def test_reader_throughput(benchmark, root, path, workers, capsys):
    """Wall-clock views/s, plus CPU ms/view over all processes: the cost that sets views/s on idle cores."""
    ds = TaskonomyDataset(root, ["rgb", "depth_euclidean"])
    cpu0 = _cpu_seconds()
    if path == "raw":
        loader, device = TaskonomyLoader(ds, BATCH, device=DEVICE, num_workers=workers), DEVICE
    else:
        persistent = path == "float+persistent"
        loader = DataLoader(ds, BATCH, num_workers=workers, collate_fn=collate_views, persistent_workers=persistent)
        device = "cpu"
    rounds = 5
    n = benchmark.pedantic(_epoch, args=(loader, device), rounds=rounds, warmup_rounds=1, iterations=1)
    del loader  # shuts persistent workers down, so that their CPU time is counted
    gc.collect()
    cpu_ms = (_cpu_seconds() - cpu0) / (N_VIEWS * (rounds + 1)) * 1e3
    assert n == N_VIEWS
    views_per_s = N_VIEWS / benchmark.stats["mean"]
    benchmark.extra_info.update(views_per_s=views_per_s, cpu_ms_per_view=cpu_ms, device=device)
    with capsys.disabled():
        print(f"\n{path}-{workers}: {views_per_s:.0f} views/s wall, {cpu_ms:.2f} CPU ms/view (all processes)")


def _stages(root) -> dict:
    """One batch of 16 views through each stage of both paths, in the main process (1 thread)."""
    ds = TaskonomyDataset(root, ["rgb", "depth_euclidean"])
    raw = ds.as_raw()
    idx = range(BATCH)
    paths = [ds.index.files[ds.keys[i]][d] for i in idx for d in ("rgb", "depth_euclidean")]
    floats, raws = [ds[i] for i in idx], [raw[i] for i in idx]
    fb, rb = collate_views(floats), collate_views(raws)

    def to_shared(batch):  # what a worker's batch costs to cross into shared memory (the old path's IPC)
        return lambda: [v.clone().share_memory_() for k, v in batch.items() if k != "key"]

    return {
        "file read": lambda: [p.read_bytes() for p in paths],
        "png decode (+read)": lambda: [read_png(p) for p in paths],
        "float views ds[i]": lambda: [ds[i] for i in idx],
        "raw views": lambda: [raw[i] for i in idx],
        "collate float": lambda: collate_views(floats),
        "collate raw": lambda: collate_views(raws),
        "clone+shared memory float": to_shared(fb),
        "clone+shared memory raw": to_shared(rb),
        "decode_batch (cpu)": lambda: decode_batch(rb, "cpu"),
    }


STAGES = ["file read", "png decode (+read)", "float views ds[i]", "raw views", "collate float", "collate raw"]
STAGES += ["clone+shared memory float", "clone+shared memory raw", "decode_batch (cpu)"]


@pytest.mark.benchmark(group="reader stages, one batch of 16 views (rgb+depth 256²), 1 thread")
@pytest.mark.parametrize("stage", STAGES)
def test_reader_stage(benchmark, root, stage):
    torch.set_num_threads(1)
    benchmark.pedantic(_stages(root)[stage], rounds=5, warmup_rounds=1, iterations=1)
