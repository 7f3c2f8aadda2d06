"""The whole corruption suite per 512² image: ``robust.corrupt`` vs one call per image × corruption × severity.

Issue target: every corruption × 5 severities, video codecs aside (``--corruptions fast``), in under 10 s per
512² image, PNG writing included. Data: ``BENCH_SUITE_N`` synthetic views (default 2) of ``BENCH_SUITE_SIZE`` px
(default 512) rendered by ``robust.synth`` (they carry scene meshes, so occlusion and scale run too).

- ``robust_corrupt``: :func:`robust.corrupt.corrupt_dataset` as the CLI runs it (one batch, all severities of a
  corruption from one call, background PNG writers).
- ``per_call``: the reference scripts' structure: for each image, corruption and severity one call of
  :func:`corruptions3d.corrupt` on that image and one synchronous PNG write. ``extra_info["seconds"]`` breaks its
  time down per corruption (all severities).

Both columns run after a warm-up on a 32² view (see ``suite_root``). ``extra_info["seconds_per_image"]`` holds
the result. Run:

    python -m pytest benchmarks/test_bench_suite.py --benchmark-only --benchmark-columns=mean,rounds
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import corruptions3d
from robust.corrupt import CorruptConfig, _derive, _make_dataset, corrupt_dataset, image_seed, output_name
from robust.io import collate_views
from robust.synth import ensure_dataset

N_VIEWS = int(os.environ.get("BENCH_SUITE_N", "2"))
SIZE = int(os.environ.get("BENCH_SUITE_SIZE", "512"))
SEVERITIES = (1, 2, 3, 4, 5)


@pytest.fixture(scope="module")
def suite_root(tmp_path_factory) -> Path:
    """The benchmark data, after one untimed run of the whole suite on a 32² view: the per-process costs (lazy
    imports, loading the compiled numba kernels) are paid once per run, not once per image."""
    tmp = tmp_path_factory.mktemp("suite")
    tiny = ensure_dataset(tmp / "tiny", 1, 1, 1, 32, seed=0)
    corrupt_dataset(CorruptConfig(data_root=str(tiny), out=str(tmp / "tiny_out"), corruptions="fast", device="cpu"))
    return ensure_dataset(tmp / "synth", 1, 1, N_VIEWS, SIZE, seed=0)


def test_bench_suite_robust_corrupt(benchmark, suite_root, tmp_path):
    benchmark.group = f"whole suite, no video ({N_VIEWS}x{SIZE}²)"
    cfg = CorruptConfig(
        data_root=str(suite_root), out=str(tmp_path / "out"), corruptions="fast", batch_size=N_VIEWS,
        resume=False, workers=2, device="cpu",
    )  # fmt: skip
    manifest = benchmark.pedantic(lambda: corrupt_dataset(cfg), rounds=1, iterations=1)
    assert not manifest.get("skipped"), manifest.get("skipped")
    n = len(corruptions3d.list_corruptions(video=False)) * len(SEVERITIES) * N_VIEWS
    assert len(list((tmp_path / "out").rglob("*.png"))) == n
    benchmark.extra_info["seconds_per_image"] = benchmark.stats.stats.mean / N_VIEWS


def test_bench_suite_per_call(benchmark, suite_root, tmp_path):
    benchmark.group = f"whole suite, no video ({N_VIEWS}x{SIZE}²)"
    names = corruptions3d.list_corruptions(video=False)
    cfg = CorruptConfig(data_root=str(suite_root), corruptions="fast")
    ds, available = _make_dataset(cfg, names)
    assert "scene" in available
    from robust.scene_renderer import SynthSceneRenderer

    seconds: dict[str, float] = dict.fromkeys(names, 0.0)

    def run() -> None:
        for i, key in enumerate(ds.keys):
            sample = collate_views([ds[i]])
            sample.pop("key", None)
            sample["scene"] = SynthSceneRenderer.from_dataset(suite_root, [key])
            batch = _derive(sample, names)
            for name in names:
                t0 = time.perf_counter()
                for s in SEVERITIES:
                    y = corruptions3d.corrupt(batch, name, severity=s, generator=image_seed(0, output_name(key), name))
                    a = (y[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
                    Image.fromarray(np.ascontiguousarray(a)).save(tmp_path / f"{name}_{s}_{i}.png")
                seconds[name] += time.perf_counter() - t0

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info["seconds_per_image"] = benchmark.stats.stats.mean / N_VIEWS
    benchmark.extra_info["seconds"] = {k: round(v / N_VIEWS, 3) for k, v in seconds.items()}
