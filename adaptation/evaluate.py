"""Compare adaptation methods on batches: depth error and wall time per image, as table rows (CSV/Markdown)."""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch

from adaptation.methods import Method
from adaptation.signals import Signal
from robust.io import atomic_write_text
from robust.losses import valid_mask
from robust.metrics import depth_metrics

OnPrediction = Callable[[str, dict, torch.Tensor], None]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compare_methods(
    methods: Mapping[str, Method],
    batches: Iterable[dict],
    domain: str,
    make_signal: Callable[[dict], Signal],
    on_prediction: OnPrediction | None = None,
) -> list[dict]:
    """Run every method on every batch (same signal for all) and aggregate per method.

    Returns rows ``{method, images, l1, abs_rel, delta1, ms_per_image}``: the depth metrics of
    :func:`robust.metrics.depth_metrics` averaged over images, and the wall time of the method call divided
    by the batch size.
    """
    sums = {name: {"l1": 0.0, "abs_rel": 0.0, "delta1": 0.0, "seconds": 0.0, "images": 0} for name in methods}
    for batch in batches:
        target = batch[domain]
        valid = valid_mask(domain, target, batch)
        signal = make_signal(batch)
        for name, method in methods.items():
            _sync(target.device)
            t0 = time.perf_counter()
            pred = method(batch, signal)[domain]
            _sync(target.device)
            s = sums[name]
            s["seconds"] += time.perf_counter() - t0
            s["images"] += target.shape[0]
            for k, v in depth_metrics(pred, target, valid).items():
                s[k] += float(v.nansum())
            if on_prediction is not None:
                on_prediction(name, batch, pred.detach())
    return [
        {
            "method": name,
            "images": s["images"],
            **{k: s[k] / max(s["images"], 1) for k in ("l1", "abs_rel", "delta1")},
            "ms_per_image": 1000.0 * s["seconds"] / max(s["images"], 1),
        }
        for name, s in sums.items()
    ]


def write_table(rows: list[dict], path: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``rows`` as ``path.csv`` and ``path.md`` (floats with 4 significant digits in Markdown)."""
    path = Path(path)
    cols = list(rows[0])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols)
    writer.writeheader()
    writer.writerows(rows)
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    csv_path = atomic_write_text(path.with_suffix(".csv"), buf.getvalue())
    md_path = atomic_write_text(path.with_suffix(".md"), "\n".join(md) + "\n")
    return csv_path, md_path
