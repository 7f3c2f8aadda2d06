"""Train a dense pseudolabeler: ``python -m robust.train --data-root DATA --out-dir RUN [flags]``.

Any ``--in-domains`` -> ``--out-domains`` pair with its masked loss (:mod:`robust.losses`), on a
Taskonomy-format root. AdamW with linear warm-up + cosine decay, bf16 autocast on CUDA (fp32 on CPU),
gradient accumulation, ``torchrun`` DDP, ``--compile``. Every ``--val-every`` steps: metrics on clean
validation views and on each ``--val-corruptions name:severity``. Checkpoints hold model, optimiser,
scheduler, step and RNG states; ``--resume`` continues bit-exactly (on CPU) from ``OUT/checkpoint.pt``.

Methods (``--method baseline|xtc|xde``) plug in through :mod:`robust.training.methods`.

Examples::

    python -m robust.train --data-root data/synth --out-dir runs/normal --out-domains normal --steps 20000
    torchrun --nproc-per-node 4 -m robust.train --data-root D --out-dir R --model dense_vit_small \\
        --model-args backbone_kw="{'img_size': 256}" --val-corruptions fog_3d:3 near_focus:3 --augment 3dcc
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import math
import os
import random
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from robust.io import POINT_INFO, ResizeCrop, collate_views
from robust.io.atomic import atomic_write_bytes
from robust.metrics import MetricAccumulator
from robust.runs import Run, parse_config, progress, seed_everything
from robust.tasks import get_domain
from robust.training.data import ResumableSampler, ViewStream, split_views
from robust.training.methods import Method, get_method

METHOD_PROVIDERS = {"xtc": "consistency", "xde": "ensembles"}
"""Method name -> package whose import registers it (imported lazily, entry point only)."""
CHECKPOINT = "checkpoint.pt"


def _kv(items: list[str], flag: str) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"{flag}: expected key=value, got {item!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


@dataclass
class TrainConfig:
    """Train a dense predictor (in-domains -> out-domains) on Taskonomy-format data."""

    data_root: str = field(default=None, metadata={"help": "Taskonomy-format data root"})
    out_dir: str = field(default=None, metadata={"help": "run folder: config.json, metrics.jsonl, checkpoint.pt"})
    in_domains: list[str] = field(default_factory=lambda: ["rgb"], metadata={"help": "input domains"})
    out_domains: list[str] = field(default_factory=lambda: ["normal"], metadata={"help": "predicted domains"})
    model: str = field(default="unet", metadata={"help": "robust.models name (unet, unet_tiny, dense, dense_*)"})
    model_args: list[str] = field(default_factory=list, metadata={"help": "create_model kwargs, key=value"})
    num_classes: int | None = field(default=None, metadata={"help": "classes for segment_semantic"})
    method: str = field(default="baseline", metadata={"help": "baseline | xtc | xde (or any registered method)"})
    method_args: list[str] = field(default_factory=list, metadata={"help": "method kwargs, key=value"})
    normal_loss: str = field(default="l1", metadata={"help": "l1 | cosine", "choices": ["l1", "cosine"]})
    image_size: int = field(default=256, metadata={"help": "resize shorter side and square crop (px)"})
    val_buildings: list[str] = field(default_factory=list, metadata={"help": "validation buildings"})
    split_csv: str | None = field(default=None, metadata={"help": "Taskonomy split CSV (train/val columns)"})
    val_fraction: float = field(default=0.1, metadata={"help": "random view fraction for validation"})
    batch_size: int = field(default=8, metadata={"help": "per-device micro-batch"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimiser step"})
    steps: int = field(default=1000, metadata={"help": "optimiser steps"})
    lr: float = field(default=1e-4, metadata={"help": "peak AdamW learning rate"})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay"})
    warmup: int = field(default=100, metadata={"help": "linear warm-up steps"})
    val_every: int = field(default=500, metadata={"help": "validate every N steps (and at the end)"})
    val_batches: int = field(default=0, metadata={"help": "cap on validation batches (0 = all)"})
    val_corruptions: list[str] = field(default_factory=list, metadata={"help": "name:severity, e.g. fog_3d:3"})
    ckpt_every: int = field(default=500, metadata={"help": "checkpoint every N steps (and at the end)"})
    log_every: int = field(default=50, metadata={"help": "log training loss every N steps"})
    augment: str = field(default="", metadata={"help": "training augmentation: '' or 3dcc"})
    resume: bool = field(default=False, metadata={"help": "continue from OUT/checkpoint.pt"})
    seed: int = field(default=0, metadata={"help": "seed for init, data order, crops, corruptions"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda"})
    amp: bool = field(default=True, metadata={"help": "bf16 autocast on CUDA"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model"})
    workers: int = field(default=2, metadata={"help": "DataLoader workers"})
    wandb: bool = field(default=False, metadata={"help": "log to wandb (offline by default)"})

    def __post_init__(self) -> None:
        for flag in ("data_root", "out_dir"):
            if not getattr(self, flag):
                raise ValueError(f"--{flag.replace('_', '-')} is required")
        self.in_domains = [get_domain(d).name for d in self.in_domains]
        self.out_domains = [get_domain(d).name for d in self.out_domains]
        self.val_corruptions = [c for item in self.val_corruptions for c in item.split(",") if c]
        for name in ("batch_size", "grad_accum", "steps", "val_every", "ckpt_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.augment not in ("", "3dcc"):
            raise ValueError(f"--augment must be '' or '3dcc', got {self.augment!r}")

    def model_kwargs(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, **_kv(self.model_args, "--model-args")}

    def method_kwargs(self) -> dict[str, Any]:
        return _kv(self.method_args, "--method-args")

    def domains(self) -> list[str]:
        """Domains to load: inputs, targets and ``mask_valid`` when any depth is loaded."""
        names = list(dict.fromkeys(self.in_domains + self.out_domains))
        if any(d.startswith("depth") for d in names):
            names.append("mask_valid")
        return names


def resolve_method(name: str) -> Any:
    """The registered method builder, importing its provider package first if needed."""
    if name in METHOD_PROVIDERS:
        importlib.import_module(METHOD_PROVIDERS[name])
    return get_method(name)


def parse_val_corruptions(items: list[str]) -> list[tuple[str, int]]:
    """``["fog_3d:3", ...]`` -> ``[("fog_3d", 3), ...]``; names not in the corruption registry are skipped."""
    import corruptions3d

    known = set(corruptions3d.list_corruptions())
    out = []
    for item in items:
        name, _, sev = item.partition(":")
        if not sev.isdigit() or not 1 <= int(sev) <= 5:
            raise ValueError(f"--val-corruptions: expected name:severity (1..5), got {item!r}")
        if name not in known:
            print(f"[robust.train] skipping validation corruption {name!r}: not registered", file=sys.stderr)
            continue
        out.append((name, int(sev)))
    return out


def build_augment(kind: str) -> Any:
    if not kind:
        return None
    try:
        from corruptions3d.augmentation import Augment3DCC
    except ImportError as e:
        raise RuntimeError(f"--augment 3dcc needs corruptions3d.augmentation.Augment3DCC ({e})") from e
    return Augment3DCC()


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP / ``torch.compile`` wrappers."""
    model = getattr(model, "_orig_mod", model)
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def save_checkpoint(path: Path, model, optimizer, scheduler, step: int, cfg: TrainConfig) -> None:
    import io

    buf = io.BytesIO()
    torch.save(
        {
            "model": unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "rng": rng_state(),
            "config": vars(cfg),
        },
        buf,
    )
    atomic_write_bytes(path, buf.getvalue())


