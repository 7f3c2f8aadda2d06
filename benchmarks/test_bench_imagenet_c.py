"""Batched ImageNet-C ops vs ``imagecorruptions.corrupt`` image by image, side by side.

One pytest-benchmark group per corruption: ours on a ``(N,3,S,S)`` batch in one call vs the installed
``imagecorruptions`` 1.1.2 (through ``benchmarks/imagecorruptions_compat.py``) on the same N uint8 images. Images: the
real Taskonomy sample view resized to ``BENCH_IMAGENET_C_SIZE`` px (default 512), tiled ``BENCH_IMAGENET_C_N`` times
(default 16), severity 3. ``extra_info["images_per_s"]`` holds the throughput. Restrict with ``-k``; e.g. a quick run:

    BENCH_IMAGENET_C_N=4 BENCH_IMAGENET_C_SIZE=256 python -m pytest benchmarks/test_bench_imagenet_c.py \
        --benchmark-only --benchmark-columns=mean,rounds --benchmark-group-by=group
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmarks.imagecorruptions_compat import load_imagecorruptions
from corruptions3d import functional as Fn
from corruptions3d.functional.imagenet_c import IMAGENET_C
from robust.io import TaskonomyDataset, collate_views

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "taskonomy_sample"
N_IMAGES = int(os.environ.get("BENCH_IMAGENET_C_N", "16"))
SIZE = int(os.environ.get("BENCH_IMAGENET_C_SIZE", "512"))
ROUNDS = int(os.environ.get("BENCH_IMAGENET_C_ROUNDS", "1"))
SEVERITY = 3


@pytest.fixture(scope="module")
def images() -> tuple[torch.Tensor, list[np.ndarray]]:
    if not SAMPLE.is_dir():
        pytest.fail(f"the real Taskonomy sample is missing at {SAMPLE}")
    rgb = collate_views([TaskonomyDataset(SAMPLE, ["rgb"])[0]])["rgb"]
    if rgb.shape[-1] != SIZE:
        rgb = F.interpolate(rgb, size=(SIZE, SIZE), mode="area")
    rgb = torch.round(rgb.clamp(0, 1) * 255) / 255
    u8 = (rgb[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    return rgb.expand(N_IMAGES, -1, -1, -1).contiguous(), [u8.copy() for _ in range(N_IMAGES)]


@pytest.fixture(scope="module")
def reference():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_imagecorruptions()


@pytest.mark.parametrize("impl", ["ours_batched", "imagecorruptions"])
@pytest.mark.parametrize("name", IMAGENET_C)
def test_bench(benchmark, images, reference, name, impl):
    benchmark.group = f"imagenet_c {name} ({N_IMAGES}x{SIZE}²)"
    rgb, u8 = images
    if impl == "ours_batched":
        fn = getattr(Fn, name)
        fn(rgb[:1], severity=SEVERITY, generator=0)  # warm caches (frost textures, kernels)

        def run():
            return fn(rgb, severity=SEVERITY, generator=0)
    else:

        def run():
            return [reference.corrupt(img, SEVERITY, name) for img in u8]

    benchmark.pedantic(run, rounds=ROUNDS, iterations=1)
    benchmark.extra_info["images_per_s"] = N_IMAGES / benchmark.stats.stats.mean
