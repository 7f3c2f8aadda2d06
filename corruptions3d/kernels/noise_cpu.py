"""ImageNet-C noises compiled for the CPU, per image: ``salt_and_pepper`` and the additive ``gaussian_noise`` /
``speckle_noise`` of :mod:`corruptions3d.functional.noise`.

Each value's 31-bit draw is computed where it is used, from the counter-based stream of
:func:`corruptions3d.random.random_bits` (:func:`corruptions3d.kernels.random_cpu.splitmix64` of its index), then
clipped or replaced in the same pass: bit-identical to the torch ops, without the batch-sized draw and mask
tensors. Gaussian and speckle noise fill each image's normals from its own generator (the torch ops' stream)
and add, scale and clip them in one pass, in the torch ops' order of float operations: bit-identical. Images run
on the threads of :func:`corruptions3d.parallel.parallel_map`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numba
import numpy as np
import torch

from corruptions3d import memory
from corruptions3d.functional import noise
from corruptions3d.kernels.random_cpu import splitmix64
from corruptions3d.parallel import parallel_map
from corruptions3d.random import Seeds, generators, mix

__all__ = ["gaussian_noise", "salt_and_pepper", "speckle_noise"]

Params = Mapping[str, Any] | None


@numba.njit(nogil=True, cache=True)
def _salt_and_pepper(x, key, low, high, out):  # pragma: no cover
    for i in range(x.shape[0]):
        bits = np.int64(splitmix64(key, i) >> np.uint64(33))
        out[i] = 0 if bits < low else (1 if bits > high else min(max(x[i], 0), 1))


def salt_and_pepper(rgb: torch.Tensor, seeds: torch.Tensor, cut: torch.Tensor) -> torch.Tensor:
    """Compiled ``corruptions3d.functional.noise.salt_and_pepper``: same arguments and result (CPU tensors)."""
    src = rgb.contiguous()
    out = memory.empty_like(src)
    cuts = cut.tolist()

    def image(i: int, seed: int) -> None:
        key = np.uint64(mix(seed, 0))
        _salt_and_pepper(src[i].view(-1).numpy(), key, cuts[i], 2**31 - 1 - cuts[i], out[i].view(-1).numpy())

    parallel_map(image, range(len(cuts)), seeds.tolist())
    return out


@numba.njit(nogil=True, cache=True)
def _add_noise(x, n, sigma, multiplicative):  # pragma: no cover
    """``n <- clip(x + x·(σ·n))`` (speckle) or ``clip(x + σ·n)`` (gaussian), flat arrays."""
    for i in range(x.shape[0]):
        t = n[i] * sigma
        n[i] = min(max(x[i] + (x[i] * t if multiplicative else t), 0), 1)


def _noisy(
    rgb: torch.Tensor, severity: int | None, params: Params, generator: Seeds, multiplicative: bool
) -> torch.Tensor:
    op = noise.speckle_noise if multiplicative else noise.gaussian_noise
    if not rgb.is_contiguous():
        return op.reference(rgb, severity, params, generator)
    p, seeds = noise._setup(
        rgb, noise.SPECKLE_NOISE if multiplicative else noise.GAUSSIAN_NOISE, severity, params, generator
    )
    out = memory.empty_like(rgb)
    sigma = p["sigma"].to(rgb.dtype).tolist()
    dtype = rgb.numpy().dtype.type

    def image(i: int, g: torch.Generator) -> None:
        n = out[i].normal_(generator=g)
        _add_noise(rgb[i].view(-1).numpy(), n.view(-1).numpy(), dtype(sigma[i]), multiplicative)

    parallel_map(image, range(len(sigma)), generators(seeds, "cpu"))
    return out


def gaussian_noise(
    rgb: torch.Tensor, severity: int | None = None, params: Params = None, generator: Seeds = None
) -> torch.Tensor:
    """Compiled ``corruptions3d.functional.noise.gaussian_noise``: same arguments and result (CPU tensors)."""
    return _noisy(rgb, severity, params, generator, multiplicative=False)


def speckle_noise(
    rgb: torch.Tensor, severity: int | None = None, params: Params = None, generator: Seeds = None
) -> torch.Tensor:
    """Compiled ``corruptions3d.functional.noise.speckle_noise``: same arguments and result (CPU tensors)."""
    return _noisy(rgb, severity, params, generator, multiplicative=True)
