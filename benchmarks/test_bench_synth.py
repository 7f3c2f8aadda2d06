"""Speed of robust.synth: one 256² view with every domain, next to the bare open3d ray casts it needs.

Target (issue 3): ≥ 20 views/s at 256² on 2 CPU cores. Run with
``python -m pytest benchmarks/test_bench_synth.py --benchmark-only``; the machine is shared, so numbers are noisy:
the bare ray casts beside the render show how loaded it was.
"""

from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest

from robust.synth import render_view, sample_point_views, sample_scene
from robust.synth.mesh import compile_scene

SIZE = 256
ROUNDS = 60
"""Many rounds: the shared machine's load moves single renders by ±30 %; compare medians."""


@pytest.fixture(scope="module")
def setup():
    scene = sample_scene(0)
    cam = sample_point_views(scene, 0, 1)[0]
    render_view(scene, cam, SIZE)  # compile and cache the ray-casting scene
    return scene, cam


def test_render_view_256(benchmark, setup):
    scene, cam = setup
    out = benchmark.pedantic(render_view, (scene, cam, SIZE), rounds=ROUNDS, warmup_rounds=3)
    assert out["relighting"].shape == (10, SIZE, SIZE)


def test_open3d_rays_only_256(benchmark, setup):
    """Lower bound: the primary cast plus the 11 × 256² shadow tests (against the solids inside the room, as
    ``render_view`` does), without any shading or features."""
    scene, cam = setup
    rs = compile_scene(scene)
    rng = np.random.default_rng(0)
    origin = np.asarray(cam.location, np.float32)
    dirs = rng.normal(size=(SIZE * SIZE, 3)).astype(np.float32)
    primary = o3d.core.Tensor(np.concatenate([np.broadcast_to(origin, dirs.shape), dirs], 1))
    hits = rs.raycaster.cast_rays(primary)["t_hit"].numpy()
    pts = origin + np.where(np.isfinite(hits), hits, 0)[:, None] * dirs * 0.99
    shadow = np.concatenate([np.tile(pts, (11, 1)), np.tile(origin - pts, (11, 1))], 1).astype(np.float32)
    shadow = o3d.core.Tensor(shadow)

    def cast():
        rs.raycaster.cast_rays(primary)
        return rs.occluders.test_occlusions(shadow, tfar=1.0)

    benchmark.pedantic(cast, rounds=ROUNDS, warmup_rounds=3)
