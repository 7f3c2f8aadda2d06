"""Robust pseudolabelers on the synthetic dataset: rgb→normal baseline vs XTC vs XDE, clean and corrupted.

Trains (through ``robust.train``, tiny UNets) the L1 baseline, the frozen networks XTC needs (perceptual
``normal→Z``, and ``rgb→Z``/``Z→normal`` for the energy paths), XTC, and XDE (stage ``nll`` then
``sigma``). Then, on the held-out building, clean and under each corruption at severities 1-5, it reports:

- error per model: mean angular error (degrees) of the normals;
- Pearson r between the consistency energy (XTC model as direct path) and its error, pooled over all
  conditions (published: r = 0.67);
- OOD ROC-AUC, clean vs severity 5, of the energy (published: 0.95) and of XDE's mean σ;
- XDE calibration: Laplace NLL of the merged prediction (b = σ/√2) and AUSE of σ against |error|.

Writes ``OUT/results.csv`` (one row per condition), ``OUT/results.md`` and ``OUT/results.png``; trained
runs go to ``OUT/runs/`` and are reused when their checkpoint exists.

    python experiments/pseudolabelers.py --out runs/pseudolabelers --steps 300 --size 64
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

import corruptions3d
from consistency import ConsistencyEnergy, TaskGraph, load_trained
from ensembles import XDEnsemble, load_ensemble_state
from robust.io import ResizeCrop, TaskonomyDataset, collate_views
from robust.losses import valid_mask
from robust.metrics import normal_metrics, roc_auc, sparsification
from robust.runs import parse_config, seed_everything
from robust.synth import building_name, ensure_dataset
from robust.train import CHECKPOINT, TrainConfig, train

PREFERRED_CORRUPTIONS = ("gaussian_noise", "defocus_blur", "jpeg_compression", "fog_3d", "near_focus", "low_light",
                         "contrast", "pixelate")  # fmt: skip
LOADED = ("rgb", "normal", "depth_euclidean", "mask_valid")


@dataclass
class ExperimentConfig:
    """Baseline vs XTC vs XDE normal pseudolabelers on synthetic data, clean and corrupted."""

    out: str = field(default=None, metadata={"help": "output folder (data/, runs/, results.*)"})
    data: str = field(default="", metadata={"help": "existing synthetic root (default: generate OUT/data)"})
    buildings: int = field(default=3, metadata={"help": "synthetic buildings; the last one is held out"})
    points: int = field(default=4, metadata={"help": "fixation points per building"})
    views: int = field(default=3, metadata={"help": "views per point"})
    size: int = field(default=64, metadata={"help": "image side (px), divisible by 4"})
    steps: int = field(default=300, metadata={"help": "optimiser steps of the baseline and XDE stage 1"})
    frozen_steps: int = field(default=0, metadata={"help": "steps of each frozen rgb→Z, Z→normal, normal→Z (0: steps)"})
    xtc_steps: int = field(default=0, metadata={"help": "XTC steps, started from the baseline (0: steps)"})
    xtc_balance_every: int = field(default=1, metadata={"help": "XTC steps between gradient-balancing updates"})
    sigma_steps: int = field(default=0, metadata={"help": "XDE sigma-training steps (0: steps // 2)"})
    batch_size: int = field(default=8, metadata={"help": "batch size"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate"})
    energy_middles: list[str] = field(
        default_factory=lambda: ["depth_zbuffer", "reshading", "principal_curvature"],
        metadata={"help": "middle domains Z of the perceptual terms and energy paths"},
    )
    xde_middles: list[str] = field(
        default_factory=lambda: ["rgb", "grey", "sobel_edges", "emboss4d", "wav"],
        metadata={"help": "XDE middle domains"},
    )
    corruptions: list[str] = field(default_factory=list, metadata={"help": "corruptions (default: 6 registered)"})
    seed: int = field(default=0, metadata={"help": "seed"})


def fit(cfg: ExperimentConfig, data: Path, name: str, steps: int, **kw) -> Path:
    """Train one network with ``robust.train`` unless ``runs/name/checkpoint.pt`` exists; returns it."""
    out = Path(cfg.out) / "runs" / name
    if not (out / CHECKPOINT).is_file():
        kw = {"model": "unet_tiny", "image_size": cfg.size, "batch_size": cfg.batch_size, "lr": cfg.lr,
              "warmup": max(1, steps // 10), "val_every": steps, "ckpt_every": steps, "log_every": max(1, steps // 10),
              "workers": 0, "seed": cfg.seed, "val_buildings": [building_name(cfg.buildings - 1)], **kw}  # fmt: skip
        train(TrainConfig(data_root=str(data), out_dir=str(out), steps=steps, **kw))
    return out / CHECKPOINT


def corruption_list(cfg: ExperimentConfig) -> list[str]:
    known = corruptions3d.list_corruptions(video=False)
    if cfg.corruptions:
        missing = sorted(set(cfg.corruptions) - set(known))
        if missing:
            raise KeyError(f"--corruptions: not registered: {missing}; known: {', '.join(known)}")
        return list(cfg.corruptions)
    ok = [n for n in PREFERRED_CORRUPTIONS if n in known]
    ok += [n for n in known if n not in ok and set(corruptions3d.get_corruption(n).requires) <= set(LOADED)]
    return ok[:6]


def train_all(cfg: ExperimentConfig, data: Path) -> dict[str, Path]:
    ckpt = {"baseline": fit(cfg, data, "baseline", cfg.steps, out_domains=["normal"])}
    frozen = cfg.frozen_steps or cfg.steps
    for z in cfg.energy_middles:
        ckpt[f"normal->{z}"] = fit(cfg, data, f"normal2{z}", frozen, in_domains=["normal"], out_domains=[z])
        ckpt[f"rgb->{z}"] = fit(cfg, data, f"rgb2{z}", frozen, out_domains=[z])
        ckpt[f"{z}->normal"] = fit(cfg, data, f"{z}2normal", frozen, in_domains=[z], out_domains=["normal"])
    percep = ",".join(f"{z}:{ckpt[f'normal->{z}']}" for z in cfg.energy_middles)
    direct = ",".join(f"{z}:{ckpt[f'rgb->{z}']}" for z in cfg.energy_middles)
    xtc_steps = cfg.xtc_steps or cfg.steps
    ckpt["xtc"] = fit(cfg, data, "xtc", xtc_steps, out_domains=["normal"], method="xtc",
                      method_args=[f"percep={percep}", f"direct={direct}", f"init={ckpt['baseline']}",
                                   f"select_every={max(1, xtc_steps // 10)}",
                                   f"balance_every={cfg.xtc_balance_every}"])  # fmt: skip
    middles = "middles=" + ",".join(cfg.xde_middles)
    ckpt["xde_nll"] = fit(cfg, data, "xde_nll", cfg.steps, out_domains=["normal"], method="xde",
                          method_args=["stage=nll", middles])  # fmt: skip
    sigma_steps = cfg.sigma_steps or max(1, cfg.steps // 2)
    ckpt["xde"] = fit(cfg, data, "xde_sigma", sigma_steps, out_domains=["normal"], method="xde", lr=cfg.lr / 10,
                      method_args=["stage=sigma", middles, f"init={ckpt['xde_nll']}"])  # fmt: skip
    return ckpt


def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    return float((x * y).sum() / (x.norm() * y.norm()).clamp_min(1e-12))


@torch.no_grad()
def evaluate(cfg: ExperimentConfig, data: Path, ckpt: dict[str, Path]) -> list[dict]:
    baseline, xtc = load_trained(ckpt["baseline"]), load_trained(ckpt["xtc"])
    edges = {}
    for z in cfg.energy_middles:
        edges[("rgb", z)] = load_trained(ckpt[f"rgb->{z}"])
        edges[(z, "normal")] = load_trained(ckpt[f"{z}->normal"])
    energy = ConsistencyEnergy(xtc, "normal", TaskGraph(edges), cfg.energy_middles)
    xde = load_ensemble_state(XDEnsemble.build("normal", cfg.xde_middles, downsample=2), ckpt["xde"]).eval()

    ds = TaskonomyDataset(data, list(LOADED))
    held_out = building_name(cfg.buildings - 1)
    crop = ResizeCrop(cfg.size, cfg.size, "center")
    views = [{**crop(ds.load(k), i), "key": k} for i, k in enumerate(ds.keys) if k.building.endswith(held_out)]
    batch = collate_views(views)
    energy.fit([batch["rgb"]])
    conditions = [("clean", 0)] + [(c, s) for c in corruption_list(cfg) for s in range(1, 6)]
    rows = []
    for name, sev in conditions:
        rgb = batch["rgb"] if sev == 0 else corruptions3d.corrupt(batch, name, sev, generator=cfg.seed).clamp(0, 1)
        b = {**batch, "rgb": rgb}
        mask = valid_mask("normal", b["normal"], b)
        err = {m: normal_metrics(net(b)["normal"], b["normal"], mask)["angle_mean"] for m, net in
               (("baseline", baseline), ("xtc", xtc))}  # fmt: skip
        mean, sigma = xde.predict(rgb)
        err["xde"] = normal_metrics(mean, b["normal"], mask)["angle_mean"]
        abs_err = (mean - b["normal"]).abs()
        bscale = sigma / math.sqrt(2)
        nll = ((bscale * 2).log() + abs_err / bscale) * mask
        rows.append({
            "corruption": name, "severity": sev,
            **{f"error_{m}": e for m, e in err.items()},
            "energy": energy(rgb), "xde_sigma": (sigma * mask).flatten(1).sum(1) / mask.flatten(1).sum(1) / 3,
            "xde_nll": nll.flatten(1).sum(1) / mask.flatten(1).sum(1) / 3,
            "xde_ause": sparsification(abs_err, sigma, mask)["ause"],
        })  # fmt: skip
    return rows


def summarise(rows: list[dict]) -> dict[str, float]:
    energy = torch.cat([r["energy"] for r in rows])
    error = torch.cat([r["error_xtc"] for r in rows])
    clean = next(r for r in rows if r["severity"] == 0)
    sev5 = [r for r in rows if r["severity"] == 5]

    def auc(key: str) -> float:
        scores = torch.cat([clean[key]] + [r[key] for r in sev5])
        labels = torch.cat([torch.zeros(len(clean[key]))] + [torch.ones(len(r[key])) for r in sev5])
        return float(roc_auc(scores, labels))

    return {"pearson_r_energy_error": pearson(energy, error), "roc_auc_energy": auc("energy"),
            "roc_auc_xde_sigma": auc("xde_sigma"), "images_per_condition": len(clean["energy"])}  # fmt: skip


def write_outputs(out: Path, rows: list[dict], summary: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = [{k: (float(v.nanmean()) if isinstance(v, torch.Tensor) else v) for k, v in r.items()} for r in rows]
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    cols = list(table[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += [
        "| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()) + " |" for r in table
    ]
    lines += ["", "| summary | measured | published |", "|---|---|---|",
              f"| Pearson r (energy, XTC error) | {summary['pearson_r_energy_error']:.3f} | 0.67 |",
              f"| ROC-AUC energy, clean vs sev. 5 | {summary['roc_auc_energy']:.3f} | 0.95 |",
              f"| ROC-AUC XDE σ, clean vs sev. 5 | {summary['roc_auc_xde_sigma']:.3f} | — |",
              f"| images per condition | {summary['images_per_condition']} | |",
              f"| wall minutes: training, evaluation | {summary['train_minutes']:.1f}, "
              f"{summary['eval_minutes']:.1f} | |"]  # fmt: skip
    (out / "results.md").write_text("\n".join(lines) + "\n")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for m in ("baseline", "xtc", "xde"):
        by_severity = [[r[f"error_{m}"] for r in table if r["severity"] == s] for s in range(6)]
        curve = [sum(v) / len(v) if v else float("nan") for v in by_severity]
        ax1.plot(range(6), curve, marker="o", label=m)
    ax1.set(xlabel="severity (0 = clean)", ylabel="mean angular error (deg)", title="error vs severity")
    ax1.legend()
    ax2.scatter(torch.cat([r["energy"] for r in rows]), torch.cat([r["error_xtc"] for r in rows]), s=6)
    ax2.set(xlabel="consistency energy", ylabel="XTC angular error (deg)",
            title=f"r = {summary['pearson_r_energy_error']:.2f}")  # fmt: skip
    fig.tight_layout()
    fig.savefig(out / "results.png", dpi=120)


def main(argv: list[str] | None = None) -> dict[str, float]:
    cfg = parse_config(ExperimentConfig, argv, description=__doc__)
    if not cfg.out:
        raise ValueError("--out is required")
    seed_everything(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(cfg.data) if cfg.data else ensure_dataset(out / "data", cfg.buildings, cfg.points, cfg.views,
                                                           cfg.size, cfg.seed)  # fmt: skip
    start = time.perf_counter()
    ckpt = train_all(cfg, data)
    trained = time.perf_counter()
    rows = evaluate(cfg, data, ckpt)
    minutes = {"train_minutes": (trained - start) / 60, "eval_minutes": (time.perf_counter() - trained) / 60}
    summary = summarise(rows) | minutes
    write_outputs(out, rows, summary)
    print((out / "results.md").read_text())
    return summary


if __name__ == "__main__":
    main()
