"""Bit-exact torch port of Triton's Philox-4x32-10 (``tl.randint4x``/``tl.rand``/``tl.randn``).

uint32 arithmetic is emulated on int64 tensors (values kept in [0, 2^32)), so the CPU reference of a kernel draws
exactly the integers the kernel draws for the same ``(seed, offset)``. The float conversions repeat Triton's float32
formulas; ``log``/``sqrt``/``cos`` may differ from the device's by a few ulp, nothing else differs.
"""

from __future__ import annotations

import torch

__all__ = ["pair_uniform_to_normal", "rand", "rand4x", "randint4x", "randn", "uint_to_uniform_float"]

N_ROUNDS = 10
_MASK32 = 0xFFFFFFFF
_KEY_A, _KEY_B = 0x9E3779B9, 0xBB67AE85
_ROUND_A, _ROUND_B = 0xD2511F53, 0xCD9E8D57
_UNIFORM_SCALE = 4.6566127342e-10
"""Triton's int32 -> [0, 1) scale: the largest value with ``(2^31 − 1)·scale < 1`` in float32."""


def _mul_hi_lo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32 bits of ``a·b`` for uint32 ``a`` (Python int) and ``b`` (int64 tensor in [0, 2^32))."""
    p_lo = b * (a & 0xFFFF)  # < 2^48
    p_hi = b * (a >> 16)  # < 2^48
    hi = (p_hi + (p_lo >> 16)) >> 16
    lo = (((p_hi & 0xFFFF) << 16) + p_lo) & _MASK32
    return hi, lo


def randint4x(seed: torch.Tensor | int, offset: torch.Tensor, n_rounds: int = N_ROUNDS) -> tuple[torch.Tensor, ...]:
    """Four uint32 blocks (as int64) for int64 ``seed`` (scalar or broadcastable to ``offset``) and int32 offsets."""
    seed = torch.as_tensor(seed, dtype=torch.int64, device=offset.device)
    k0, k1 = seed & _MASK32, (seed >> 32) & _MASK32
    c0 = offset.to(torch.int64) & _MASK32
    c1 = torch.zeros_like(c0)
    c2 = torch.zeros_like(c0)
    c3 = torch.zeros_like(c0)
    for _ in range(n_rounds):
        hi_b, lo_b = _mul_hi_lo(_ROUND_B, c2)
        hi_a, lo_a = _mul_hi_lo(_ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0, k1 = (k0 + _KEY_A) & _MASK32, (k1 + _KEY_B) & _MASK32
    return c0, c1, c2, c3


def uint_to_uniform_float(x: torch.Tensor) -> torch.Tensor:
    """Triton's uint32 -> float32 in [0, 1): reinterpret as int32, fold negatives with ``~x``, scale."""
    x = torch.where(x >= 1 << 31, x - (1 << 32), x)  # bitcast to int32
    x = torch.where(x < 0, ~x, x).to(torch.int32)
    return x.to(torch.float32) * torch.tensor(_UNIFORM_SCALE, dtype=torch.float32)


def rand(seed: torch.Tensor | int, offset: torch.Tensor) -> torch.Tensor:
    """``tl.rand``: float32 uniform [0, 1)."""
    return uint_to_uniform_float(randint4x(seed, offset)[0])


def rand4x(seed: torch.Tensor | int, offset: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``tl.rand4x``: four float32 uniform [0, 1) blocks."""
    return tuple(uint_to_uniform_float(i) for i in randint4x(seed, offset))


def pair_uniform_to_normal(u1: torch.Tensor, u2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``tl.pair_uniform_to_normal``: Box–Muller, two float32 standard normals from two uniforms."""
    u1 = u1.clamp(min=1.0e-7)
    th = torch.tensor(6.283185307179586, dtype=torch.float32) * u2
    r = torch.sqrt(-2.0 * torch.log(u1))
    return r * torch.cos(th), r * torch.sin(th)


def randn(seed: torch.Tensor | int, offset: torch.Tensor) -> torch.Tensor:
    """``tl.randn``: float32 standard normal by Box–Muller on the first two Philox outputs."""
    u1, u2, _, _ = rand4x(seed, offset)
    return pair_uniform_to_normal(u1, u2)[0]
