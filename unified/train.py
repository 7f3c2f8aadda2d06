"""Train the unified model on token shards.

``torchrun --nproc-per-node 8 -m unified.train --config cfg.yaml [--flag value ...]`` (flags override the
file; ``python -m unified.train --help`` lists them). AdamW (0.9, 0.95), linear warmup + cosine decay, bf16
autocast on CUDA, optional ``torch.compile``, DDP (or FSDP ``SHARD_GRAD_OP`` with ``--fsdp``) when
``WORLD_SIZE > 1``, gradient checkpointing, ``OUT/checkpoint-<step>.pt`` with exact resume (batches and
masks are pure functions of (seed, step, rank)), per-modality losses every ``log_every`` steps (the
only host syncs).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from robust.runs import Run, parse_config, progress, seed_everything
from unified.masking import Masker, symmetric_mixture
from unified.model import UnifiedModel, model_config
from unified.shards import read_shards, shard_paths


@dataclass
class TrainConfig:
    """Train the 4M-style unified model on token shards."""

    shards: str = field(default=None, metadata={"help": "folder of shard-NNNNN.tar token shards"})
    out: str = field(default=None, metadata={"help": "run folder (checkpoints, metrics.jsonl)"})
    size: str = field(default="tiny", metadata={"choices": ["tiny", "B", "L", "XL"]})
    modalities: list[str] = field(default_factory=lambda: ["rgb", "depth", "normal", "reshading"])
    grid: int = field(default=14, metadata={"help": "image token grid side (image size / 16)"})
    input_budget: int = 256
    target_budget: int = 256
    alphas: list[float] = field(default_factory=lambda: [0.1, 1.0, 10.0], metadata={"help": "symmetric mixture"})
    batch_size: int = field(default=64, metadata={"help": "per process"})
    steps: int = 10000
    warmup_steps: int = 500
    lr: float = 1e-4
    min_lr: float = 0.0
    weight_decay: float = 0.05
    grad_clip: float = 0.0
    compile: bool = False
    grad_checkpointing: bool = False
    fsdp: bool = False
    log_every: int = 50
    ckpt_every: int = 1000
    resume: bool = True
    seed: int = 0
    workers: int = 2
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    wandb: bool = False


def load_config(argv: list[str] | None = None) -> TrainConfig:
    """``--config FILE`` (JSON or YAML) supplies defaults; other flags override it."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, rest = pre.parse_known_args(argv)
    flags: list[str] = []
    if known.config:
        path = Path(known.config)
        if not path.is_file():
            raise FileNotFoundError(f"--config {path}: file not found")
        if path.suffix in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(path.read_text())
        else:
            values = json.loads(path.read_text())
        for k, v in values.items():
            flag = "--" + k.replace("_", "-")
            if isinstance(v, bool):
                flags.append(flag if v else "--no-" + flag[2:])
            else:
                flags += [flag, *(map(str, v) if isinstance(v, list) else [str(v)])]
    return parse_config(TrainConfig, flags + rest)


class StepBatches(Dataset):
    """Item ``s`` is the masked batch of step ``s`` for this rank (epoch permutation from the seed)."""

    def __init__(self, samples: list[dict[str, np.ndarray]], masker: Masker, cfg: TrainConfig, rank: int, world: int):
        self.samples, self.masker, self.cfg, self.rank, self.world = samples, masker, cfg, rank, world
        self.global_batch = cfg.batch_size * world

    def __len__(self) -> int:
        return self.cfg.steps

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        n = len(self.samples)
        first = step * self.global_batch + self.rank * self.cfg.batch_size
        flat = np.arange(first, first + self.cfg.batch_size)
        epochs, offsets = flat // n, flat % n
        idx = [np.random.default_rng([self.cfg.seed, int(e)]).permutation(n)[o] for e, o in zip(epochs, offsets)]
        seeds = [[self.cfg.seed, step, int(i)] for i in flat]
        return self.masker.batch([self.samples[i] for i in idx], seeds)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warmup then cosine decay to ``min_lr`` (as a factor of ``lr``)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    floor = cfg.min_lr / cfg.lr
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _wrap(model: UnifiedModel, cfg: TrainConfig, device: torch.device) -> torch.nn.Module:
    if not dist.is_initialized():
        return model
    if cfg.fsdp:
        from torch.distributed.fsdp import FullyShardedDataParallel, ShardingStrategy
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy

        from unified.model import DecoderBlock, EncoderBlock

        return FullyShardedDataParallel(
            model,
            sharding_strategy=ShardingStrategy.SHARD_GRAD_OP,
            auto_wrap_policy=ModuleWrapPolicy({EncoderBlock, DecoderBlock}),
            use_orig_params=True,
            device_id=device if device.type == "cuda" else None,
        )
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def _is_fsdp(wrapped: torch.nn.Module) -> bool:
    return type(wrapped).__name__ == "FullyShardedDataParallel"


