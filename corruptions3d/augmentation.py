"""Training-time augmentation: per-sample random corruptions with continuous parameters.

:class:`RandomCorruption` draws, independently for every sample, whether to corrupt it, which corruption
and which parameters (a random severity row, with every parameter that has a continuous ``range``
re-drawn uniformly in it). Samples are grouped by (corruption, severity), so the cost is one batched
call per group, never a loop over images. :class:`Augment3DCC` is the 3D Common Corruptions training
policy as a preset, drawn per sample instead of once per batch as the reference does.

Both modules take and return either an rgb tensor ``(B,3,H,W)`` or a batch dict (geometry such as
``depth_euclidean`` is read from it; only ``rgb`` is replaced), so they sit beside kornia augmentations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from corruptions3d.core import get_corruption, list_corruptions
from corruptions3d.random import Seeds, as_seeds, rand

Batch = torch.Tensor | Mapping[str, torch.Tensor]


def _rgb_and_batch(x: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    batch = {"rgb": x} if isinstance(x, torch.Tensor) else dict(x)
    return batch["rgb"], batch


def _select(value, idx: torch.Tensor):
    """Rows ``idx`` of a batch entry: tensors by index, scene renderers through their ``subset``."""
    if isinstance(value, torch.Tensor):
        return value.index_select(0, idx) if value.dim() > 0 else value
    return value.subset(idx.tolist()) if hasattr(value, "subset") else value


def _usable(names: Sequence[str], batch: Mapping[str, torch.Tensor]) -> list[str]:
    """Corruptions whose inputs the batch has (derivable lighting counts when depth is present)."""
    out = []
    for n in names:
        c = get_corruption(n)
        derivable = set(c.derivable) if "depth_euclidean" in batch else set()
        if all(d in batch or d in derivable for d in c.requires):
            out.append(n)
    return out


class RandomCorruption(nn.Module):
    """Corrupt each sample with probability ``p`` by one corruption drawn from ``names`` (``weights``).

    Args:
        names: registry names (default: every non-video corruption).
        p: per-sample probability of applying a corruption.
        weights: relative probability of each name (default uniform).
        severities: severities to draw from (1-5).
        continuous: re-draw parameters that have a ``range`` uniformly within it (training policy);
            ``False`` uses the published severity tables only.

    Names whose required domains are missing from a batch are left out for that batch.
    """

    def __init__(
        self,
        names: Sequence[str] | None = None,
        p: float = 0.5,
        weights: Sequence[float] | None = None,
        severities: Sequence[int] = (1, 2, 3, 4, 5),
        continuous: bool = True,
    ) -> None:
        super().__init__()
        self.names = list(names) if names is not None else list_corruptions(video=False)
        for n in self.names:
            get_corruption(n)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must lie in [0, 1], got {p}")
        w = torch.ones(len(self.names)) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if w.shape != (len(self.names),) or (w < 0).any() or w.sum() <= 0:
            raise ValueError("weights must be non-negative, one per name, not all zero")
        self.weights = w.double()
        self.p = p
        self.severities = list(severities)
        self.continuous = continuous

    def sample(self, batch: Mapping[str, torch.Tensor], seeds: torch.Tensor) -> list[tuple[str, int] | None]:
        """Per-sample choice: ``(name, severity)`` or ``None`` (left clean)."""
        usable = _usable(self.names, batch)
        u = rand(seeds, (3,), "cpu", torch.float64, stream=0x5A)
        if not usable:
            return [None] * len(seeds)
        w = torch.stack([self.weights[self.names.index(n)] for n in usable])
        cdf = (w / w.sum()).cumsum(0)
        which = torch.searchsorted(cdf, u[:, 1].contiguous()).clamp(max=len(usable) - 1)
        sev = (u[:, 2] * len(self.severities)).long().clamp(max=len(self.severities) - 1)
        return [
            (usable[int(which[i])], self.severities[int(sev[i])]) if u[i, 0] < self.p else None
            for i in range(len(seeds))
        ]

    def forward(self, x: Batch, generator: Seeds = None) -> Batch:
        rgb, batch = _rgb_and_batch(x)
        seeds = as_seeds(generator, rgb.shape[0])
        choice = self.sample(batch, seeds)
        out = rgb.clone()
        for group in sorted({c for c in choice if c is not None}):
            idx = [i for i, c in enumerate(choice) if c == group]
            out[idx] = self._apply(batch, group, torch.tensor(idx, device=rgb.device), seeds[idx])
        return out if isinstance(x, torch.Tensor) else {**batch, "rgb": out}

    def _apply(self, batch: dict, group: tuple[str, int], idx: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        name, severity = group
        c = get_corruption(name)
        sub = {k: _select(v, idx) for k, v in batch.items()}
        if any(d not in sub for d in c.requires):
            from corruptions3d.lighting import derive

            sub = derive(sub, [d for d in c.requires if d not in sub])
        params = None
        if self.continuous and c.ranges:
            u = rand(seeds, (len(c.ranges),), "cpu", torch.float32, stream=0xC0)
            params = {k: lo + (hi - lo) * u[:, j] for j, (k, (lo, hi)) in enumerate(sorted(c.ranges.items()))}
        return c(sub, severity=severity, params=params, generator=seeds)


class Augment3DCC(nn.Module):
    """The 3D Common Corruptions training policy, per sample (reference: ``train/data/augmentation.py``).

    Each sample falls in one of three branches: with probability ``p_basic`` (0.4) the Omnidata 2D
    augmentations (kornia sharpness, motion blur, Gaussian blur, each with probability 0.5), with
    ``p_2d`` (0.3) one 2D corruption and with ``p_3d`` (0.3) one 3D corruption, both with continuous
    parameters. The 3D branch needs depth (and lighting inputs, derived from depth when missing); samples
    of a batch without depth fall back to the 2D branch.
    """

    CORRUPTIONS_2D = (
        "gaussian_noise", "color_quant", "jpeg_compression", "pixelate", "shot_noise", "impulse_noise",
        "defocus_blur", "fog", "zoom_blur",
    )  # fmt: skip
    CORRUPTIONS_3D = ("fog_3d", "flash", "near_focus", "far_focus", "xy_motion_blur", "z_motion_blur")

    def __init__(self, p_basic: float = 0.4, p_2d: float = 0.3, p_3d: float = 0.3) -> None:
        super().__init__()
        if abs(p_basic + p_2d + p_3d - 1.0) > 1e-6:
            raise ValueError("branch probabilities must sum to 1")
        import kornia.augmentation as K

        self.p = torch.tensor([p_basic, p_2d, p_3d], dtype=torch.float64)
        self.basic = nn.Sequential(
            K.RandomSharpness(0.3, p=0.5),
            K.RandomMotionBlur((3, 7), (10.0, 50.0), 0.5, p=0.5),
            K.RandomGaussianBlur((5, 5), (0.1, 2.0), p=0.5),
        )
        registered = set(list_corruptions())
        self.branch_2d = RandomCorruption([n for n in self.CORRUPTIONS_2D if n in registered], p=1.0)
        self.branch_3d = RandomCorruption([n for n in self.CORRUPTIONS_3D if n in registered], p=1.0)

    def forward(self, x: Batch, generator: Seeds = None) -> Batch:
        rgb, batch = _rgb_and_batch(x)
        seeds = as_seeds(generator, rgb.shape[0])
        u = rand(seeds, (), "cpu", torch.float64, stream=0xB7)
        branch = torch.searchsorted(self.p.cumsum(0), u).clamp(max=2)
        if not _usable(self.branch_3d.names, batch):
            branch = torch.where(branch == 2, 1, branch)
        out = rgb.clone()
        for b, module in enumerate((self.basic, self.branch_2d, self.branch_3d)):
            idx = (branch == b).nonzero().flatten()
            if len(idx) == 0:
                continue
            dev_idx = idx.to(rgb.device)
            if b == 0:
                out[dev_idx] = module(rgb.index_select(0, dev_idx))
            else:
                sub = {k: _select(v, dev_idx) for k, v in batch.items()}
                out[dev_idx] = module(sub, generator=seeds[idx])["rgb"]
        return out if isinstance(x, torch.Tensor) else {**batch, "rgb": out}
