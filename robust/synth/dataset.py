"""Generate the synthetic Taskonomy dataset: scenes per building, fixated views per point, all domains on disk.

Layout: ``<out>/<building>/scene.json`` and ``<out>/<building>/<domain>/point_P_view_V_domain_<domain>.png``
(plus ``point_info/..._fixatedpose.json``), written with :func:`robust.io.write_view`. Same arguments, same
bytes; views whose files all exist are skipped, so an interrupted run resumes.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import torch

from corruptions3d.random import mix
from robust.io import POINT_INFO, ViewKey, domain_path, write_view
from robust.runs import progress
from robust.synth.render import DOMAINS, RELIGHT_COUNT, render_view
from robust.synth.scene import sample_scene, save_scene
from robust.synth.views import sample_point_views


@dataclass
class SynthConfig:
    """Render procedural indoor scenes into the Taskonomy format (all domains, including 10 relightings)."""

    out: str = field(metadata={"help": "output root; buildings go to OUT/<building>/<domain>/"})
    buildings: int = field(default=2, metadata={"help": "number of buildings (scenes)"})
    points: int = field(default=4, metadata={"help": "fixation points per building"})
    views: int = field(default=3, metadata={"help": "views (cameras) per point"})
    size: int = field(default=256, metadata={"help": "image side in pixels"})
    seed: int = field(default=0, metadata={"help": "master seed: same seed, byte-identical files"})
    preview: bool = field(default=False, metadata={"help": "write OUT/preview.png, a contact sheet of one view"})
    workers: int = field(default=1, metadata={"help": "worker processes (one point per task)"})

    def __post_init__(self) -> None:
        check_counts(self.buildings, self.points, self.views, self.size, self.workers)


def check_counts(buildings: int, points: int, views: int, size: int, workers: int = 1) -> None:
    """Raise ``ValueError`` naming the first argument that is not a positive integer."""
    for name, v in (("buildings", buildings), ("points", points), ("views", views), ("size", size)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"--{name} must be a positive integer, got {v!r}")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"--workers must be a positive integer, got {workers!r}")


def building_name(b: int) -> str:
    return f"synth{b:03d}"


def building_seed(seed: int, b: int) -> int:
    return mix(seed, b, 0x5EED) % 2**31


def view_files(out: str | os.PathLike, key: ViewKey) -> list[Path]:
    """Every file written for one view (the resume check)."""
    files = [domain_path(out, key, d) for d in DOMAINS if d != "relighting"]
    files += [domain_path(out, key, "relighting", k) for k in range(RELIGHT_COUNT)]
    return [*files, domain_path(out, key, POINT_INFO)]


def _keys(buildings: int, points: int, views: int) -> list[ViewKey]:
    return [ViewKey(building_name(b), p, v) for b in range(buildings) for p in range(points) for v in range(views)]


def _render_point(out: str, b: int, point: int, views: int, size: int, seed: int) -> int:
    """Render and write the missing views of one point; returns how many views it wrote."""
    building = building_name(b)
    keys = [ViewKey(building, point, v) for v in range(views)]
    todo = [k for k in keys if not all(f.exists() for f in view_files(out, k))]
    if not todo:
        return 0
    scene = sample_scene(building_seed(seed, b))
    cameras = sample_point_views(scene, point, views)
    for key in todo:
        cam = cameras[key.view]
        sample = render_view(scene, cam, size)
        info = cam.to_point_info(size, building)
        info["relighting_lamps"] = sample["lamps"].tolist()
        write_view(out, key, {d: sample[d] for d in DOMAINS}, info)
    return len(todo)


def _worker_init() -> None:
    torch.set_num_threads(1)  # this worker process only: parallelism comes from the pool


def generate(
    out: str | os.PathLike,
    buildings: int = 2,
    points: int = 4,
    views: int = 3,
    size: int = 256,
    seed: int = 0,
    workers: int = 1,
) -> list[ViewKey]:
    """Render ``buildings × points × views`` views of ``size``² into ``out``; returns every view key.

    Deterministic in ``(buildings index, point, view, size, seed)``; existing complete views are kept.
    """
    check_counts(buildings, points, views, size, workers)
    out = str(out)
    for b in range(buildings):
        save_scene(out, building_name(b), sample_scene(building_seed(seed, b)))
    jobs = [(out, b, p, views, size, seed) for b in range(buildings) for p in range(points)]
    bar = progress(desc="robust.synth views", total=len(jobs) * views, unit="view")
    if workers == 1:
        for job in jobs:
            _render_point(*job)
            bar.update(views)
    else:
        ctx = get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init) as pool:
            for fut in [pool.submit(_render_point, *job) for job in jobs]:
                fut.result()
                bar.update(views)
    bar.close()
    return _keys(buildings, points, views)


def ensure_dataset(
    root: str | os.PathLike,
    buildings: int = 2,
    points: int = 2,
    views: int = 3,
    size: int = 128,
    seed: int = 0,
    workers: int = 1,
) -> Path:
    """Generate the dataset under ``root`` unless every view's files already exist; returns ``root``."""
    check_counts(buildings, points, views, size, workers)
    if not all(f.exists() for k in _keys(buildings, points, views) for f in view_files(root, k)):
        generate(root, buildings, points, views, size, seed, workers)
    return Path(root)
