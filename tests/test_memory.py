"""The CPU buffer pool: large outputs reuse freed mappings, never one still in use."""

from __future__ import annotations

import torch

from corruptions3d import memory

SHAPE = (8, 3, 512, 512)  # 24 MiB float32: below the pool's threshold
BIG = (16, 3, 512, 512)  # 48 MiB: from the pool


def test_freed_buffers_are_reused_and_live_ones_are_not(monkeypatch):
    monkeypatch.setenv("ROBUST_CPU_POOL_MB", "1024")
    a = memory.empty(BIG)
    a.fill_(1.5)
    ptr = a.data_ptr()
    view = a[1:]
    del a
    b = memory.empty(BIG)  # the first buffer is still held by the view
    assert b.data_ptr() != ptr and float(view[0, 0, 0, 0]) == 1.5
    del view
    c = memory.empty(BIG, torch.int32)  # same byte size, other dtype: the freed buffer
    assert c.data_ptr() == ptr and c.shape == BIG and c.dtype == torch.int32
    del b, c
    assert memory.pooled_bytes() >= 2 * 48 << 20


def test_small_requests_and_a_disabled_pool_use_torch(monkeypatch):
    small = memory.empty_like(torch.zeros(SHAPE))
    assert small.shape == SHAPE and small.dtype == torch.float32
    monkeypatch.setenv("ROBUST_CPU_POOL_MB", "0")
    held = memory.pooled_bytes()
    t = memory.empty(BIG)
    del t
    assert memory.pooled_bytes() == held  # nothing went into (or came from) the pool
    assert memory.pool_limit() == 0


class _Pooled(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> torch.Tensor:
        return memory.empty(BIG).fill_(i)


def test_pooled_tensors_cross_dataloader_workers():
    """A corruption in a DataLoader worker returns a pooled tensor: it reaches the main process intact."""
    loader = torch.utils.data.DataLoader(_Pooled(), batch_size=None, num_workers=1)
    assert [float(t[0, 0, 0, 0]) + float(t[-1, -1, -1, -1]) for t in loader] == [0.0, 2.0]
