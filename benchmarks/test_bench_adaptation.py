"""Adaptation latency per 256² image, side by side: plain forward, RNA fast, RNA two-pass (released), 20-step TTO.

Targets (issue 8): RNA < 1.5x a plain forward and >= 10x faster than 20-step TTO. RNA fast
(:data:`adaptation.FAST`) runs the feedback pass at 1/4 resolution, a width-8 controller and FiLM convs at the
embedding's resolution; RNA two-pass (:data:`adaptation.TWO_PASS`) is the released chain (two full forwards).
The network is ``unet_small`` (``downsample=4``) on CPU to keep a 20-step TTO round short on a shared CPU; set
``BENCH_ADAPT_MODEL=unet`` for the reference size (``downsample=6``). The CUDA variants run only where a GPU
exists. Compare rows of one run only (the same machine load).

    OMP_NUM_THREADS=1 python -m pytest benchmarks/test_bench_adaptation.py --benchmark-columns=mean,min,rounds
"""

from __future__ import annotations

import os

import pytest
import torch

from adaptation import FAST, RNA, TTO, TWO_PASS, sparse_depth

MODEL = os.environ.get("BENCH_ADAPT_MODEL", "unet_small")
SIZE = 256
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module", params=DEVICES)
def setup(request):
    from robust.models import create_model

    device = torch.device(request.param)
    torch.manual_seed(0)
    model = create_model(MODEL, ["rgb"], ["depth_euclidean"]).to(device).eval()
    rnas = {name: RNA(model, **chain).to(device).eval() for name, chain in (("fast", FAST), ("two_pass", TWO_PASS))}
    g = torch.Generator().manual_seed(0)
    depth = 1 + 4 * torch.rand(1, 1, SIZE, SIZE, generator=g)
    signal = sparse_depth(depth, torch.ones_like(depth, dtype=torch.bool), 0.0025, g).to(device)
    x = torch.rand(1, 3, SIZE, SIZE, generator=g).to(device)
    return model, rnas, x, signal


def _run(fn, device):
    def call():
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out

    return call


@pytest.mark.benchmark(group="adaptation-256")
def test_plain_forward(benchmark, setup):
    model, _, x, _ = setup
    with torch.no_grad():
        benchmark.pedantic(_run(lambda: model(x), x.device), rounds=5, warmup_rounds=1)


@pytest.mark.benchmark(group="adaptation-256")
@pytest.mark.parametrize("chain", ["fast", "two_pass"])
def test_rna(benchmark, setup, chain):
    _, rnas, x, signal = setup
    with torch.no_grad():
        benchmark.pedantic(_run(lambda: rnas[chain](x, signal), x.device), rounds=5, warmup_rounds=1)


@pytest.mark.benchmark(group="adaptation-256")
def test_tto_20_steps(benchmark, setup):
    model, _, x, signal = setup
    tto = TTO(model, steps=20, lr=1e-3, params="norm")
    benchmark.pedantic(_run(lambda: tto(x, signal), x.device), rounds=1, warmup_rounds=0)
