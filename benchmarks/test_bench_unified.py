"""pytest-benchmark wrapper: one training step of the tiny unified model on CPU (32/32 budgets)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from unified_throughput import measure, parse_args


def test_bench_unified_tiny_train_step(benchmark):
    args = parse_args(["--size", "tiny", "--grid", "4", "--device", "cpu", "--steps", "2", "--warmup", "1"])
    row = benchmark.pedantic(measure, args=(args, False), rounds=3, iterations=1)
    benchmark.extra_info.update({k: row[k] for k in ("tokens_per_s", "model_tflops_per_s", "step_ms")})
