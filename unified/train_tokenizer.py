"""Train a VQ-VAE tokenizer for one image-like modality on a Taskonomy-format folder.

``python -m unified.train_tokenizer --modality depth --data DIR --out runs/vq_depth --steps 20000``
writes ``OUT/vqvae.pt`` (config + weights), ``OUT/config.json`` and ``OUT/metrics.jsonl``; with ``--tokenizers TOK``
also ``TOK/<modality>.pt``, the folder ``unified.tokenize`` and ``unified.generate`` read their VQ-VAEs from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from robust.io import ResizeCrop, TaskonomyDataset, collate_views
from robust.runs import Run, parse_config, progress, seed_everything
from unified.modalities import get_modality
from unified.vqvae import VQVAE, VQVAEConfig


@dataclass
class TokenizerTrainConfig:
    """Train a VQ-VAE tokenizer (patch 16, EMA cosine codebook) for one image modality."""

    data: str = field(default=None, metadata={"help": "Taskonomy-format root"})
    out: str = field(default=None, metadata={"help": "output folder (vqvae.pt, metrics.jsonl)"})
    modality: str = field(default="rgb", metadata={"help": "image modality of unified.modalities"})
    tokenizers: str | None = field(
        default=None, metadata={"help": "also save as TOK/<modality>.pt (the --tokenizers folder of tokenize/generate)"}
    )
    vocab_size: int = 1024
    latent_dim: int = 32
    width: int = 64
    image_size: int = 224
    steps: int = 10000
    batch_size: int = 32
    lr: float = 3e-4
    workers: int = 4
    log_every: int = 50
    seed: int = 0
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    wandb: bool = False


def train_vqvae(cfg: TokenizerTrainConfig) -> tuple[VQVAE, list[float]]:
    """Train and save ``cfg.out/vqvae.pt``; returns the model and the logged reconstruction errors."""
    seed_everything(cfg.seed)
    modality = get_modality(cfg.modality)
    ds = TaskonomyDataset(
        cfg.data, [modality.domain], transform=ResizeCrop(cfg.image_size, cfg.image_size, "random", cfg.seed)
    )
    loader = DataLoader(
        ds, cfg.batch_size, shuffle=True, num_workers=cfg.workers, collate_fn=collate_views, drop_last=False
    )
    model = VQVAE(VQVAEConfig(cfg.modality, cfg.vocab_size, cfg.latent_dim, cfg.width)).to(cfg.device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.0)
    run = Run(cfg.out, cfg, wandb=cfg.wandb, project="unified-tokenizer")
    history: list[float] = []
    step, rec_sum = 0, torch.zeros((), device=cfg.device)
    bar = progress(total=cfg.steps, desc=f"vqvae {cfg.modality}")
    while step < cfg.steps:
        for batch in loader:
            x = batch[modality.domain].to(cfg.device, non_blocking=True)
            loss, rec = model.loss(x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            rec_sum += rec
            step += 1
            bar.update()
            if step % cfg.log_every == 0 or step == cfg.steps:
                n = cfg.log_every if step % cfg.log_every == 0 else step % cfg.log_every
                history.append(float(rec_sum) / n)
                used = int((model.quantizer.ema_count > model.quantizer.dead_threshold).sum())
                run.log({"reconstruction": history[-1], "codes_used": used}, step=step)
                rec_sum.zero_()
            if step >= cfg.steps:
                break
    bar.close()
    model.save(Path(cfg.out) / "vqvae.pt")
    if cfg.tokenizers:
        Path(cfg.tokenizers).mkdir(parents=True, exist_ok=True)
        model.save(Path(cfg.tokenizers) / f"{cfg.modality}.pt")
    run.finish()
    return model.eval(), history


def main(argv: list[str] | None = None) -> None:
    train_vqvae(parse_config(TokenizerTrainConfig, argv))


if __name__ == "__main__":
    main()
