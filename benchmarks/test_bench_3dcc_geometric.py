"""Camera-motion 3DCC: batched splatting motion blur vs a per-image, frame-by-frame loop; video time split.

- ``xy_motion_blur`` / ``z_motion_blur`` severity 5 (60 / 38 frames) on ``BENCH_GEO_N`` images (default 2) of
  ``BENCH_GEO_SIZE`` px (default 512): ``batched`` renders all frames of all images in chunked batched calls and
  accumulates the mean (compiled CPU kernel, :mod:`corruptions3d.kernels.splat_cpu`); ``batched_torch_ops`` is the
  same with the torch reference ops (``ROBUST_DISABLE_NUMBA=1``); ``per_image`` is the reference's structure (no
  network): for each image, for each frame, render one view, convert to uint8 and average in numpy.
- all five severities: ``all_severities`` renders each path once (``Corruption.apply_severities``, prefix means of
  the same frames); ``per_severity`` calls the op once per severity (five renders of overlapping frame prefixes).
- ``h265_crf`` severity 3 on one image: ``extra_info`` splits the time into the clip rendering and the codec.

    python -m pytest benchmarks/test_bench_3dcc_geometric.py --benchmark-only \
        --benchmark-columns=mean,stddev,rounds --benchmark-group-by=group
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import corruptions3d
from corruptions3d.functional import video
from corruptions3d.functional.motion import motion_camera, motion_path
from corruptions3d.geometry import fill_invalid_depth
from corruptions3d.splatting import render_views
from robust.io import TaskonomyDataset, collate_views

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "taskonomy_sample"
N_IMAGES = int(os.environ.get("BENCH_GEO_N", "2"))
SIZE = int(os.environ.get("BENCH_GEO_SIZE", "512"))
SEVERITY = 5
KINDS = {"xy_motion_blur": "xy", "z_motion_blur": "z"}


@pytest.fixture(scope="module")
def bench_batch() -> dict[str, torch.Tensor]:
    if not SAMPLE.is_dir():
        pytest.fail(f"the real Taskonomy sample is missing at {SAMPLE}")
    batch = collate_views([TaskonomyDataset(SAMPLE, ["rgb", "depth_euclidean"])[0]])
    out = {}
    for k, mode in (("rgb", "area"), ("depth_euclidean", "nearest")):
        v = batch[k] if batch[k].shape[-1] == SIZE else F.interpolate(batch[k], size=(SIZE, SIZE), mode=mode)
        out[k] = v.expand(N_IMAGES, *v.shape[1:]).contiguous()
    tiny = {k: v[:1, :, :16, :16] for k, v in out.items()}
    corruptions3d.corrupt(tiny, "xy_motion_blur", severity=1)  # compile (or load) the numba kernel before timing
    return out


def per_image_motion_blur(name: str, rgb: torch.Tensor, depth: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """Reference structure: one image and one frame at a time, uint8 frames averaged in numpy, truncated."""
    frames = int(corruptions3d.get_corruption(name).severities["frames"][SEVERITY - 1])
    outs = []
    for i in range(rgb.shape[0]):
        x, d = rgb[i : i + 1], fill_invalid_depth(depth[i : i + 1])
        k = motion_camera(x, None)
        rot, t = motion_path(KINDS[name], x, d, k, seeds[i : i + 1], torch.ones(1))
        acc = np.zeros((SIZE, SIZE, 3))
        for f in range(frames):
            view = render_views(x, d, k, rot[:, f : f + 1], t[:, f : f + 1])[0, 0]
            acc += (view.permute(1, 2, 0).numpy() * 255).clip(0, 255).astype(np.uint8)
        outs.append(torch.from_numpy((acc / frames).astype(np.uint8)).permute(2, 0, 1).float() / 255)
    return torch.stack(outs)


@pytest.mark.parametrize("impl", ["batched", "batched_torch_ops", "per_image"])
@pytest.mark.parametrize("name", list(KINDS))
def test_bench_motion_blur(benchmark, bench_batch, name, impl, monkeypatch):
    benchmark.group = f"{name} s{SEVERITY} ({N_IMAGES}x{SIZE}²)"
    seeds = torch.arange(N_IMAGES, dtype=torch.int64)
    monkeypatch.setenv("ROBUST_DISABLE_NUMBA", "1" if impl == "batched_torch_ops" else "0")
    if impl.startswith("batched"):
        fn = lambda: corruptions3d.corrupt(bench_batch, name, severity=SEVERITY, generator=seeds)  # noqa: E731
    else:
        fn = lambda: per_image_motion_blur(name, bench_batch["rgb"], bench_batch["depth_euclidean"], seeds)  # noqa: E731
    out = benchmark.pedantic(fn, rounds=1, iterations=1, warmup_rounds=0)
    assert out.shape == bench_batch["rgb"].shape
    benchmark.extra_info["s_per_image"] = benchmark.stats.stats.mean / N_IMAGES


@pytest.mark.parametrize("impl", ["all_severities", "per_severity"])
@pytest.mark.parametrize("name", list(KINDS))
def test_bench_motion_blur_all_severities(benchmark, bench_batch, name, impl):
    benchmark.group = f"{name} severities 1-5 ({N_IMAGES}x{SIZE}²)"
    seeds = torch.arange(N_IMAGES, dtype=torch.int64)
    entry = corruptions3d.get_corruption(name)
    if impl == "all_severities":
        fn = lambda: entry.apply_severities(bench_batch, range(1, 6), generator=seeds)  # noqa: E731
    else:
        fn = lambda: torch.stack([entry(bench_batch, severity=s, generator=seeds) for s in range(1, 6)], 1)  # noqa: E731
    out = benchmark.pedantic(fn, rounds=1, iterations=1, warmup_rounds=0)
    assert out.shape == (N_IMAGES, 5, *bench_batch["rgb"].shape[1:])
    benchmark.extra_info["s_per_image"] = benchmark.stats.stats.mean / N_IMAGES


def test_bench_h265_crf_split(benchmark, bench_batch):
    benchmark.group = f"h265_crf s3 (1x{SIZE}²): render vs codec"
    rgb, depth = bench_batch["rgb"][:1], bench_batch["depth_euclidean"][:1]
    seeds = torch.zeros(1, dtype=torch.int64)
    times = {}

    def run():
        t0 = time.perf_counter()
        clip = video.motion_clip(rgb, fill_invalid_depth(depth), seeds, None, 60)[0]
        t1 = time.perf_counter()
        out = video._transcode_h265(clip, {"crf": str(video.CRF_SEVERITIES["crf"][2])})
        times.update(render_s=t1 - t0, codec_s=time.perf_counter() - t1)
        return out

    out = benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    assert out.shape == (SIZE, SIZE, 3)
    benchmark.extra_info.update(times)
