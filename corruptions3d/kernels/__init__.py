"""Fused Triton kernels for the hot corruptions, and the dispatch that routes CUDA tensors to them.

The pure-torch ops in :mod:`corruptions3d.functional` stay the reference and the CPU path. An op decorated with
``@cuda_kernel("name")`` calls ``corruptions3d.kernels.<module>.<name>`` (same signature) when its first tensor
argument is on CUDA, triton is importable and ``ROBUST_DISABLE_TRITON`` is not set to ``1`` (set it to A/B the
reference on the GPU). Kernel modules are imported on first use, so CPU-only installs never import triton.

Kernel entry points: :mod:`.ops` (per-pixel noises, sensor, fog, flash, lighting, HSV/contrast),
:mod:`.defocus` (``depth_defocus``), :mod:`.splat` (``splat_chunk``); :mod:`.philox` is the torch port of
Triton's Philox used by the tests.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["KERNELS", "available", "cuda_kernel", "kernel"]

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
"""Kernel name -> module in this package."""


@functools.cache
def _triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def available(t: torch.Tensor | None = None) -> bool:
    """Whether fused kernels run for ``t``: a CUDA tensor (or any CUDA device if ``t`` is None), triton
    importable, and ``ROBUST_DISABLE_TRITON`` not ``1``."""
    if os.environ.get("ROBUST_DISABLE_TRITON", "0") == "1" or not _triton_importable():
        return False
    return t.is_cuda if t is not None else torch.cuda.is_available()


def kernel(name: str) -> Callable[..., Any]:
    """The fused implementation ``name`` (a key of :data:`KERNELS`); imports triton."""
    if name not in KERNELS:
        raise KeyError(f"no fused kernel {name!r}; known: {', '.join(KERNELS)}")
    return getattr(importlib.import_module(f"{__name__}.{KERNELS[name]}"), name)


def cuda_kernel(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: route calls whose first tensor argument is on CUDA to the fused kernel ``name``."""
    if name not in KERNELS:
        raise KeyError(f"no fused kernel {name!r}; known: {', '.join(KERNELS)}")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def dispatch(*args: Any, **kwargs: Any) -> Any:
            first = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
            if first is not None and available(first):
                return kernel(name)(*args, **kwargs)
            return fn(*args, **kwargs)

        dispatch.reference = fn  # the pure-torch op, e.g. for A/B comparisons
        return dispatch

    return deco
