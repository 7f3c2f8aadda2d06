"""Shared fixtures: the real Taskonomy sample view and quiet, offline runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Triton kernels run on the CPU through Triton's interpreter unless told otherwise. It must be set before torch
# (which imports triton) is imported; on the GPU machine run `TRITON_INTERPRET=0 pytest -m gpu`.
os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("ROBUST_NO_PROGRESS", "1")

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "taskonomy_sample"


@pytest.fixture(scope="session")
def sample_root() -> Path:
    """``../shared/data/taskonomy_sample`` (one real 512² Taskonomy view)."""
    if not SAMPLE.is_dir():
        pytest.fail(f"the real Taskonomy sample is missing at {SAMPLE}; tests need ../shared beside the repo")
    return SAMPLE


@pytest.fixture(scope="session")
def sample_batch(sample_root):
    """The sample view as a batch of one: rgb, depth_euclidean, mask_valid, reshading, relighting."""
    from robust.io import TaskonomyDataset, collate_views

    ds = TaskonomyDataset(sample_root, ["rgb", "depth_euclidean", "mask_valid", "reshading", "relighting"])
    return collate_views([ds[0]])


@pytest.fixture
def one_thread():
    """One torch thread for tests on small tensors: on 2 shared cores, intra-op threads only add synchronisation,
    whose spin-waiting makes tiny ops up to ~100x slower when the CPU is oversubscribed; restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
