"""The domain wrapper every registered model shares: batch dict in, ``{domain: tensor}`` out.

Output encodings (what :mod:`robust.losses` expects): raw, linear network outputs in each domain's
canonical units, no activation. Depth is metres, reshading/edges/keypoints/curvature are [0,1]-valued
targets regressed directly (not clamped, so gradients never vanish), ``normal`` is a 3-vector that is
*not* renormalised (the angular loss and metrics normalise it; use :func:`robust.losses.unit_normals`
to get unit vectors), ``segment_semantic`` is ``(B,K,H,W)`` logits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from robust.models.registry import input_channels, output_channels, uncertainty_key


class DomainModel(nn.Module):
    """Wrap a tensor network ``net: (B,C_in,H,W) -> (B,C_out,H,W)`` with domain bookkeeping.

    Args:
        net: the dense network; built by the caller with ``in_channels``/``out_channels`` below.
        in_domains, out_domains: domain names (canonical).
        num_classes: classes for ``segment_semantic`` outputs.
        uncertainty: also predict a Laplace ``log b`` per regression channel (``net`` has the extra channels).
    """

    def __init__(
        self,
        net: nn.Module,
        in_domains: Sequence[str],
        out_domains: Sequence[str],
        num_classes: int | None = None,
        uncertainty: bool = False,
    ) -> None:
        super().__init__()
        self.net = net
        self.in_domains = list(in_domains)
        self.out_domains = list(out_domains)
        self.in_splits = input_channels(in_domains)
        self.out_splits = self.output_splits(out_domains, num_classes, uncertainty)
        self.uncertainty = uncertainty

    @staticmethod
    def output_splits(out_domains: Sequence[str], num_classes: int | None, uncertainty: bool) -> list[int]:
        chans = output_channels(out_domains, num_classes)
        if uncertainty:
            if "segment_semantic" in out_domains:
                raise ValueError("uncertainty=True: segment_semantic has no Laplace scale head")
            chans = chans + chans
        return chans

    @classmethod
    def channels(
        cls, in_domains: Sequence[str], out_domains: Sequence[str], num_classes: int | None, uncertainty: bool
    ) -> tuple[int, int]:
        """``(in_channels, out_channels)`` of the tensor network for these domains."""
        return sum(input_channels(in_domains)), sum(cls.output_splits(out_domains, num_classes, uncertainty))

    @property
    def in_channels(self) -> int:
        return sum(self.in_splits)

    def inputs(self, batch: Mapping[str, torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """Concatenate the in-domains of ``batch`` (or check a ready tensor) into ``(B,C_in,H,W)`` float."""
        if isinstance(batch, torch.Tensor):
            x = batch
        else:
            missing = [d for d in self.in_domains if d not in batch]
            if missing:
                raise KeyError(f"model input needs domain(s) {missing}; batch has {sorted(batch)}")
            x = torch.cat([batch[d].float() for d in self.in_domains], dim=1)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"model input must be (B,{self.in_channels},H,W) for domains {self.in_domains}, got {tuple(x.shape)}"
            )
        return x

    def split(self, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split ``(B,C_out,H,W)`` into ``{domain: tensor}`` (+ ``{domain}_log_b`` with uncertainty)."""
        parts = torch.split(y, self.out_splits, dim=1)
        names = list(self.out_domains)
        if self.uncertainty:
            names += [uncertainty_key(d) for d in self.out_domains]
        return dict(zip(names, parts))

    def forward(self, batch: Mapping[str, torch.Tensor] | torch.Tensor) -> dict[str, torch.Tensor]:
        return self.split(self.net(self.inputs(batch)))
