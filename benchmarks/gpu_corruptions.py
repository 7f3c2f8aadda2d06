"""Images/s per corruption: fused Triton kernels vs the torch reference on the GPU vs the CPU reference.

Every row runs in one process on the same batch (the real Taskonomy sample view, tiled to ``--batch`` images and
resized to each ``--sizes`` entry), severity 3. The GPU reference is the same registered op with
``ROBUST_DISABLE_TRITON=1``; the fused column calls the op with the kernels enabled. With ``--suite-root`` it also
times the whole dataset CLI (``python -m robust.corrupt --device cuda``, PNG writing overlapped by its writer
threads) on that folder. Prints a Markdown table.

    python benchmarks/gpu_corruptions.py                      # on the GPU machine
    python benchmarks/gpu_corruptions.py --device cpu --quick # smoke check without a GPU
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

import corruptions3d
import corruptions3d.kernels as kernels
from corruptions3d.kernels import KERNELS
from robust.io import TaskonomyDataset, collate_views

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "taskonomy_sample"
CORRUPTIONS = (
    *(name for name, module in KERNELS.items() if module == "ops"),  # every fused pointwise op
    "near_focus",  # fused depth_defocus
    "far_focus",
    "xy_motion_blur",  # fused splat_chunk
)
DOMAINS = ("rgb", "depth_euclidean", "reshading", "relighting")


def sample_batch(n: int, size: int, device: str) -> dict[str, torch.Tensor]:
    """The sample view tiled to ``n`` images of ``size``² on ``device``."""
    view = collate_views([TaskonomyDataset(SAMPLE, list(DOMAINS))[0]])
    out = {}
    for k in DOMAINS:
        v = view[k].float()
        mode = "nearest" if k == "depth_euclidean" else "area"
        out[k] = F.interpolate(v, size=(size, size), mode=mode).expand(n, -1, -1, -1).contiguous().to(device)
    return out


def images_per_s(fn: Callable[[], torch.Tensor], n: int, repeats: int, device: str) -> float:
    """Throughput of ``fn`` (one warm-up call, then the best of ``repeats``)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return n / best


def timed(name: str, batch: dict[str, torch.Tensor], fused: bool, n: int, repeats: int, device: str) -> float:
    os.environ["ROBUST_DISABLE_TRITON"] = "0" if fused else "1"
    op = corruptions3d.get_corruption(name)
    return images_per_s(lambda: op(batch, severity=3, generator=0), n, repeats, device)


def suite_seconds(root: Path, device: str, corruptions: str) -> float:
    """Wall time of ``python -m robust.corrupt`` over ``root`` (image-folder layout) at severity 3."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "robust.corrupt", "--dataset", "folder", "--data-root", str(root), "--out", out]
        cmd += ["--device", device, "--corruptions", corruptions, "--severities", "3", "--no-resume"]
        t = time.perf_counter()
        subprocess.run(cmd, check=True)
        return time.perf_counter() - t


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--sizes", default="512,224", help="comma list of square image sizes (px)")
    parser.add_argument("--batch", type=int, default=32, help="images per call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--corruptions", default=",".join(CORRUPTIONS))
    parser.add_argument("--quick", action="store_true", help="smoke check: 2 images of 64², 1 repeat, 3 ops")
    parser.add_argument("--suite-root", type=Path, help="image folder (class/*.png) for the whole-suite timing")
    parser.add_argument("--suite-corruptions", default="fast")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here (use --device cpu --quick for a smoke check)")
    names = args.corruptions.split(",")
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.quick:
        names, sizes, args.batch, args.repeats = ["gaussian_noise", "fog_3d", "brightness"], [64], 2, 1
    fused_ok = args.device == "cuda" and kernels.available()
    cpu_batch = min(args.batch, 8)
    print("| corruption | size | torch ref " + args.device + " (img/s) | fused (img/s) | torch ref cpu (img/s) |")
    print("|---|---|---|---|---|")
    for size in sizes:
        batch = sample_batch(args.batch, size, args.device)
        on_cpu = sample_batch(cpu_batch, size, "cpu")
        for name in names:
            ref = timed(name, batch, False, args.batch, args.repeats, args.device)
            fused = timed(name, batch, True, args.batch, args.repeats, args.device) if fused_ok else float("nan")
            cpu = timed(name, on_cpu, False, cpu_batch, args.repeats, "cpu")
            print(f"| {name} | {size} | {ref:.1f} | {fused:.1f} | {cpu:.1f} |")
    if args.suite_root is not None:
        n = sum(1 for p in args.suite_root.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        for disable in ("1", "0"):
            os.environ["ROBUST_DISABLE_TRITON"] = disable
            s = suite_seconds(args.suite_root, args.device, args.suite_corruptions)
            label = "torch ref" if disable == "1" else "fused"
            print(f"\nwhole suite ({args.suite_corruptions}, severity 3, {n} images, PNG written, {label}): {s:.1f} s")


if __name__ == "__main__":
    main()
