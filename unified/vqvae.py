"""VQ-VAE tokenizer for image-like modalities: conv encoder/decoder (patch 16), EMA cosine codebook.

The quantizer follows 4M's ``VectorQuantizerLucid`` with ``norm_codes=True``: latents and codes are
l2-normalised, the nearest code maximises cosine similarity, codes are EMA cluster means (decay 0.99)
re-normalised, and codes whose EMA usage falls below ``dead_threshold`` are restarted from random
latents of the current batch. Loss: reconstruction (MSE, or CE for labels) + commitment.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from robust.tasks import IGNORE_INDEX, INVALID_DEPTH
from unified.modalities import Modality, get_modality

PATCH = 16
_LOG_DEPTH_MAX = math.log1p(INVALID_DEPTH)


def to_net(x: torch.Tensor, modality: Modality) -> torch.Tensor:
    """Canonical batch (``(B,C,H,W)``, labels ``(B,H,W)``) → VQ-VAE input ``(B,channels,H,W)`` in [-1, 1]."""
    if modality.coding == "labels":
        labels = torch.where(x == IGNORE_INDEX, 0, x).long()
        if int(labels.max()) >= modality.channels:
            raise ValueError(f"{modality.name}: label {int(labels.max())} >= {modality.channels} classes")
        return F.one_hot(labels, modality.channels).permute(0, 3, 1, 2).float() * 2 - 1
    if modality.coding == "unit":
        return x.float() * 2 - 1
    if modality.coding == "signed":
        return x.float()
    if modality.coding == "log_depth":
        return torch.log1p(x.float().clamp(0, INVALID_DEPTH)) / _LOG_DEPTH_MAX * 2 - 1
    raise ValueError(f"{modality.name}: unknown coding {modality.coding!r}")


def from_net(y: torch.Tensor, modality: Modality) -> torch.Tensor:
    """VQ-VAE output ``(B,channels,H,W)`` → canonical batch (inverse of :func:`to_net`)."""
    if modality.coding == "labels":
        labels = y.argmax(1)
        return torch.where(labels == 0, IGNORE_INDEX, labels)
    y = y.float().clamp(-1, 1)
    if modality.coding == "unit":
        return (y + 1) / 2
    if modality.coding == "signed":
        return F.normalize(y, dim=1) if modality.channels == 3 else y
    return torch.expm1((y + 1) / 2 * _LOG_DEPTH_MAX)


class CosineEMAQuantizer(nn.Module):
    """EMA codebook over l2-normalised codes with dead-code restarts.

    Input ``(B,D,h,w)`` latents; returns (quantised latents with straight-through gradient, ids
    ``(B,h,w)``, commitment loss).
    """

    def __init__(self, vocab: int, dim: int, decay: float = 0.99, dead_threshold: float = 0.03):
        super().__init__()
        self.decay, self.dead_threshold = decay, dead_threshold
        codes = F.normalize(torch.randn(vocab, dim), dim=1)
        self.register_buffer("codes", codes)
        self.register_buffer("ema_count", torch.ones(vocab))
        self.register_buffer("ema_sum", codes.clone())

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """Ids ``(B,h,w)`` → quantised latents ``(B,D,h,w)``."""
        return self.codes[ids].permute(0, 3, 1, 2)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = F.normalize(z.float(), dim=1)
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        ids = (flat @ self.codes.T).argmax(1)
        if self.training:
            self._ema_update(flat.detach(), ids)
        q = self.codes[ids].view(z.shape[0], z.shape[2], z.shape[3], -1).permute(0, 3, 1, 2)
        commit = F.mse_loss(z, q.detach())
        return z + (q - z).detach(), ids.view(z.shape[0], z.shape[2], z.shape[3]), commit

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, ids: torch.Tensor) -> None:
        onehot = F.one_hot(ids, self.codes.shape[0]).type_as(flat)
        self.ema_count.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(onehot.T @ flat, alpha=1 - self.decay)
        self.codes.copy_(F.normalize(self.ema_sum, dim=1))
        dead = self.ema_count < self.dead_threshold
        n_dead = int(dead.sum())
        if n_dead:
            pick = flat[torch.randint(0, flat.shape[0], (n_dead,), device=flat.device)]
            self.codes[dead] = pick
            self.ema_sum[dead] = pick
            self.ema_count[dead] = 1.0


def _down(cin: int, cout: int) -> nn.Sequential:
    conv = nn.Conv2d(cin, cout, 4, 2, 1)
    return nn.Sequential(conv, nn.GroupNorm(8, cout), nn.SiLU(), nn.Conv2d(cout, cout, 3, 1, 1))


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.GroupNorm(8, cout), nn.SiLU(), nn.Conv2d(cout, cout, 3, 1, 1)
    )


@dataclass
class VQVAEConfig:
    modality: str = "rgb"
    vocab_size: int = 1024
    latent_dim: int = 32
    width: int = 64
    """Channels of the first stage; doubled after the second down-sampling."""


class VQVAE(nn.Module):
    """Conv VQ-VAE with stride 16: ``(B,channels,H,W)`` ↔ ids ``(B,H/16,W/16)``."""

    def __init__(self, config: VQVAEConfig):
        super().__init__()
        self.config = config
        self.modality = get_modality(config.modality)
        if self.modality.kind != "image":
            raise ValueError(f"VQ-VAE tokenizes image modalities; {config.modality!r} is a {self.modality.kind}")
        c, w = self.modality.channels, config.width
        widths = [w, w, 2 * w, 2 * w]
        enc = [nn.Conv2d(c, w, 3, 1, 1)]
        for cin, cout in zip([w, *widths[:-1]], widths):
            enc.append(_down(cin, cout))
        self.encoder = nn.Sequential(*enc, nn.SiLU(), nn.Conv2d(widths[-1], config.latent_dim, 1))
        dec = [nn.Conv2d(config.latent_dim, widths[-1], 3, 1, 1)]
        rev = widths[::-1]
        for cin, cout in zip(rev, [*rev[1:], w]):
            dec.append(_up(cin, cout))
        self.decoder = nn.Sequential(*dec, nn.SiLU(), nn.Conv2d(w, c, 3, 1, 1))
        self.quantizer = CosineEMAQuantizer(config.vocab_size, config.latent_dim)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Canonical batch → token ids ``(B,H/16,W/16)`` (H, W multiples of 16)."""
        net = to_net(x, self.modality)
        if net.shape[-1] % PATCH or net.shape[-2] % PATCH:
            raise ValueError(f"{self.modality.name}: image size {tuple(net.shape[-2:])} is not a multiple of {PATCH}")
        return self.quantizer(self.encoder(net))[1]

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids ``(B,h,w)`` → canonical batch (``(B,C,16h,16w)``, labels ``(B,16h,16w)``)."""
        return from_net(self.decoder(self.quantizer.lookup(ids)), self.modality)

    def loss(self, x: torch.Tensor, commitment: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Training loss on a canonical batch; returns (loss, reconstruction error)."""
        net = to_net(x, self.modality)
        q, _, commit = self.quantizer(self.encoder(net))
        out = self.decoder(q)
        labels = self.modality.coding == "labels"
        rec = F.cross_entropy(out, net.argmax(1)) if labels else F.mse_loss(out, net)
        return rec + commitment * commit, rec.detach()

    def save(self, path: str | Path) -> None:
        torch.save({"config": asdict(self.config), "state_dict": self.state_dict()}, path)

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> VQVAE:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
        model = cls(VQVAEConfig(**ckpt["config"]))
        model.load_state_dict(ckpt["state_dict"])
        return model.eval()
