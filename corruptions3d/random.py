"""Per-image random streams: results depend on (image, parameters, seed), never on the batch.

Every stochastic corruption turns its ``generator`` argument into one int64 seed per image
(:func:`as_seeds`) and draws each image's numbers from its own stream keyed by ``mix(seed, stream)``: a
``torch.Generator`` seeded with it, or, for salt-and-pepper bits and the Poisson sampler's uniforms, the
counter-based :func:`splitmix` stream, whose every element compiled kernels compute in place. An image therefore
gets the same output alone or anywhere in a batch, as long as it gets the same seed. The loop over images only
creates streams; every draw is a vectorised call.
"""

from __future__ import annotations

import functools
import math

import torch

from corruptions3d.kernels import fused_kernel
from corruptions3d.parallel import parallel_map

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


def _fill(out: torch.Tensor, seeds: torch.Tensor, stream: int, draw) -> torch.Tensor:
    """``draw(out[i], generator_i)`` for every image; torch fills serially, so CPU images go to parallel threads."""
    parallel_map(draw, out, generators(seeds, out.device, stream), device=out.device)
    return out


def randn_(out: torch.Tensor, seeds: torch.Tensor, stream: int = 0) -> torch.Tensor:
    """Fill ``out`` ``(B,...)`` in place with standard normals, image i from its own stream; returns ``out``."""
    return _fill(out, seeds, stream, lambda o, g: o.normal_(generator=g))


def randn(seeds: torch.Tensor, shape: tuple[int, ...], device, dtype=torch.float32, stream: int = 0) -> torch.Tensor:
    """Standard normal ``(B,*shape)``, image i from its own stream."""
    return randn_(torch.empty((len(seeds), *shape), device=device, dtype=dtype), seeds, stream)


def randn_regions(
    seeds: torch.Tensor,
    regions: list[tuple[int, ...]],
    shape: tuple[int, ...],
    device,
    dtype=torch.float32,
    stream: int = 0,
) -> torch.Tensor:
    """Standard normals ``(B,*shape)`` where image i fills only its leading region ``regions[i]`` (each dim at most
    ``shape``'s), drawn as a tensor of that size from its own stream; zeros elsewhere. An image's numbers depend on
    its seed and its own region, never on the rest of the batch."""
    out = torch.zeros((len(seeds), *shape), device=device, dtype=dtype)

    def draw(o: torch.Tensor, g: torch.Generator, region: tuple[int, ...]) -> None:
        o[tuple(slice(0, n) for n in region)] = torch.empty(region, device=o.device, dtype=dtype).normal_(generator=g)

    parallel_map(draw, out, generators(seeds, out.device, stream), regions, device=out.device)
    return out


def rand(seeds: torch.Tensor, shape: tuple[int, ...], device, dtype=torch.float32, stream: int = 0) -> torch.Tensor:
    """Uniform [0,1) ``(B,*shape)``, image i from its own stream."""
    out = torch.empty((len(seeds), *shape), device=device, dtype=dtype)
    return _fill(out, seeds, stream, lambda o, g: o.uniform_(generator=g))


SPLITMIX_GAMMA, SPLITMIX_MUL = 0x9E3779B97F4A7C15, (0xBF58476D1CE4E5B9, 0x94D049BB133111EB)
"""splitmix64's increment and finaliser multipliers (uint64)."""


def _int64(v: int) -> int:
    """The int64 with the bits of uint64 ``v``."""
    return v - (1 << 64) if v >= 1 << 63 else v


