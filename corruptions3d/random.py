"""Per-image random streams: results depend on (image, parameters, seed), never on the batch.

Every stochastic corruption turns its ``generator`` argument into one int64 seed per image
(:func:`as_seeds`) and draws each image's numbers from its own ``torch.Generator`` seeded by
``mix(seed, stream)``. An image therefore gets the same output alone or anywhere in a batch, as long as
it gets the same seed. The loop over images only creates streams; every draw is a vectorised call.
"""

from __future__ import annotations

import torch

Seeds = torch.Generator | int | torch.Tensor | None
"""What ``generator=`` accepts: a ``torch.Generator`` (draws B seeds), an int (image i gets
``mix(seed, i)``), an int64 ``(B,)`` tensor of per-image seeds, or ``None`` (the global torch RNG)."""

_MASK64 = (1 << 64) - 1


def mix(*values: int) -> int:
    """Deterministic 63-bit hash of integers (splitmix64 chain); used to derive independent seeds."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) & _MASK64)) & _MASK64
        h = (h + 0x9E3779B97F4A7C15) & _MASK64
        z = h
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        h = z ^ (z >> 31)
    return h & ((1 << 63) - 1)


def as_seeds(generator: Seeds, batch_size: int) -> torch.Tensor:
    """Per-image int64 seeds ``(B,)`` on the CPU."""
    if isinstance(generator, torch.Tensor):
        if generator.dtype != torch.int64 or generator.shape != (batch_size,):
            raise ValueError(f"per-image seeds must be an int64 tensor of shape ({batch_size},)")
        return generator.cpu()
    if isinstance(generator, bool):
        raise TypeError("generator must be a torch.Generator, int, int64 tensor or None")
    if isinstance(generator, int):
        return torch.tensor([mix(generator, i) for i in range(batch_size)], dtype=torch.int64)
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randint(0, 2**62, (batch_size,), generator=generator, dtype=torch.int64)
    raise TypeError(f"generator must be a torch.Generator, int, int64 tensor or None, got {type(generator)}")


def generators(seeds: torch.Tensor, device: torch.device | str, stream: int = 0) -> list[torch.Generator]:
    """One generator per image on ``device``, seeded by ``mix(seed, stream)``."""
    device = torch.device(device)
    return [torch.Generator(device=device).manual_seed(mix(int(s), stream)) for s in seeds.tolist()]


def _draw(fn, seeds, shape, device, dtype, stream) -> torch.Tensor:
    out = torch.empty((len(seeds), *shape), device=device, dtype=dtype)
    for i, g in enumerate(generators(seeds, device, stream)):
        fn(out[i], g)
    return out


def randn(seeds: torch.Tensor, shape: tuple[int, ...], device, dtype=torch.float32, stream: int = 0) -> torch.Tensor:
    """Standard normal ``(B,*shape)``, image i from its own stream."""
    return _draw(lambda o, g: o.normal_(generator=g), seeds, shape, device, dtype, stream)


def rand(seeds: torch.Tensor, shape: tuple[int, ...], device, dtype=torch.float32, stream: int = 0) -> torch.Tensor:
    """Uniform [0,1) ``(B,*shape)``, image i from its own stream."""
    return _draw(lambda o, g: o.uniform_(generator=g), seeds, shape, device, dtype, stream)


def uniform(
    seeds: torch.Tensor, low: float, high: float, shape: tuple[int, ...] = (), device="cpu", stream: int = 0
) -> torch.Tensor:
    """Uniform [low, high) ``(B,*shape)`` (e.g. one random angle per image: ``shape=()``)."""
    return low + (high - low) * rand(seeds, shape, device, torch.float32, stream)


def poisson(rates: torch.Tensor, seeds: torch.Tensor, stream: int = 0) -> torch.Tensor:
    """Poisson samples with per-element ``rates`` ``(B,...)``; image i from its own stream."""
    gens = generators(seeds, rates.device, stream)
    return torch.stack([torch.poisson(rates[i], generator=g) for i, g in enumerate(gens)])


def permutation(seeds: torch.Tensor, n: int, stream: int = 0) -> torch.Tensor:
    """A random permutation of ``range(n)`` per image, ``(B,n)`` int64 on the CPU."""
    return torch.stack([torch.randperm(n, generator=g) for g in generators(seeds, "cpu", stream)])
