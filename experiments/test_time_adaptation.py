"""RNA vs test-time optimisation on the synthetic dataset under corruptions, with sparse depth.

1. Render a small synthetic Taskonomy dataset (``robust.synth``), hold out ``eval_views`` views (seeded), and
   train a tiny rgb->depth_euclidean UNet (the pseudolabeler) on the other views, clean. Its clean held-out
   error is reported next to a constant predictor (the mean training depth) to show it learned something.
2. Train two RNA adapters on top of the frozen pseudolabeler, the fast chain (:data:`adaptation.FAST`) and
   the released two-pass chain (:data:`adaptation.TWO_PASS`), with the same steps and data: training views
   corrupted per sample by the evaluation corruption families (other random draws, other views), sparse
   depth at U(0, 0.25 %) of the valid pixels.
3. On the held-out views under the corruptions x severities 1-5, with 0.05-0.25 % sparse depth, compare:
   no adaptation, norm-statistics adaptation (identity for the GroupNorm UNet), TENT-style (norm affine,
   online, one Adam step per batch on the sparse loss: depth has no class entropy), TTO with 1, 5, 20 Adam
   steps (episodic, per image, norm parameters) and both RNAs. Writes ``OUT/clean.{csv,md}``,
   ``OUT/results.{csv,md}``, ``OUT/summary.{csv,md}`` and ``OUT/error_vs_time.png``.

    OMP_NUM_THREADS=1 python experiments/test_time_adaptation.py --out runs/tta
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

import corruptions3d
from adaptation import FAST, RNA, TWO_PASS, RNATrainConfig, Signal, make_method, sparse_depth, train_rna
from adaptation.evaluate import compare_methods, write_table
from robust.io import ResizeCrop, TaskonomyDataset, collate_views
from robust.losses import masked_l1, valid_mask
from robust.metrics import depth_metrics
from robust.models import create_model
from robust.runs import parse_config, progress, seed_everything
from robust.synth.dataset import ensure_dataset

CORRUPTIONS = ["fog_3d", "near_focus", "flash", "shadow", "color_quant", "gaussian_noise"]
DOMAIN = "depth_euclidean"
DOMAINS = ["rgb", DOMAIN, "mask_valid"]


@dataclass
class ExperimentConfig:
    """RNA vs TTO/TENT/norm adaptation on synthetic scenes under corruptions."""

    out: str = "runs/adaptation"
    steps: int = 500
    rna_steps: int = 200
    size: int = 64
    batch_size: int = 8
    lr: float = 1e-3
    rna_lr: float = 2e-3
    tto_lr: float = 1e-2
    buildings: int = 6
    points: int = 5
    views: int = 4
    eval_views: int = 4
    corruptions: list[str] = field(default_factory=lambda: list(CORRUPTIONS))
    seed: int = 0


def load_views(root: Path, size: int, corruptions: list[str]) -> dict[str, torch.Tensor]:
    """Every view of ``root`` as one batch in memory (the synthetic sets here are tens of views), with the
    domains the ``corruptions`` need (e.g. ``reshading`` for ``flash``)."""
    needed = {d for n in corruptions for d in corruptions3d.get_corruption(n).requires}
    ds = TaskonomyDataset(root, DOMAINS + sorted(needed - set(DOMAINS)), transform=ResizeCrop(size, size))
    batch = collate_views([ds[i] for i in range(len(ds))])
    return {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}


def batches(views: dict[str, torch.Tensor], batch_size: int, generator: torch.Generator):
    """Endless shuffled mini-batches of the in-memory ``views``."""
    n = next(iter(views.values())).shape[0]
    while True:
        order = torch.randperm(n, generator=generator)
        for i in range(0, n - batch_size + 1, batch_size):
            yield {k: v[order[i : i + batch_size]] for k, v in views.items()}


def train_pseudolabeler(views: dict[str, torch.Tensor], cfg: ExperimentConfig) -> torch.nn.Module:
    model = create_model("unet_tiny", ["rgb"], [DOMAIN])
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    for _, batch in zip(progress(range(cfg.steps), desc="pseudolabeler"), batches(views, cfg.batch_size, gen)):
        target = batch[DOMAIN]
        loss = masked_l1(model(batch)[DOMAIN], target, valid_mask(DOMAIN, target, batch))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


def clean_errors(model: torch.nn.Module, train: dict, test: dict) -> list[dict]:
    """Held-out clean error of the pseudolabeler and of a constant predictor (the mean valid training depth)."""
    valid = valid_mask(DOMAIN, train[DOMAIN], train)
    mean = train[DOMAIN][valid].mean()
    target, mask = test[DOMAIN], valid_mask(DOMAIN, test[DOMAIN], test)
    with torch.no_grad():
        preds = {"pseudolabeler": model(test)[DOMAIN], "constant_mean": torch.full_like(target, float(mean))}
    rows = []
    for name, pred in preds.items():
        m = depth_metrics(pred, target, mask)
        rows.append({"predictor": name, **{k: float(v.nanmean()) for k, v in m.items()}})
    return rows


def corrupted(test: dict[str, torch.Tensor], name: str, severity: int, seed: int) -> dict[str, torch.Tensor]:
    """The held-out views with ``rgb`` corrupted (per-image seeds from ``seed``)."""
    return {**test, "rgb": corruptions3d.corrupt(test, name, severity=severity, generator=seed)}


def sparse_signal(b: dict, generator: torch.Generator) -> Signal:
    """0.05-0.25 % of the valid pixels (fraction drawn per image)."""
    return sparse_depth(b[DOMAIN], valid_mask(DOMAIN, b[DOMAIN], b), (0.0005, 0.0025), generator)


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(ExperimentConfig, argv)
    t0 = time.perf_counter()
    seed_everything(cfg.seed)
    out = Path(cfg.out)
    names = [n for n in cfg.corruptions if n in corruptions3d.list_corruptions()]
    if len(names) < len(cfg.corruptions):
        print(f"skipping corruptions not in the registry: {sorted(set(cfg.corruptions) - set(names))}")
    root = ensure_dataset(out / "synth", cfg.buildings, cfg.points, cfg.views, max(cfg.size, 64), cfg.seed)
    views = load_views(root, cfg.size, names)
    n = views["rgb"].shape[0]
    if not 0 < cfg.eval_views < n - cfg.batch_size:
        raise ValueError(f"--eval-views must leave at least --batch-size {cfg.batch_size} of {n} views for training")
    held = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed))
    test = {k: v[held[: cfg.eval_views]] for k, v in views.items()}
    train = {k: v[held[cfg.eval_views :]] for k, v in views.items()}
    model = train_pseudolabeler(train, cfg)
    clean = clean_errors(model, train, test)
    write_table(clean, out / "clean")
    print((out / "clean.md").read_text())
    rnas = {}
    for label, chain in (("rna_fast", FAST), ("rna_two_pass", TWO_PASS)):
        rna = RNA(model, controller_downsample=2, **chain)
        rna_cfg = RNATrainConfig(steps=cfg.rna_steps, lr=cfg.rna_lr, corruptions=names, seed=cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        losses = train_rna(rna, progress(batches(train, cfg.batch_size, gen), total=cfg.rna_steps, desc=label), rna_cfg)
        print(
            f"{label}: training loss first 20 steps {sum(losses[:20]) / 20:.3f}, last 20 {sum(losses[-20:]) / 20:.3f}"
        )
        rnas[label] = rna.eval()
    methods = {
        "none": make_method("none", model),
        "norm": make_method("norm", model),
        "tent_style": make_method("tto", model, mode="continual", steps=1, lr=cfg.tto_lr, per_sample=False),
        **{f"tto_{k}": make_method("tto", model, steps=k, lr=cfg.tto_lr) for k in (1, 5, 20)},
        **{label: make_method("rna", rna) for label, rna in rnas.items()},
    }
    rows = []
    for name in progress(names, desc="corruptions"):
        for severity in range(1, 6):
            gen = torch.Generator().manual_seed(cfg.seed + severity)
            for m in methods.values():
                m.reset()
            batch = corrupted(test, name, severity, cfg.seed * 1000 + severity)
            rows += [
                {"corruption": name, "severity": severity, **r}
                for r in compare_methods(methods, [batch], DOMAIN, partial(sparse_signal, generator=gen))
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
    print(f"wall time {time.perf_counter() - t0:.0f} s")


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
