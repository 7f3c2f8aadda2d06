"""Spatial FiLM layers and where they attach in a frozen network.

A :class:`SpatialFiLM` maps the controller embedding ``z`` (B,E,h,w), bilinearly resized to a feature map's
size, through a 3x3 conv to a per-pixel shift ``beta`` (``mode="shift"``, as released by RNA:
``x <- ReLU(GN(conv3(x)) + beta)``) or a scale and a shift (``mode="scale_shift"``,
``x <- x·(1 + gamma) + beta``, the form the paper describes). The convs have **no bias** and start at
zero, so ``z = 0`` (and an untrained adapter) leaves the network exactly unchanged (the release keeps
PyTorch's default bias and init, which shift features even for a zero embedding).

``lowres=False`` (released) resizes ``z`` to the feature map and convolves there. ``lowres=True`` convolves
at the coarser of the two resolutions: where the feature map is finer than ``z`` it convolves ``z`` first and
bilinearly upsamples the modulation (a 4^k smaller conv for a feature map 2^k finer, the same parameters);
where it is not finer both orders are the released one.

:func:`film_sites` lists the modules whose outputs FiLM modulates, with their channel counts:

- GroupNorm UNet (:class:`robust.models.UNet`): each down and up block's ``modulate`` slot, i.e. after
  the last GroupNorm and before the last ReLU (12 sites for ``downsample=6``, as released);
- timm dense model (:class:`robust.models.dense.DenseNet`): the output of each DPT fusion block.

FiLM is applied through forward hooks on these modules, so the base network's structure and
``state_dict`` stay untouched; the FiLM layers live in the adapter that owns them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robust.models.dense import DenseNet
from robust.models.unet import UNet

MODES = ("shift", "scale_shift")


class SpatialFiLM(nn.Module):
    """``z`` (B,E,h,w) -> modulation of ``x`` (B,C,H,W); bias-free 3x3 conv, at the feature map's resolution
    (``lowres=False``, released) or at the coarser of ``z``'s and the feature map's (``lowres=True``)."""

    def __init__(self, embed_channels: int, channels: int, mode: str = "shift", lowres: bool = False) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"FiLM mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.lowres = lowres
        self.conv = nn.Conv2d(embed_channels, channels * (2 if mode == "scale_shift" else 1), 3, padding=1, bias=False)
        nn.init.zeros_(self.conv.weight)  # an untrained adapter is the frozen network; training starts from it

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        if self.lowres and z.shape[-2] * z.shape[-1] < size[0] * size[1]:
            h = F.interpolate(self.conv(z), size=size, mode="bilinear", align_corners=False)
        else:
            h = self.conv(F.interpolate(z, size=size, mode="bilinear", align_corners=False))
        if self.mode == "shift":
            return x + h
        gamma, beta = h.chunk(2, dim=1)
        return x * (1 + gamma) + beta


def film_sites(net: nn.Module) -> list[tuple[nn.Module, int]]:
    """``(module, channels)`` pairs whose outputs FiLM modulates in ``net`` (a UNet or DenseNet, or a
    :class:`robust.models.DomainModel` wrapping one)."""
    net = getattr(net, "net", net)
    if isinstance(net, UNet):
        return [(b.modulate, b.out_channels) for b in net.blocks()]
    if isinstance(net, DenseNet):
        return [(block, block.out_unit.conv2.out_channels) for block in net.fusion]
    raise TypeError(
        f"no FiLM sites known for {type(net).__name__}: RNA supports robust.models UNet and DenseNet (dense_*) models"
    )
