"""Consistency energy (XTC §1.6): how much the predictions reached through different middle domains
disagree with the direct prediction; an unsupervised error estimate and OOD score.

For K paths ``rgb→Z→target`` and the direct ``rgb→target`` prediction, ``d_Z`` is the per-image L1
distance between the two. Each ``d_Z`` is standardised with statistics fitted on a reference set,
``ẑ_Z = (d_Z − mean(d_Z)) / mean|d_Z − mean(d_Z)|`` (mean absolute deviation), and the energy is
``E = mean_Z ẑ_Z``. The raw energy ``mean_Z d_Z`` is 0 exactly when every path agrees with the direct one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch


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
