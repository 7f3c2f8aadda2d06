"""Image-parallel CPU work on Python threads, for per-image steps that torch runs serially.

Seeded random fills (one ``torch.Generator`` per image), libjpeg round trips and the compiled numba kernels each
run on one core and release the GIL, so independent images go to a shared pool of ``torch.get_num_threads()``
threads. Results do not depend on the thread count: every job writes only its own image. A job that calls
:func:`parallel_map` itself runs its items in its own thread (no nested waiting on the shared pool); a forked
process starts its own pool.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch

__all__ = ["parallel_map", "workers_for"]

T = TypeVar("T")
_local = threading.local()


@functools.cache
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(workers, thread_name_prefix="corruptions3d", initializer=_mark_worker)


# A forked child (e.g. a DataLoader worker that corrupts on the CPU) inherits the pools but not their threads:
# it starts its own.
os.register_at_fork(after_in_child=_pool.cache_clear)


def _mark_worker() -> None:
    _local.worker = True


def workers_for(n: int, device: torch.device | str = "cpu") -> int:
    """Threads for ``n`` independent jobs: ``torch.get_num_threads()`` (at most ``n``) on the CPU, else 1."""
    if torch.device(device).type != "cpu" or getattr(_local, "worker", False):
        return 1
    return max(1, min(n, torch.get_num_threads()))


def parallel_map(fn: Callable[..., T], *items: Iterable[Any], device: torch.device | str = "cpu") -> list[T]:
    """``[fn(*args) for args in zip(*items)]``, on up to :func:`workers_for` threads; exceptions propagate."""
    args = list(zip(*items))
    workers = workers_for(len(args), device)
    if workers == 1:
        return [fn(*a) for a in args]
    return list(_pool(workers).map(fn, *zip(*args)))