def _state_dicts(wrapped: torch.nn.Module, model: UnifiedModel, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Full (unsharded) model and optimizer state dicts; a collective under FSDP (rank 0 gets them)."""
    if not _is_fsdp(wrapped):
        return model.state_dict(), opt.state_dict()
    from torch.distributed.fsdp import FullOptimStateDictConfig, FullStateDictConfig, StateDictType

    fsdp = type(wrapped)
    with fsdp.state_dict_type(
        wrapped,
        StateDictType.FULL_STATE_DICT,
        FullStateDictConfig(offload_to_cpu=True, rank0_only=True),
        FullOptimStateDictConfig(offload_to_cpu=True, rank0_only=True),
    ):
        return wrapped.state_dict(), fsdp.optim_state_dict(wrapped, opt)


def _optim_to_load(wrapped: torch.nn.Module, opt: torch.optim.Optimizer, state: dict) -> dict:
    if not _is_fsdp(wrapped):
        return state
    from torch.distributed.fsdp import StateDictType

    fsdp = type(wrapped)
    with fsdp.state_dict_type(wrapped, StateDictType.FULL_STATE_DICT):
        return fsdp.optim_state_dict_to_load(wrapped, opt, state)


def latest_checkpoint(out: str | Path) -> Path | None:
    found = sorted(Path(out).glob("checkpoint-*.pt"))
    return found[-1] if found else None


def train(cfg: TrainConfig) -> list[dict]:
    """Run training; returns the logged metric rows (rank 0)."""
    for name in ("shards", "out"):
        if not getattr(cfg, name):
            raise ValueError(f"--{name} is required")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = torch.device(cfg.device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
    seed_everything(cfg.seed + rank)
    mcfg = model_config(cfg.size, modalities=tuple(cfg.modalities), grid=cfg.grid)
    mcfg.grad_checkpointing = cfg.grad_checkpointing
    model = UnifiedModel(mcfg)
    samples = [tokens for _, tokens in read_shards(shard_paths(cfg.shards), cfg.modalities)]
    for m in model.modalities:
        n = len(samples[0][m.name])
        if m.kind == "image" and n != m.max_tokens:
            raise ValueError(
                f"{cfg.shards}: {m.name} has {n} tokens per view but --grid {cfg.grid} needs {m.max_tokens}"
            )
    masker = Masker(
        model.modalities, cfg.input_budget, cfg.target_budget, symmetric_mixture(cfg.modalities, cfg.alphas)
    )
    start, ckpt = 0, None
    ckpt_path = latest_checkpoint(cfg.out) if cfg.resume else None
    if ckpt_path is not None:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.load_state_dict(ckpt["model"])
        start = int(ckpt["step"])
    wrapped = _wrap(model.to(device), cfg, device)
    opt = torch.optim.AdamW(
        _param_groups(wrapped, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8, fused=device.type == "cuda"
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, partial(lr_factor, cfg=cfg))
    if ckpt is not None:
        opt.load_state_dict(_optim_to_load(wrapped, opt, ckpt["optimizer"]))
        sched.load_state_dict(ckpt["scheduler"])
    step_fn = torch.compile(wrapped) if cfg.compile else wrapped
    loader = DataLoader(
        StepBatches(samples, masker, cfg, rank, world),
        batch_size=None,
        sampler=range(start, cfg.steps),
        num_workers=cfg.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    run = Run(cfg.out, cfg, wandb=cfg.wandb and rank == 0, project="unified") if rank == 0 else None
    names = [m.name for m in model.modalities]
    m_count = len(names)
    acc = torch.zeros(1 + 2 * m_count, device=device)
    history: list[dict] = []
    autocast = torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda")
    bar = progress(total=cfg.steps, initial=start, desc="train") if rank == 0 else None
    step = start
    for batch in loader:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with autocast:
            loss, per_mod, counts = step_fn(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        present = (counts > 0).float()
        acc += torch.cat([loss.detach()[None].float(), per_mod * present, present])
        step += 1
        if bar is not None:
            bar.update()
        if step % cfg.log_every == 0 or step == cfg.steps:
            if world > 1:
                dist.all_reduce(acc)
            a = acc.cpu().tolist()
            n_steps = (step - start) % cfg.log_every or cfg.log_every
            row = {"loss": a[0] / (n_steps * world), "lr": sched.get_last_lr()[0]}
            row.update({f"loss/{k}": a[1 + i] / a[1 + m_count + i] for i, k in enumerate(names) if a[1 + m_count + i]})
            acc.zero_()
            if run is not None:
                run.log(row, step=step)
                history.append({"step": step, **row})
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            model_state, optim_state = _state_dicts(wrapped, model, opt)
            if rank == 0:
                ckpt = {"model": model_state, "optimizer": optim_state, "scheduler": sched.state_dict()}
                _save(Path(cfg.out) / f"checkpoint-{step:08d}.pt", {**ckpt, "step": step, "config": vars(cfg)})
    if bar is not None:
        bar.close()
    if run is not None:
        run.finish()
    return history


def _save(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    train(load_config(argv))
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
