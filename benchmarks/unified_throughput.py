"""Training throughput of the unified model: tokens/s, MFU and peak memory, eager vs ``torch.compile``.

``python benchmarks/unified_throughput.py --size B --input-budget 256 --target-budget 256 --batch-size 64``
(on CUDA: bf16 autocast, fused AdamW; on CPU only the tiny size is sensible).

Tokens/s counts input + target slots (the 4M convention). MFU = achieved model FLOP/s / peak bf16 FLOP/s,
with model FLOPs per sample from :func:`unified.model.train_flops`:
``6 * (P_enc * E + (P_dec + P_ctx + P_head) * T) + 12 * D * (L_enc * E^2 + L_dec * (T^2 + T * E))``
(E = input slots + 1 register token, T = target slots; no recomputation counted).
Batches are synthetic masked samples from random token grids (data loading is not measured).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from unified.masking import Masker
from unified.model import UnifiedModel, count_parameters, model_config, train_flops, trunk_parameters

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
"""Dense bf16 tensor-core peak FLOP/s (SXM parts)."""


def synthetic_batch(model: UnifiedModel, masker: Masker, batch_size: int, seed: int) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    samples = [
        {m.name: rng.integers(0, min(m.vocab_size, 4000) if m.is_sequence else m.vocab_size,
                              m.max_tokens if not m.is_sequence else m.max_tokens // 2)
         for m in model.modalities}
        for _ in range(batch_size)
    ]  # fmt: skip
    return masker.batch(samples, list(range(batch_size)))


def measure(args: argparse.Namespace, compile_model: bool) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(0)
    cfg = model_config(args.size, grid=args.grid, grad_checkpointing=args.grad_checkpointing)
    model = UnifiedModel(cfg).to(device)
    masker = Masker(model.modalities, args.input_budget, args.target_budget)
    batch = {k: v.to(device) for k, v in synthetic_batch(model, masker, args.batch_size, 0).items()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=device.type == "cuda")
    step_fn = torch.compile(model) if compile_model else model
    autocast = torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda")

    def step() -> torch.Tensor:
        with autocast:
            loss, _, _ = step_fn(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    sync()
    seconds = (time.perf_counter() - start) / args.steps
    tokens = args.batch_size * (args.input_budget + args.target_budget)
    flops = train_flops(model, args.input_budget, args.target_budget) * args.batch_size / seconds
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    return {
        "size": args.size,
        "compile": compile_model,
        "device": name,
        "trunk_params": trunk_parameters(cfg),
        "params": count_parameters(model),
        "batch_size": args.batch_size,
        "budgets": [args.input_budget, args.target_budget],
        "step_ms": 1e3 * seconds,
        "tokens_per_s": tokens / seconds,
        "model_tflops_per_s": flops / 1e12,
        "mfu": flops / peak if peak else None,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
        "final_loss": float(loss),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cuda = torch.cuda.is_available()
    p.add_argument("--size", default="B" if cuda else "tiny", choices=["tiny", "B", "L", "XL"])
    p.add_argument("--grid", type=int, default=14 if cuda else 4)
    p.add_argument("--input-budget", type=int, default=256 if cuda else 32)
    p.add_argument("--target-budget", type=int, default=256 if cuda else 32)
    p.add_argument("--batch-size", type=int, default=64 if cuda else 8)
    p.add_argument("--steps", type=int, default=20 if cuda else 5)
    p.add_argument("--warmup", type=int, default=5 if cuda else 2)
    p.add_argument("--compile", choices=["off", "on", "both"], default="both" if cuda else "off")
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--device", default="cuda" if cuda else "cpu")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    rows = [measure(args, c) for c in modes]
    for row in rows:
        print(json.dumps(row))
    return rows


if __name__ == "__main__":
    main()
