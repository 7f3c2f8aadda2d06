"""BRAVE-style ensembling of several frozen timm backbones for a dense task (BRAVE §1.2, adapted).

BRAVE projects each frozen encoder's features to a shared width, concatenates them without any
per-encoder tag, resamples them with a small trainable module, and drops whole encoders with
probability 0.2 during training. For dense prediction the resampler here is a convolutional fusion head:

    rgb ─► K frozen backbones (last feature map each, their own mean/std normalisation)
        ─► per-backbone 1×1 projection to ``width`` ─► bilinear resize to the finest stride
        ─► channel concat (encoder dropout) ─► 2 × (conv3×3-GN-ReLU) ─► bilinear to H×W ─► 1×1 conv

Backbone weights are read from local files only (timm ``pretrained_cfg_overlay=dict(file=...)``);
without a file a backbone keeps its random initialisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from robust.models import DomainModel, register_model


@dataclass(frozen=True)
class BackboneSpec:
    """A timm backbone: registry ``name``, optional local ``weights`` file, extra timm ``kwargs``."""

    name: str
    weights: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str | BackboneSpec) -> BackboneSpec:
        """``"resnet18"`` or ``"resnet18=/path/weights.safetensors"``."""
        if isinstance(spec, BackboneSpec):
            return spec
        name, _, weights = spec.partition("=")
        return cls(name, weights or None)


def frozen_backbone(spec: BackboneSpec) -> nn.Module:
    """The last feature map of a timm model (``features_only``), frozen and in eval mode."""
    kw: dict[str, Any] = {"features_only": True, "out_indices": (-1,), **spec.kwargs}
    if spec.weights is not None:
        if not Path(spec.weights).is_file():
            raise FileNotFoundError(f"backbone {spec.name!r}: weights file {spec.weights} does not exist")
        # timm reads the checked local file given by the overlay; nothing is downloaded.
        kw.update(pretrained=True, pretrained_cfg_overlay={"file": str(spec.weights)})
    model = timm.create_model(spec.name, **kw)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class BraveFusion(nn.Module):
    """Frozen multi-backbone features fused by a trainable head, ``(B,3,H,W) -> (B,out_channels,H,W)``.

    Args:
        backbones: timm specs (``BackboneSpec`` or ``"name[=weights]"``).
        out_channels: channels of the dense output.
        width: shared projection width per backbone.
        encoder_dropout: probability of zeroing one backbone's features per sample in training.
    """

    def __init__(
        self,
        backbones: Sequence[str | BackboneSpec],
        out_channels: int,
        width: int = 64,
        encoder_dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if not backbones:
            raise ValueError("BraveFusion needs at least one backbone")
        if not 0 <= encoder_dropout < 1:
            raise ValueError(f"encoder_dropout must be in [0,1), got {encoder_dropout}")
        specs = [BackboneSpec.parse(s) for s in backbones]
        self.backbones = nn.ModuleList(frozen_backbone(s) for s in specs)
        for i, b in enumerate(self.backbones):
            cfg = b.pretrained_cfg
            self.register_buffer(f"mean{i}", torch.tensor(cfg["mean"]).view(1, 3, 1, 1), persistent=False)
            self.register_buffer(f"std{i}", torch.tensor(cfg["std"]).view(1, 3, 1, 1), persistent=False)
        self.strides = [b.feature_info.reduction()[-1] for b in self.backbones]
        self.projections = nn.ModuleList(nn.Conv2d(b.feature_info.channels()[-1], width, 1) for b in self.backbones)
        fused = width * len(specs)
        self.head = nn.Sequential(
            nn.Conv2d(fused, width, 3, padding=1),
            nn.GroupNorm(8, width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.GroupNorm(8, width),
            nn.ReLU(),
        )
        self.out = nn.Conv2d(width, out_channels, 1)
        self.encoder_dropout = encoder_dropout

    def train(self, mode: bool = True) -> BraveFusion:
        """Only the fusion head trains; backbones stay in eval mode."""
        super().train(mode)
        self.backbones.eval()
        return self

    def features(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        """Projected per-backbone features, each ``(B,width,H/s,W/s)`` at the finest stride s."""
        h, w = rgb.shape[-2:]
        s = min(self.strides)
        size = (max(h // s, 1), max(w // s, 1))
        feats = []
        for i, (backbone, proj) in enumerate(zip(self.backbones, self.projections)):
            x = (rgb - getattr(self, f"mean{i}")) / getattr(self, f"std{i}")
            with torch.no_grad():
                f = backbone(x)[-1]
            feats.append(F.interpolate(proj(f), size=size, mode="bilinear", align_corners=False))
        return feats

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        feats = torch.stack(self.features(rgb), 1)  # (B,K,width,h,w)
        if self.training and self.encoder_dropout > 0:
            keep = torch.rand(feats.shape[:2], device=rgb.device) >= self.encoder_dropout
            feats = feats * keep[..., None, None, None].to(feats.dtype)
        y = self.head(feats.flatten(1, 2))
        return self.out(F.interpolate(y, size=rgb.shape[-2:], mode="bilinear", align_corners=False))


@register_model("brave")
def brave(
    in_domains: Sequence[str],
    out_domains: Sequence[str],
    backbones: Sequence[str | BackboneSpec] = ("resnet18",),
    num_classes: int | None = None,
    uncertainty: bool = False,
    **kw: Any,
) -> DomainModel:
    """:class:`BraveFusion` on rgb as a :class:`robust.models.DomainModel` (``backbones``: timm specs)."""
    if list(in_domains) != ["rgb"]:
        raise ValueError(f"brave: backbones read rgb only, got in_domains={list(in_domains)}")
    _, cout = DomainModel.channels(in_domains, out_domains, num_classes, uncertainty)
    return DomainModel(BraveFusion(backbones, cout, **kw), in_domains, out_domains, num_classes, uncertainty)