def load_predictor(path: str | Path, device: str | torch.device = "cpu") -> tuple[Callable, TrainConfig]:
    """A trained model from a ``robust.train`` checkpoint as ``predict(batch) -> {domain: tensor}`` (eval mode).

    Works for every registered method (the method's own prediction, e.g. XDE's merged mean, is used).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or not {"model", "config"} <= set(state):
        raise ValueError(f"{path}: not a robust.train checkpoint (needs 'model' and 'config' entries)")
    cfg = TrainConfig(**state["config"])
    method = resolve_method(cfg.method)(cfg)
    method.model.load_state_dict(state["model"])
    model = method.model.to(device).eval()

    @torch.no_grad()
    def predict(batch: dict) -> dict[str, torch.Tensor]:
        return method.outputs(model, batch)

    return predict, cfg


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def seeds_of(batch: dict, seed: int) -> torch.Tensor:
    """Per-image corruption seeds from the view identity (independent of batch composition)."""
    from corruptions3d.random import mix

    keys = batch["key"]
    return torch.tensor([mix(seed, zlib.crc32(k.building.encode()), k.point, k.view) for k in keys], dtype=torch.int64)


@torch.no_grad()
def validate(method: Method, model, loader, cfg: TrainConfig, corruptions, device, autocast) -> dict[str, float]:
    """Metrics on clean views and per corruption, keyed ``val/<clean|name_sev>/<domain>/<metric>``."""
    import corruptions3d

    model.eval()
    accs = {"clean": MetricAccumulator(cfg.num_classes)}
    accs.update({f"{n}_{s}": MetricAccumulator(cfg.num_classes) for n, s in corruptions})
    for i, batch in enumerate(loader):
        if cfg.val_batches and i >= cfg.val_batches:
            break
        batch = to_device(batch, device)
        for name, acc in accs.items():
            b = batch
            if name != "clean":
                cname, sev = name.rsplit("_", 1)
                rgb = corruptions3d.corrupt(batch, cname, int(sev), generator=seeds_of(batch, cfg.seed))
                b = {**batch, "rgb": rgb.clamp(0, 1)}
            with autocast():
                outputs = method.outputs(model, b)
            acc.update({k: v.float() for k, v in outputs.items()}, b, cfg.out_domains)
    model.train()
    return {f"val/{name}/{k}": v for name, acc in accs.items() for k, v in acc.compute().items()}


def train(cfg: TrainConfig) -> dict[str, float]:
    """Run training; returns the last validation metrics."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if cfg.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
    seed_everything(cfg.seed)
    out = Path(cfg.out_dir)
    ckpt_path = out / CHECKPOINT
    if cfg.resume and not ckpt_path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")

    corruptions = parse_val_corruptions(cfg.val_corruptions)
    augment = build_augment(cfg.augment)
    import corruptions3d

    dataset, train_idx, val_idx = split_views(cfg.data_root, cfg.domains(), cfg.val_buildings, cfg.split_csv,
                                              cfg.val_fraction, cfg.seed)  # fmt: skip
    on_disk = set(dataset.index.domains()) | ({"intrinsics"} if POINT_INFO in dataset.index.domains() else set())
    usable = []
    for name, sev in corruptions:
        missing = [d for d in corruptions3d.get_corruption(name).requires if d not in on_disk]
        if missing:
            print(f"[robust.train] skipping validation corruption {name!r}: data lacks {missing}", file=sys.stderr)
        else:
            usable.append((name, sev))
    corruptions = usable
    extra = {d for n, _ in corruptions for d in corruptions3d.get_corruption(n).requires}
    extra |= {"depth_euclidean", "intrinsics"} if augment is not None else set()
    extra = [d for d in sorted(extra) if d in on_disk and d not in cfg.domains()]
    if extra:
        dataset = type(dataset)(cfg.data_root, cfg.domains() + extra, index=dataset.index)

    method = resolve_method(cfg.method)(cfg)
    model = method.model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def schedule(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    step = 0
    if cfg.resume:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = state["step"]
    run = Run(out, cfg, wandb=cfg.wandb) if rank == 0 else None

    train_model = ddp = model
    if world > 1:
        ids = [device] if device.type == "cuda" else None
        train_model = ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if cfg.compile:
        train_model = torch.compile(train_model)

    micro = cfg.batch_size * world
    sampler = ResumableSampler(
        len(train_idx), cfg.seed, start=step * cfg.grad_accum * micro, rank=rank, world_size=world
    )
    train_stream = ViewStream(dataset, train_idx, ResizeCrop(cfg.image_size, cfg.image_size, "random", cfg.seed))
    loader_kw = {"batch_size": cfg.batch_size, "num_workers": cfg.workers, "collate_fn": collate_views,
                 "pin_memory": device.type == "cuda", "persistent_workers": cfg.workers > 0}  # fmt: skip
    loader = iter(DataLoader(train_stream, sampler=sampler, drop_last=True, **loader_kw))
    val_loader = None
    if val_idx and rank == 0:
        val_stream = ViewStream(dataset, val_idx, ResizeCrop(cfg.image_size, cfg.image_size, "center"))
        val_loader = DataLoader(val_stream, shuffle=False, **{**loader_kw, "persistent_workers": False})

    if cfg.resume:  # after creating the loader iterator, which draws worker seeds from the global RNG
        set_rng_state(state["rng"])
    use_amp = cfg.amp and device.type == "cuda"

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp)

    last_val: dict[str, float] = {}
    bar = progress(total=cfg.steps, initial=step, desc="train")
    train_model.train()
    while step < cfg.steps:
        optimizer.zero_grad(set_to_none=True)
        logs_sum: dict[str, float] = {}
        for m in range(cfg.grad_accum):
            batch = to_device(next(loader), device)
            if augment is not None:
                batch = {**batch, "rgb": augment(batch, generator=seeds_of(batch, cfg.seed + step))["rgb"]}
            sync = contextlib.nullcontext() if world == 1 or m == cfg.grad_accum - 1 else ddp.no_sync()
            with sync:
                with autocast():
                    loss, logs = method.loss_fn(batch, train_model(batch))
                (loss / cfg.grad_accum).backward()
            for k, v in {"loss": loss, **logs}.items():
                logs_sum[k] = logs_sum.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v) / cfg.grad_accum
        optimizer.step()
        scheduler.step()
        step += 1
        bar.update(1)
        if run is not None and (step % cfg.log_every == 0 or step == cfg.steps):
            run.log({f"train/{k}": v for k, v in logs_sum.items()} | {"lr": scheduler.get_last_lr()[0]}, step=step)
            bar.set_postfix(loss=f"{logs_sum['loss']:.4f}")
        if run is not None and val_loader is not None and (step % cfg.val_every == 0 or step == cfg.steps):
            rng = rng_state()  # validation must not shift the training random streams (exact resume)
            last_val = validate(method, model, val_loader, cfg, corruptions, device, autocast)
            set_rng_state(rng)
            run.log(last_val, step=step)
        if run is not None and (step % cfg.ckpt_every == 0 or step == cfg.steps):
            save_checkpoint(ckpt_path, model, optimizer, scheduler, step, cfg)
    bar.close()
    if run is not None:
        run.finish()
    if world > 1:
        dist.destroy_process_group()
    return last_val


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(TrainConfig, argv, description=__doc__)
    train(cfg)


if __name__ == "__main__":
    main()
