"""Consistency energy (XTC §1.6): how much the predictions reached through different middle domains
disagree with the direct prediction; an unsupervised error estimate and OOD score.

For K paths ``rgb→Z→target`` and the direct ``rgb→target`` prediction, ``d_Z`` is the per-image L1
distance between the two. Each ``d_Z`` is standardised with statistics fitted on a reference set,
``ẑ_Z = (d_Z − mean(d_Z)) / mean|d_Z − mean(d_Z)|`` (mean absolute deviation), and the energy is
``E = mean_Z ẑ_Z``. The raw energy ``mean_Z d_Z`` is 0 exactly when every path agrees with the direct one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from consistency.graph import TaskGraph, freeze


def path_distances(
    direct: torch.Tensor, paths: Mapping[str, torch.Tensor], mask: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Per-image L1 distance ``(B,)`` between the direct prediction ``(B,C,H,W)`` and each path's.

    ``mask`` (bool ``(B,1,H,W)``) zeroes invalid pixels; the mean is over all pixels, as in the reference.
    """
    if not paths:
        raise ValueError("path_distances needs at least one path")
    out = {}
    for name, pred in paths.items():
        if pred.shape != direct.shape:
            raise ValueError(f"path {name!r}: prediction {tuple(pred.shape)} does not match direct {direct.shape}")
        diff = (pred - direct).abs()
        if mask is not None:
            diff = diff * mask.to(diff.dtype)
        out[name] = diff.flatten(1).mean(1)
    return out


def raw_energy(distances: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Unstandardised energy ``mean_Z d_Z``, ``(B,)``."""
    return torch.stack(list(distances.values())).mean(0)


@dataclass
class EnergyStats:
    """Per-path location and mean absolute deviation of ``d_Z`` on a reference set."""

    mean: dict[str, float]
    mad: dict[str, float]

    @classmethod
    def fit(cls, distances: Mapping[str, torch.Tensor]) -> EnergyStats:
        """Fit on ``{path: (N,)}`` distances (N ≥ 2 images whose distances are not all equal)."""
        mean, mad = {}, {}
        for name, d in distances.items():
            d = d.detach().double()
            m = d.mean()
            a = (d - m).abs().mean()
            if d.numel() < 2 or a == 0:
                raise ValueError(f"path {name!r}: need ≥2 reference images with varying distance to fit energy stats")
            mean[name], mad[name] = float(m), float(a)
        return cls(mean, mad)

    def standardise(self, distances: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if set(distances) != set(self.mean):
            raise KeyError(f"paths {sorted(distances)} do not match the fitted paths {sorted(self.mean)}")
        return {n: (d - self.mean[n]) / self.mad[n] for n, d in distances.items()}


def consistency_energy(distances: Mapping[str, torch.Tensor], stats: EnergyStats | None = None) -> torch.Tensor:
    """Standardised energy ``mean_Z ẑ_Z``, ``(B,)``.

    With ``stats=None`` the statistics are fitted on ``distances`` themselves, as the reference script does;
    pass statistics fitted on a clean reference set to score new images (OOD detection).
    """
    stats = stats or EnergyStats.fit(distances)
    return raw_energy(stats.standardise(distances))


class ConsistencyEnergy(nn.Module):
    """Energy of rgb images from a direct network and K paths ``rgb→Z→target`` through a task graph.

    Args:
        direct: ``rgb→target`` model (batch dict in, ``{target: ...}`` out).
        target: predicted domain.
        graph: a :class:`TaskGraph` with edges ``rgb→Z`` and ``Z→target`` for every middle domain Z.
        middles: the middle domains Z.
        stats: fitted standardisation (see :meth:`fit`); ``None`` until fitted.
    """

    def __init__(
        self,
        direct: nn.Module,
        target: str,
        graph: TaskGraph,
        middles: Sequence[str],
        stats: EnergyStats | None = None,
    ) -> None:
        super().__init__()
        if not middles:
            raise ValueError("ConsistencyEnergy needs at least one middle domain")
        for z in middles:
            graph.edge("rgb", z), graph.edge(z, target)  # raises a clear KeyError for a missing edge
        self.direct = freeze(direct)
        self.graph = graph
        self.target = target
        self.middles = list(middles)
        self.stats = stats

    @torch.no_grad()
    def predictions(self, rgb: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The direct prediction and each path's, all ``(B,C,H,W)``."""
        direct = self.direct({"rgb": rgb})[self.target]
        return direct, {z: self.graph.run(("rgb", z, self.target), rgb) for z in self.middles}

    def distances(self, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-path distances ``{Z: (B,)}`` to the direct prediction."""
        return path_distances(*self.predictions(rgb))

    def fit(self, images: Iterable[torch.Tensor]) -> EnergyStats:
        """Fit the standardisation on reference rgb batches ``(B,3,H,W)`` (e.g. clean validation data)."""
        parts = [self.distances(rgb) for rgb in images]
        self.stats = EnergyStats.fit({z: torch.cat([p[z] for p in parts]) for z in self.middles})
        return self.stats

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """Standardised energy ``(B,)`` (needs :meth:`fit` first)."""
        if self.stats is None:
            raise RuntimeError("ConsistencyEnergy is not fitted: call fit(reference_images) first")
        return consistency_energy(self.distances(rgb), self.stats)
