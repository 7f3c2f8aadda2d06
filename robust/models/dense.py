"""Dense predictors on any timm backbone with a DPT-style fusion head.

The backbone runs with ``features_only=True``: CNNs (ResNet, ConvNeXt, EfficientNet ...) give a feature
pyramid, plain ViTs give token maps (all at stride 16) from 4 evenly spaced blocks. The head
(Ranftl et al., DPT) then

1. *reassembles* the last 4 feature maps to strides 4, 8, 16, 32 with ``head_channels`` channels
   (1x1 projection, then transposed-conv upsampling or strided-conv downsampling),
2. *fuses* them top-down: ``f_i = RCU(up(f_{i+1}) + RCU(r_i))`` with residual conv units
   ``RCU(x) = x + conv(relu(conv(relu(x))))``,
3. upsamples the stride-4 map to the input size and predicts the output channels with a small conv head.

Weights: ``pretrained_file=PATH`` loads backbone weights from a local timm-format state dict
(``pretrained_cfg_overlay=dict(file=PATH)``); nothing is ever downloaded.

>>> model = create_model("dense", ["rgb"], ["normal"], backbone="convnext_tiny", pretrained_file="convnext.pth")
>>> model = create_model("dense_vit_small", ["rgb"], ["depth_zbuffer"], img_size=256)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from robust.models.base import DomainModel
from robust.models.registry import register_model

TARGET_STRIDES = (4, 8, 16, 32)


def create_backbone(
    name: str, in_channels: int, pretrained_file: str | os.PathLike | None = None, **kw: Any
) -> nn.Module:
    """A timm ``features_only`` backbone; plain ViTs get 4 evenly spaced blocks and dynamic image sizes."""
    if not timm.is_model(name):
        raise KeyError(f"unknown timm backbone {name!r} (see timm.list_models())")
    pretrained = pretrained_file is not None
    if pretrained:
        pretrained_file = Path(pretrained_file)
        if not pretrained_file.is_file():
            raise FileNotFoundError(f"pretrained_file {pretrained_file}: no such file")
        kw["pretrained_cfg_overlay"] = {"file": str(pretrained_file)}
    is_vit = any(name.startswith(p) for p in ("vit_", "deit", "eva", "beit"))
    if is_vit:
        kw.setdefault("dynamic_img_size", "img_size" not in kw)
        if "out_indices" not in kw:
            with torch.device("meta"):  # only to count blocks: no memory, no init cost
                n = len(timm.create_model(name, **{k: v for k, v in kw.items() if "pretrained" not in k}).blocks)
            kw["out_indices"] = tuple(round(n * (i + 1) / 4) - 1 for i in range(4))
    return timm.create_model(name, pretrained=pretrained, features_only=True, in_chans=in_channels, **kw)


class ResidualConvUnit(nn.Module):
    """``x + conv3x3(relu(conv3x3(relu(x))))`` (DPT)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


def reassemble(cin: int, cout: int, reduction: int, target: int) -> nn.Module:
    """1x1 projection, then resampling from stride ``reduction`` to stride ``target`` (powers of 2)."""
    proj = nn.Conv2d(cin, cout, 1)
    if target < reduction:
        f = reduction // target
        return nn.Sequential(proj, nn.ConvTranspose2d(cout, cout, f, stride=f))
    if target > reduction:
        return nn.Sequential(proj, nn.Conv2d(cout, cout, 3, stride=target // reduction, padding=1))
    return proj


class FusionBlock(nn.Module):
    """``RCU(up(x) + RCU(skip))``; ``x`` is upsampled bilinearly to the skip's size."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.skip_unit = ResidualConvUnit(channels)
        self.out_unit = ResidualConvUnit(channels)

    def forward(self, x: torch.Tensor | None, skip: torch.Tensor) -> torch.Tensor:
        y = self.skip_unit(skip)
        if x is not None:
            y = y + F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.out_unit(y)


class DenseNet(nn.Module):
    """timm backbone + DPT-style head: ``(B,in_channels,H,W) -> (B,out_channels,H,W)``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        backbone: str = "resnet18",
        head_channels: int = 128,
        pretrained_file: str | os.PathLike | None = None,
        **backbone_kw: Any,
    ) -> None:
        super().__init__()
        self.backbone = create_backbone(backbone, in_channels, pretrained_file, **backbone_kw)
        info = self.backbone.feature_info
        chans, reds = info.channels()[-4:], info.reduction()[-4:]
        if len(chans) < 4:
            raise ValueError(f"backbone {backbone!r} gives {len(chans)} feature maps; the DPT head needs 4")
        self.reassemble = nn.ModuleList(
            reassemble(c, head_channels, r, t) for c, r, t in zip(chans, reds, TARGET_STRIDES)
        )
        self.fusion = nn.ModuleList(FusionBlock(head_channels) for _ in TARGET_STRIDES)
        half = head_channels // 2
        self.head_in = nn.Conv2d(head_channels, half, 3, padding=1)
        self.head_out = nn.Sequential(nn.Conv2d(half, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        feats = self.backbone(x)[-4:]
        maps = [r(f) for r, f in zip(self.reassemble, feats)]
        y = None
        for block, skip in zip(reversed(self.fusion), reversed(maps)):
            y = block(y, skip)
        y = F.interpolate(self.head_in(y), size=size, mode="bilinear", align_corners=False)
        return self.head_out(y)


def build_dense(
    in_domains: Sequence[str],
    out_domains: Sequence[str],
    backbone: str = "resnet18",
    head_channels: int = 128,
    pretrained_file: str | os.PathLike | None = None,
    num_classes: int | None = None,
    uncertainty: bool = False,
    **backbone_kw: Any,
) -> DomainModel:
    """A :class:`DenseNet` wrapped as a :class:`DomainModel`; extra keywords go to ``timm.create_model``."""
    cin, cout = DomainModel.channels(in_domains, out_domains, num_classes, uncertainty)
    net = DenseNet(cin, cout, backbone, head_channels, pretrained_file, **backbone_kw)
    return DomainModel(net, in_domains, out_domains, num_classes, uncertainty)


register_model("dense")(build_dense)
for _name, _backbone in {
    "resnet18": "resnet18",
    "resnet50": "resnet50",
    "convnext_tiny": "convnext_tiny",
    "convnext_small": "convnext_small",
    "vit_small": "vit_small_patch16_224",
    "vit_base": "vit_base_patch16_224",
}.items():
    register_model(f"dense_{_name}")(partial(build_dense, backbone=_backbone))
