"""RNA vs test-time optimisation on the synthetic dataset under corruptions, with sparse depth.

1. Render a small synthetic Taskonomy dataset (``robust.synth``) and train a tiny rgb->depth_euclidean
   UNet (the pseudolabeler) on clean views.
2. Train an RNA controller + FiLM layers on top of the frozen pseudolabeler, on batches corrupted by the
   registered corruptions, with sparse depth at U(0, 0.25 %) of the valid pixels.
3. Under >= 6 corruptions x severities 1-5, with 0.05-0.25 % sparse depth, compare: no adaptation,
   norm-statistics adaptation (identity for the GroupNorm UNet), TENT-style (norm affine, online, one Adam
   step per batch on the sparse loss: depth has no class entropy), TTO with 1, 5, 20 steps (episodic,
   per image, norm parameters) and RNA. Writes ``OUT/results.{csv,md}``, ``OUT/summary.{csv,md}`` and
   ``OUT/error_vs_time.png``.

    python experiments/test_time_adaptation.py --out runs/adaptation --steps 300 --size 64
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader

import corruptions3d
from adaptation import RNA, RNATrainConfig, Signal, make_method, sparse_depth, train_rna
from adaptation.evaluate import compare_methods, write_table
from robust.io import ResizeCrop, TaskonomyDataset, collate_views
from robust.losses import masked_l1, valid_mask
from robust.models import create_model
from robust.runs import parse_config, progress, seed_everything
from robust.synth.dataset import ensure_dataset

CORRUPTIONS = ("fog_3d", "near_focus", "flash", "low_light", "iso_noise", "color_quant", "shadow")
DOMAINS = ["rgb", "depth_euclidean", "mask_valid"]


@dataclass
class ExperimentConfig:
    """RNA vs TTO/TENT/norm adaptation on synthetic scenes under corruptions."""

    out: str = "runs/adaptation"
    steps: int = 300
    size: int = 64
    batch_size: int = 8
    lr: float = 1e-3
    buildings: int = 2
    points: int = 4
    views: int = 3
    seed: int = 0


def loader(root: Path, cfg: ExperimentConfig, shuffle: bool) -> DataLoader:
    ds = TaskonomyDataset(root, DOMAINS, transform=ResizeCrop(cfg.size, cfg.size))
    return DataLoader(ds, batch_size=cfg.batch_size, shuffle=shuffle, collate_fn=collate_views, drop_last=shuffle)


def tensors(batch: dict) -> dict[str, torch.Tensor]:
    return {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}


def train_pseudolabeler(root: Path, cfg: ExperimentConfig) -> torch.nn.Module:
    model = create_model("unet_tiny", ["rgb"], ["depth_euclidean"])
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    data = loader(root, cfg, shuffle=True)
    step = 0
    bar = progress(total=cfg.steps, desc="pseudolabeler")
    while step < cfg.steps:
        for batch in data:
            target = batch["depth_euclidean"]
            loss = masked_l1(model(batch)["depth_euclidean"], target, valid_mask("depth_euclidean", target, batch))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            bar.update(1)
            if step == cfg.steps:
                break
    return model.eval()


def corrupted(root: Path, cfg: ExperimentConfig, name: str, severity: int) -> Iterator[dict]:
    """Evaluation batches with ``rgb`` corrupted (seeded per batch index)."""
    for i, batch in enumerate(loader(root, cfg, shuffle=False)):
        b = tensors(batch)
        b["rgb"] = corruptions3d.corrupt(b, name, severity=severity, generator=cfg.seed * 1000 + i)
        yield b


def sparse_signal(b: dict, generator: torch.Generator) -> Signal:
    """0.05-0.25 % of the valid pixels (fraction drawn per image)."""
    return sparse_depth(b["depth_euclidean"], b["mask_valid"], (0.0005, 0.0025), generator)


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(ExperimentConfig, argv)
    seed_everything(cfg.seed)
    out = Path(cfg.out)
    root = ensure_dataset(out / "synth", cfg.buildings, cfg.points, cfg.views, max(cfg.size, 64), cfg.seed)
    model = train_pseudolabeler(root, cfg)
    rna = RNA(model, controller_downsample=2)
    names = [n for n in CORRUPTIONS if n in corruptions3d.list_corruptions()]
    rna_cfg = RNATrainConfig(steps=cfg.steps, lr=cfg.lr, corruptions=names, seed=cfg.seed)
    train_rna(rna, map(tensors, loader(root, cfg, shuffle=True)), rna_cfg)
    rna.eval()
    methods = {
        "none": make_method("none", model),
        "norm": make_method("norm", model),
        "tent_style": make_method("tto", model, mode="continual", steps=1, lr=cfg.lr, per_sample=False),
        **{f"tto_{k}": make_method("tto", model, steps=k, lr=cfg.lr) for k in (1, 5, 20)},
        "rna": make_method("rna", rna),
    }
    rows = []
    for name in progress(names, desc="corruptions"):
        for severity in range(1, 6):
            gen = torch.Generator().manual_seed(cfg.seed)
            signal = partial(sparse_signal, generator=gen)
            for m in methods.values():
                m.reset()
            rows += [
                {"corruption": name, "severity": severity, **r}
                for r in compare_methods(methods, corrupted(root, cfg, name, severity), "depth_euclidean", signal)
            ]
    write_table(rows, out / "results")
    summary = []
    for method in methods:
        sel = [r for r in rows if r["method"] == method]
        summary.append(
            {
                "method": method,
                **{k: sum(r[k] for r in sel) / len(sel) for k in ("l1", "abs_rel", "delta1", "ms_per_image")},
            }
        )
    write_table(summary, out / "summary")
    plot(summary, out / "error_vs_time.png")
    print((out / "summary.md").read_text())


def plot(summary: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for r in summary:
        ax.scatter(r["ms_per_image"], r["l1"])
        ax.annotate(r["method"], (r["ms_per_image"], r["l1"]))
    ax.set_xscale("log")
    ax.set_xlabel("wall time per image (ms, CPU)")
    ax.set_ylabel("depth L1 (m), mean over corruptions x severities")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
