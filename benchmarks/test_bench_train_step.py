"""Training-step throughput (images/s) of the model zoo: forward + masked loss + backward + AdamW step.

CPU: a depth-3 UNet and a resnet18 DPT-style dense model, fp32 eager, 64x64, batch 4.
GPU (CUDA only): the reference UNet (d=6) and a ViT-S dense model at 256x256, batch 16, fp32 eager vs
bf16 autocast + ``torch.compile``, side by side.

    python -m pytest benchmarks/test_bench_train_step.py --benchmark-only -q
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from robust.losses import domain_loss, unit_normals
from robust.models import create_model

CPU_CASES = {"unet_d3": ("unet", {"downsample": 3}), "dense_resnet18": ("dense_resnet18", {"head_channels": 64})}
GPU_CASES = {"unet_d6": ("unet", {}), "dense_vit_small": ("dense_vit_small", {"img_size": 256})}


def make_step(name: str, kw: dict, device: str, size: int, batch_size: int, bf16: bool, compile_: bool):
    torch.manual_seed(0)
    model = create_model(name, ["rgb"], ["normal"], **kw).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    forward = torch.compile(model) if compile_ else model
    batch = {
        "rgb": torch.rand(batch_size, 3, size, size, device=device),
        "normal": unit_normals(torch.randn(batch_size, 3, size, size, device=device)),
    }
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def step() -> float:
        with amp:
            loss = domain_loss("normal", forward(batch), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        return loss.item()

    step()  # warm-up (and compilation)
    return step


@pytest.mark.parametrize("case", list(CPU_CASES))
def test_train_step_cpu(benchmark, case):
    name, kw = CPU_CASES[case]
    batch_size = 4
    step = make_step(name, kw, "cpu", 64, batch_size, bf16=False, compile_=False)
    loss = benchmark.pedantic(step, rounds=3, iterations=1)
    assert loss == loss  # finite loss, not NaN
    benchmark.extra_info["images_per_s"] = batch_size / benchmark.stats["mean"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", ["fp32_eager", "bf16_compile"])
@pytest.mark.parametrize("case", list(GPU_CASES))
def test_train_step_gpu(benchmark, case, mode):
    name, kw = GPU_CASES[case]
    batch_size = 16
    fast = mode == "bf16_compile"
    step = make_step(name, kw, "cuda", 256, batch_size, bf16=fast, compile_=fast)
    benchmark.pedantic(step, rounds=10, iterations=1, warmup_rounds=2)
    benchmark.extra_info["images_per_s"] = batch_size / benchmark.stats["mean"]
