"""Fused kernels for the hot corruptions (Triton on CUDA, numba on the CPU) and the dispatch that routes to them.

The pure-torch ops in :mod:`corruptions3d.functional` stay the reference. An op decorated with
``@fused_kernel("name")`` calls ``corruptions3d.kernels.<module>.<name>`` (same signature) when its first tensor
argument is on CUDA, triton is importable and ``ROBUST_DISABLE_TRITON`` is not set to ``1`` (set it to A/B the
reference on the GPU). It routes CPU tensors to the numba kernels of :data:`CPU_KERNELS` the same way
(``ROBUST_DISABLE_NUMBA=1`` runs the torch reference). Kernel modules are imported on first use, so CPU-only
installs never import triton.

Kernel entry points: :mod:`.ops` (per-pixel noises, sensor, fog, flash, lighting, HSV/contrast), :mod:`.defocus`
(``depth_defocus``), :mod:`.splat` (``splat_chunk``); :mod:`.philox` is the torch port of Triton's Philox used by
the tests. Compiled for the CPU: :mod:`.splat_cpu` (``splat_chunk``), :mod:`.poisson_cpu` (``poisson_inversion``),
:mod:`.zoom_cpu` (``zoom_mean``), :mod:`.conv_cpu` (``conv_separable``), :mod:`.pixelate_cpu` (``box_pixelate``),
:mod:`.noise_cpu` (``salt_and_pepper``, ``gaussian_noise``, ``speckle_noise``), :mod:`.random_cpu`
(``splitmix_uniform_``), :mod:`.defocus_cpu` (``depth_defocus``), :mod:`.blend_cpu` (``frost_blend``,
``snow_blend``, ``relight_ranked``), :mod:`.taps_cpu` (``tap_filter``), :mod:`.disk_cpu` (``disk_filter``),
:mod:`.plasma_cpu` (``plasma_fog``) and :mod:`.edges_cpu` (``liquid_levels``, ``edge_distance``,
``water_drops``); :mod:`.rows` holds their shared row loops.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["CPU_KERNELS", "KERNELS", "available", "cpu_available", "fused_kernel", "kernel"]

KERNELS = {
    **dict.fromkeys(
        (
            "gaussian_noise",
            "shot_noise",
            "impulse_noise",
            "speckle_noise",
            "iso_noise",
            "low_light",
            "color_quant",
            "fog_3d",
            "flash",
            "shadow",
            "multi_illumination",
            "brightness",
            "contrast",
            "saturate",
        ),
        "ops",
    ),
    "depth_defocus": "defocus",
    "splat_chunk": "splat",
}
"""Kernel name -> module in this package (Triton, CUDA tensors)."""
CPU_KERNELS = {
    "splat_chunk": "splat_cpu",
    "poisson_inversion": "poisson_cpu",
    "zoom_mean": "zoom_cpu",
    "conv_separable": "conv_cpu",
    "box_pixelate": "pixelate_cpu",
    "salt_and_pepper": "noise_cpu",
    "gaussian_noise": "noise_cpu",
    "speckle_noise": "noise_cpu",
    "frost_blend": "blend_cpu",
    "snow_blend": "blend_cpu",
    "relight_ranked": "blend_cpu",
    "tap_filter": "taps_cpu",
    "disk_filter": "disk_cpu",
    "plasma_fog": "plasma_cpu",
    "edge_distance": "edges_cpu",
    "water_drops": "edges_cpu",
    "liquid_levels": "edges_cpu",
    "depth_defocus": "defocus_cpu",
    "splitmix_uniform_": "random_cpu",
}
"""Kernel name -> module in this package (numba, CPU tensors)."""


@functools.cache
def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def available(t: torch.Tensor | None = None) -> bool:
    """Whether fused kernels run for ``t``: a CUDA tensor (or any CUDA device if ``t`` is None), triton
    importable, and ``ROBUST_DISABLE_TRITON`` not ``1``."""
    if os.environ.get("ROBUST_DISABLE_TRITON", "0") == "1" or not _importable("triton"):
        return False
    return t.is_cuda if t is not None else torch.cuda.is_available()


def cpu_available(t: torch.Tensor | None = None) -> bool:
    """Whether compiled CPU kernels run for ``t``: a CPU tensor (or any if ``t`` is None), numba importable, and
    ``ROBUST_DISABLE_NUMBA`` not ``1``."""
    if os.environ.get("ROBUST_DISABLE_NUMBA", "0") == "1" or not _importable("numba"):
        return False
    return t is None or t.device.type == "cpu"


def kernel(name: str, device_type: str = "cuda") -> Callable[..., Any]:
    """The fused implementation ``name`` for ``device_type`` (``cuda``: :data:`KERNELS`, ``cpu``:
    :data:`CPU_KERNELS`); imports its backend."""
    table = CPU_KERNELS if device_type == "cpu" else KERNELS
    if name not in table:
        raise KeyError(f"no fused {device_type} kernel {name!r}; known: {', '.join(table)}")
    return getattr(importlib.import_module(f"{__name__}.{table[name]}"), name)


def fused_kernel(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: route calls whose first tensor argument is on CUDA to the Triton kernel ``name`` (if it is in
    :data:`KERNELS`) and on the CPU to the numba kernel ``name`` (if it is in :data:`CPU_KERNELS`)."""
    if name not in KERNELS and name not in CPU_KERNELS:
        raise KeyError(f"no fused kernel {name!r}; known: {', '.join([*KERNELS, *CPU_KERNELS])}")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def dispatch(*args: Any, **kwargs: Any) -> Any:
            first = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
            if first is not None:
                if name in KERNELS and available(first):
                    return kernel(name)(*args, **kwargs)
                if name in CPU_KERNELS and cpu_available(first):
                    return kernel(name, "cpu")(*args, **kwargs)
            return fn(*args, **kwargs)

        dispatch.reference = fn  # the pure-torch op, e.g. for A/B comparisons
        return dispatch

    return deco
