"""Reuse of large CPU buffers between calls: batch-sized outputs without fresh page faults.

glibc's malloc serves requests above its largest mmap threshold (32 MiB) with a fresh mapping and unmaps it on
free, so every call that returns a new batch-sized CPU tensor (16×3×512² float32 is 48 MiB) page-faults and zeroes
all of it again: about 10 ms per such batch on a 2-core VM, more than many corruptions compute. :func:`empty`
keeps those mappings instead: it returns a tensor over a private anonymous mapping taken from a pool, and the
mapping goes back to the pool when the last tensor or view using it is freed. The pool keeps at most
``ROBUST_CPU_POOL_MB`` MiB of free mappings (default 1024; ``0`` turns it off). Smaller requests, whose freed memory
glibc already reuses, and other devices use torch's allocator. A forked child (a DataLoader worker) starts with an
empty pool. Pooled tensors behave as any CPU tensor, except that their storage cannot grow (``resize_`` beyond
their size raises).
"""

from __future__ import annotations

import math
import mmap
import os
import threading
import weakref

import numpy as np
import torch

__all__ = ["MIN_BYTES", "empty", "empty_like", "pool_limit", "pooled_bytes"]

MIN_BYTES = 32 << 20
"""Requests from this size up come from the pool (glibc's largest mmap threshold)."""

_lock = threading.Lock()
_free: dict[int, list[mmap.mmap]] = {}
_held = [0]  # bytes in _free


def pool_limit() -> int:
    """Most bytes of free mappings the pool keeps (``ROBUST_CPU_POOL_MB``, default 1024 MiB)."""
    return int(os.environ.get("ROBUST_CPU_POOL_MB", "1024")) << 20


def pooled_bytes() -> int:
    """Bytes of free mappings in the pool now."""
    return _held[0]


def _release(buf: mmap.mmap) -> None:
    with _lock:
        if _held[0] + len(buf) <= pool_limit():
            _free.setdefault(len(buf), []).append(buf)
            _held[0] += len(buf)


def _clear() -> None:
    _free.clear()
    _held[0] = 0


os.register_at_fork(after_in_child=_clear)


def empty(
    shape: tuple[int, ...], dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """An uninitialised contiguous tensor, from the pool when it is on the CPU and at least :data:`MIN_BYTES`."""
    nbytes = math.prod(shape) * dtype.itemsize
    if torch.device(device).type != "cpu" or nbytes < MIN_BYTES or pool_limit() <= 0:
        return torch.empty(shape, dtype=dtype, device=device)
    with _lock:
        stack = _free.get(nbytes)
        buf = stack.pop() if stack else None
        if buf is not None:
            _held[0] -= nbytes
    if buf is None:
        buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    raw = np.frombuffer(buf, dtype=np.uint8)
    weakref.finalize(raw, _release, buf)  # when the last tensor over it is freed
    return torch.from_numpy(raw).view(dtype).view(shape)


def empty_like(x: torch.Tensor) -> torch.Tensor:
    """:func:`empty` with the shape, dtype and device of ``x``."""
    return empty(tuple(x.shape), x.dtype, x.device)
