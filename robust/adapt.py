"""Test-time adaptation of a trained model under a distribution shift: ``python -m robust.adapt``.

Runs the chosen methods (``none``, ``norm``, ``tent``, ``tto``, ``rna``; see :mod:`adaptation`) over a
Taskonomy-format dataset, shifted either by a registered corruption (``--corruption NAME --severity S``)
with the same per-image seeds as ``python -m robust.corrupt`` (so the inputs equal the images it writes),
or by real shifted images (``--shifted-root DIR``: a Taskonomy-format root whose rgb views pair with
``--data-root`` by building/point/view). Every method sees the same sparse ground truth (``--fraction`` of
the valid pixels). Writes ``OUT/predictions/<method>/`` (Taskonomy format) and ``OUT/results.{csv,md}``
(error and wall time per image).

Example::

    python -m robust.adapt --data-root data/synth --out runs/adapt --weights depth.pt --rna rna.pt \\
        --corruption fog_3d --severity 3 --methods none tto rna
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

import corruptions3d
from adaptation import Signal, load_rna, make_method, sparse_depth
from adaptation.evaluate import compare_methods, write_table
from robust.corrupt import image_seeds
from robust.io import DataError, ResizeCrop, TaskonomyDataset, collate_views, write_view
from robust.models import create_model
from robust.runs import Run, parse_config, seed_everything


@dataclass
class AdaptConfig:
    """Adapt a model at test time with sparse ground truth and compare methods."""

    data_root: str = field(metadata={"help": "Taskonomy-format root with rgb and the target domain"})
    out: str = field(metadata={"help": "output folder"})
    weights: str = field(metadata={"help": "base model state dict (torch.save; a {'model': ...} dict also works)"})
    model: str = field(default="unet", metadata={"help": "registered model name (robust.models)"})
    domain: str = field(default="depth_euclidean", metadata={"help": "adapted output domain"})
    methods: list[str] = field(default_factory=lambda: ["none", "norm", "tto", "rna"], metadata={"help": "methods"})
    rna: str | None = field(default=None, metadata={"help": "RNA controller + FiLM checkpoint (adaptation.save_rna)"})
    corruption: str | None = field(default=None, metadata={"help": "registered corruption applied to rgb"})
    severity: int = field(default=3, metadata={"help": "corruption severity 1..5"})
    shifted_root: str | None = field(default=None, metadata={"help": "root of real shifted rgb views"})
    fraction: float = field(default=0.0025, metadata={"help": "fraction of valid pixels given as sparse GT"})
    tto_steps: int = field(default=20, metadata={"help": "TTO optimiser steps per image"})
    tto_lr: float = field(default=1e-3, metadata={"help": "TTO/TENT learning rate (Adam)"})
    tto_params: str = field(default="norm", metadata={"help": "TTO parameters: norm, all"})
    size: int = field(default=256, metadata={"help": "resize + centre crop size (px)"})
    batch_size: int = 4
    limit: int | None = field(default=None, metadata={"help": "use only the first N views"})
    device: str = "cpu"
    seed: int = 0
    write_predictions: bool = True
    wandb: bool = False


def load_weights(model: torch.nn.Module, path: str) -> None:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--weights {p}: no such file")
    state = torch.load(p, map_location="cpu", weights_only=True)
    state = state.get("model", state) if isinstance(state, dict) else state
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"--weights {p} does not fit model {type(model).__name__}: {e}") from None


def method_kwargs(name: str, cfg: AdaptConfig) -> dict:
    if name == "tto":
        return {"steps": cfg.tto_steps, "lr": cfg.tto_lr, "params": cfg.tto_params}
    if name == "tent":
        return {"lr": cfg.tto_lr}
    return {}


def run(cfg: AdaptConfig) -> list[dict]:
    """Adapt and compare; returns the result rows (also written to ``OUT/results.{csv,md}``)."""
    if cfg.corruption and cfg.shifted_root:
        raise ValueError("give either --corruption or --shifted-root, not both")
    if cfg.corruption:
        corruptions3d.get_corruption(cfg.corruption)
    seed_everything(cfg.seed)
    device = torch.device(cfg.device)
    out = Path(cfg.out)
    log = Run(out, cfg, wandb=cfg.wandb, project="robust-adapt")
    base = create_model(cfg.model, ["rgb"], [cfg.domain])
    load_weights(base, cfg.weights)
    base = base.to(device).eval()
    model_for = {}
    if "rna" in cfg.methods:
        if cfg.rna is None:
            raise ValueError("method 'rna' needs --rna PATH (a checkpoint written by adaptation.save_rna)")
        model_for["rna"] = load_rna(cfg.rna, base).to(device).eval()
    methods = {m: make_method(m, model_for.get(m, base), **method_kwargs(m, cfg)) for m in cfg.methods}
    domains = ["rgb", cfg.domain, "mask_valid"] + ([] if cfg.domain == "depth_euclidean" else ["depth_euclidean"])
    transform = ResizeCrop(cfg.size, cfg.size)
    ds = TaskonomyDataset(cfg.data_root, domains, transform=transform)
    if cfg.limit is not None:
        ds.keys = ds.keys[: cfg.limit]
    shifted = None
    if cfg.shifted_root:
        shifted = TaskonomyDataset(cfg.shifted_root, ["rgb"], transform=transform, strict=False)
        lookup = {k: i for i, k in enumerate(shifted.keys)}
        missing = [k for k in ds.keys if k not in lookup]
        if missing:
            raise DataError(f"--shifted-root {cfg.shifted_root}: no rgb for {len(missing)} view(s), e.g. {missing[0]}")

    def batches():
        for batch in DataLoader(ds, batch_size=cfg.batch_size, collate_fn=collate_views):
            keys = batch.pop("key")
            batch = {k: v.to(device) for k, v in batch.items()}
            if shifted is not None:
                batch["rgb"] = torch.stack([shifted[lookup[k]]["rgb"] for k in keys]).to(device)
            elif cfg.corruption:
                batch["rgb"] = corruptions3d.corrupt(
                    batch, cfg.corruption, severity=cfg.severity, generator=image_seeds(keys, cfg.seed, cfg.corruption)
                )
            yield {**batch, "key": keys}

    def make_signal(batch: dict) -> Signal:
        gen = torch.Generator().manual_seed(int(image_seeds(batch["key"], cfg.seed, "sparse_signal").sum()) % 2**63)
        return sparse_depth(batch[cfg.domain], batch["mask_valid"], cfg.fraction, gen)

    def save(name: str, batch: dict, pred: torch.Tensor) -> None:
        if cfg.write_predictions:
            for key, p in zip(batch["key"], pred.cpu()):
                write_view(out / "predictions" / name, key, {cfg.domain: p})

    rows = compare_methods(methods, batches(), cfg.domain, make_signal, save)
    shift = f"{cfg.corruption}/{cfg.severity}" if cfg.corruption else (cfg.shifted_root or "clean")
    rows = [{"shift": shift, **r} for r in rows]
    write_table(rows, out / "results")
    for r in rows:
        log.log(r)
    log.finish()
    return rows


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(AdaptConfig, argv, epilog=__doc__ or "")
    for r in run(cfg):
        print(f"{r['method']:>6}: L1 {r['l1']:.4f}  AbsRel {r['abs_rel']:.4f}  {r['ms_per_image']:.1f} ms/image")


if __name__ == "__main__":
    main()