def _shift_right(z: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 ``z`` viewed as uint64."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def splitmix(keys: torch.Tensor, n: int) -> torch.Tensor:
    """Counter-based stream ``(B,n)`` int64 (uint64 bits): ``splitmix64(key_i + (j+1)·γ)`` for element ``j`` of
    row i, keys ``(B,)`` int64 (63-bit, from :func:`mix`). Each element is computable alone, so compiled kernels
    draw it where they use it (:mod:`corruptions3d.kernels.random_cpu`); uint64 products wrap in int64."""
    z = keys.view(-1, 1) + torch.arange(1, n + 1, dtype=torch.int64, device=keys.device) * _int64(SPLITMIX_GAMMA)
    for shift, mul in zip((30, 27), SPLITMIX_MUL):
        z = (z ^ _shift_right(z, shift)) * _int64(mul)
    return z ^ _shift_right(z, 31)


def stream_keys(seeds: torch.Tensor, stream: int, device="cpu") -> torch.Tensor:
    """The :func:`splitmix` keys ``(B,)`` int64 of stream ``stream`` of each image: ``mix(seed_i, stream)``."""
    return torch.tensor([mix(int(s), stream) for s in seeds.tolist()], dtype=torch.int64, device=device)


def splitmix_uniforms(keys: torch.Tensor, n: int) -> torch.Tensor:
    """U[0,1) ``(B,n)`` float64: the top 53 bits of :func:`splitmix` times 2^-53 (row i from key i)."""
    return _shift_right(splitmix(keys, n), 11).double() * 2**-53


def random_bits(seeds: torch.Tensor, shape: tuple[int, ...], device, stream: int = 0) -> torch.Tensor:
    """Uniform integers in ``[0, 2^31)`` as int32 ``(B,*shape)``, image i from its own stream: the top 31 bits of
    :func:`splitmix` with key ``mix(seed_i, stream)``; ``bits < round(p·2^31)`` is an event of probability ``p``
    to within 2^-31."""
    z = splitmix(stream_keys(seeds, stream, device), math.prod(shape))
    return _shift_right(z, 33).to(torch.int32).view(len(seeds), *shape)


@fused_kernel("splitmix_uniform_")
def splitmix_uniform_(out: torch.Tensor, key: int) -> torch.Tensor:
    """Fill float64 ``out`` with U[0,1): the top 53 bits of :func:`splitmix` (key ``key``, row-major element
    index) times 2^-53; returns ``out``."""
    u = splitmix_uniforms(torch.tensor([key], dtype=torch.int64, device=out.device), out.numel())
    return out.copy_(u.view_as(out))


def uniform(
    seeds: torch.Tensor, low: float, high: float, shape: tuple[int, ...] = (), device="cpu", stream: int = 0
) -> torch.Tensor:
    """Uniform [low, high) ``(B,*shape)`` (e.g. one random angle per image: ``shape=()``)."""
    return low + (high - low) * rand(seeds, shape, device, torch.float32, stream)


POISSON_STEP = 1 / 64
"""Grid step of the tabulated Poisson rates: rate cells ``[j, j+1)·POISSON_STEP``."""
POISSON_CELLS = 2048
"""Uniforms are tabulated in cells ``[g, g+1)/POISSON_CELLS``."""
POISSON_TABLE_MAX = 128.0
"""Images whose largest rate exceeds this are sampled with ``torch.poisson`` instead of the table."""
POISSON_RESIDUAL_TERMS = 8
"""Poisson(r < 1/64) terms kept in the convolution of :func:`_poisson_inversion`: the rest has mass < 1e-18."""
POISSON_SPAN_CAP = 7
"""Undecided cells store ``min(hi - lo, POISSON_SPAN_CAP)``; at the cap the search runs on until the CDF passes
``u``."""


@functools.cache
def _poisson_tables(device: torch.device, rate_max: float) -> tuple[torch.Tensor, torch.Tensor]:
    """For rates up to ``rate_max``: ``cdf[j, k + 7] = P(N <= k)`` of Poisson(j·POISSON_STEP), ``(R, 7+K)`` float64
    flat (7 leading zero columns: F(k < 0) = 0), and the inverse-CDF answers per (rate cell j, uniform cell g),
    ``(R·G,)`` int16.

    ``X(lam, u) = min{k : P(N_lam <= k) > u}`` grows in both ``lam`` and ``u``, so on a cell it lies between
    ``lo = X(j·step, g/G)`` and ``hi = X((j+1)·step, u -> (g+1)/G from below)``. Entry ``v >= 0``: ``lo = hi = v``;
    ``v < 0``: ``-v-1 = lo·8 + min(hi - lo, 7)``. Columns run until the top level's remaining mass is below
    float64 resolution.
    """
    rows = int(rate_max / POISSON_STEP) + 2
    cols = int(rate_max + 12 * math.sqrt(rate_max) + 40)
    levels = torch.arange(rows, dtype=torch.float64)[:, None] * POISSON_STEP
    k = torch.arange(cols, dtype=torch.float64)
    pmf = torch.exp(torch.special.xlogy(k, levels) - levels - torch.lgamma(k + 1))
    if float(pmf[-1, -1]) > 1e-20:
        raise RuntimeError("Poisson table: too few columns for the top level")
    cdf = pmf.cumsum_(1).clamp_(max=1.0)
    cdf[:, -1] = 1.0  # the mass beyond the last column is below float64 resolution

    def counts(cell: torch.Tensor) -> torch.Tensor:  # (R, G+1): #{k : cell(k) <= g}
        hist = torch.zeros(rows, POISSON_CELLS + 2, dtype=torch.int16)  # counts <= cols < 2^15
        cell = cell.long().clamp_(max=POISSON_CELLS + 1)
        return hist.scatter_add_(1, cell, torch.ones_like(cell, dtype=torch.int16)).cumsum_(1)

    scaled = cdf * POISSON_CELLS  # exact: a power of two
    lo = counts(torch.ceil(scaled))[:-1, :POISSON_CELLS].clamp_(max=cols - 1)  # #{k : F_j(k) <= g/G}
    hi = counts(torch.floor(scaled))[1:, :POISSON_CELLS]  # #{k : F_{j+1}(k) < (g+1)/G}
    span = hi.sub_(lo).clamp_(max=POISSON_SPAN_CAP)
    code = torch.where(span == 0, lo, lo.mul(-8).sub_(span).sub_(1))
    padded = torch.cat((torch.zeros(rows, POISSON_RESIDUAL_TERMS - 1, dtype=torch.float64), cdf), 1)  # F(k < 0) = 0
    return padded.view(-1).to(device), code.reshape(-1).to(device)


def poisson_tables_for(lam: torch.Tensor, lam_max: float | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The tables of :func:`_poisson_tables` covering rates up to ``lam_max`` (default ``lam.max()``) and their
    padded row length; tables are shared by batches whose largest rates round to the same power of two."""
    lam_max = float(lam.max()) if lam_max is None else lam_max
    rate_max = min(2.0 ** max(3, math.ceil(math.log2(max(lam_max, 1.0)))), POISSON_TABLE_MAX)
    cdf, cells = _poisson_tables(lam.device, rate_max)
    return cdf, cells, cdf.numel() // (int(rate_max / POISSON_STEP) + 2)


@fused_kernel("poisson_inversion")
def _poisson_inversion(lam: torch.Tensor, u: torch.Tensor, lam_max: float | None = None) -> torch.Tensor:
    """Exact inversion ``min{k : P(N_lam <= k) > u}`` for flat ``lam`` in [0, POISSON_TABLE_MAX] (largest value
    ``lam_max`` if known) and float64 ``u`` in [0,1), returned in ``lam``'s dtype.

    One table look-up per value; in the few percent of undecided cells the CDF at ``lam`` is computed exactly (to
    float64 rounding) from the row below, ``lam = j·step + r``:
    ``P(N_lam <= k) = sum_i P(N_r = i)·P(N_{j·step} <= k-i)``.
    """
    cdf, cells, cols = poisson_tables_for(lam, lam_max)
    # truncation = floor for values >= 0; the rate scale is a power of two, so the rate cell is exact
    cell = (u * POISSON_CELLS).int().add_((lam * (1 / POISSON_STEP)).int(), alpha=POISSON_CELLS)
    x = cells.index_select(0, cell)
    todo = (x < 0).nonzero().squeeze(1)
    out = x.to(lam.dtype)
    if not todo.numel():
        return out
    la = lam.take(todo).double()
    j = (la * (1 / POISSON_STEP)).long()
    r = la - j * POISSON_STEP
    weights = [torch.exp(-r)]  # P(N_r = i) = e^-r r^i / i!
    for i in range(1, POISSON_RESIDUAL_TERMS):
        weights.append(weights[-1] * r / i)
    code = -x.take(todo).long() - 1
    k, span, ua = code // 8, code % 8, u.take(todo)
    last = torch.where(span < POISSON_SPAN_CAP, k + span, cols - POISSON_RESIDUAL_TERMS)  # X <= last
    base = j * cols + (POISSON_RESIDUAL_TERMS - 1)  # flat index of F_j(0)
    p = torch.arange(todo.numel(), device=lam.device)  # undecided values: X in [k, last]
    while p.numel():
        at = base.index_select(0, p) + k.index_select(0, p)
        f = torch.zeros(p.numel(), dtype=torch.float64, device=lam.device)
        for i, w in enumerate(weights):
            f.addcmul_(w.index_select(0, p), cdf.take(at - i))
        # X > k; a CDF within float64 rounding of 1 counts as 1 (the truncated convolution may round below it)
        p = p[(f <= ua.index_select(0, p)) & (f < 1 - 2**-52)]
        k.index_add_(0, p, torch.ones_like(p))
        p = p[k.index_select(0, p) < last.index_select(0, p)]
    out[todo] = k.to(lam.dtype)
    return out


def poisson(rates: torch.Tensor, seeds: torch.Tensor, stream: int = 0) -> torch.Tensor:
    """Poisson samples with per-element ``rates`` ``(B,...)`` >= 0, in ``rates``' dtype; image i from its own stream.

    Exact inversion (:func:`_poisson_inversion`) of one float64 uniform per value (:func:`splitmix_uniform_`, key
    ``mix(seed_i, stream)``), both compiled on the CPU, image by image on parallel CPU threads. An image with a
    rate above :data:`POISSON_TABLE_MAX` is drawn by ``torch.poisson`` instead.
    """
    low, high = torch.aminmax(rates.flatten(1), dim=1)
    if not bool((low >= 0).all()):
        raise ValueError("poisson: rates must be non-negative numbers")
    big = (high > POISSON_TABLE_MAX).tolist()
    lam_max = float(high.masked_fill(high > POISSON_TABLE_MAX, 0.0).max())
    out = torch.empty_like(rates)

    def draw(i: int, seed: int) -> None:
        if big[i]:
            g = torch.Generator(device=rates.device).manual_seed(mix(seed, stream))
            out[i] = torch.poisson(rates[i], generator=g)
        else:
            u = torch.empty(rates[i].numel(), dtype=torch.float64, device=rates.device)
            u = splitmix_uniform_(u, mix(seed, stream))
            out[i] = _poisson_inversion(rates[i].reshape(-1), u, lam_max).view(rates.shape[1:])

    parallel_map(draw, range(len(big)), seeds.tolist(), device=rates.device)
    return out


def permutation(seeds: torch.Tensor, n: int, stream: int = 0) -> torch.Tensor:
    """A random permutation of ``range(n)`` per image, ``(B,n)`` int64 on the CPU."""
    return torch.stack([torch.randperm(n, generator=g) for g in generators(seeds, "cpu", stream)])
