"""The GroupNorm UNet of XTC/XDE/RNA (``modules/unet.py`` in those repositories), re-implemented.

Layout for ``downsample=d`` (channels ``16·2^i``, bottleneck ``2^(4+d)``)::

    stem      ConvBlock(in -> 16) at full resolution
    down[i]   max-pool 2, ConvBlock(16·2^i -> 16·2^(i+1))            i = 0..d-1
    mid       ConvBlock(2^(4+d) -> 2^(4+d))
    up[j]     bilinear x2, concat skip, ConvBlock(... -> 16·2^i)      i = d-1..0
    head      conv3x3(16->16)-GN-ReLU, conv1x1(16->out)

A ``ConvBlock`` is 3 x (conv3x3 -> GroupNorm(8) -> ReLU). Each block has a ``modulate`` slot, an identity
by default, applied after the last GroupNorm and before the last ReLU: the place where RNA inserts its
spatial FiLM (``x = ReLU(GN(conv3(x)) + beta)``). Replace ``block.modulate`` with any module
``(B,C,H,W) -> (B,C,H,W)``; ``UNet.blocks()`` lists the 2d blocks RNA modulates (down then up).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from robust.models.base import DomainModel
from robust.models.registry import register_model

GROUPS = 8


def conv_norm(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(GROUPS, cout)]


class ConvBlock(nn.Module):
    """3 x (conv3x3 -> GroupNorm(8) -> ReLU); ``modulate`` acts after the third norm, before its ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1, self.norm1 = conv_norm(cin, cout)
        self.conv2, self.norm2 = conv_norm(cout, cout)
        self.conv3, self.norm3 = conv_norm(cout, cout)
        self.modulate: nn.Module = nn.Identity()
        self.out_channels = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm1(self.conv1(x)))
        x = F.relu(self.norm2(self.conv2(x)))
        return F.relu(self.modulate(self.norm3(self.conv3(x))))


class DownBlock(ConvBlock):
    """Max-pool 2 then a :class:`ConvBlock`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.max_pool2d(x, 2))


class UpBlock(ConvBlock):
    """Bilinear x2 upsampling to the skip's size, concatenation ``[skip, x]``, then a :class:`ConvBlock`."""

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return super().forward(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """GroupNorm UNet ``(B,in_channels,H,W) -> (B,out_channels,H,W)``; H and W divisible by ``2**downsample``.

    ``out_activation``: ``None`` (XDE, RNA) or ``"relu"`` (XTC's rgb->X networks).
    """

    def __init__(
        self, in_channels: int, out_channels: int, downsample: int = 6, out_activation: str | None = None
    ) -> None:
        super().__init__()
        if downsample < 1:
            raise ValueError(f"downsample must be >= 1, got {downsample}")
        if out_activation not in (None, "relu"):
            raise ValueError(f"out_activation must be None or 'relu', got {out_activation!r}")
        ch = [16 * 2**i for i in range(downsample + 1)]
        self.downsample = downsample
        self.stem = ConvBlock(in_channels, ch[0])
        self.down_blocks = nn.ModuleList(DownBlock(ch[i], ch[i + 1]) for i in range(downsample))
        self.mid = ConvBlock(ch[-1], ch[-1])
        self.up_blocks = nn.ModuleList(UpBlock(ch[i] + ch[i + 1], ch[i]) for i in reversed(range(downsample)))
        self.head = nn.Sequential(*conv_norm(ch[0], ch[0]), nn.ReLU(), nn.Conv2d(ch[0], out_channels, 1))
        self.out_activation = out_activation

    def blocks(self) -> list[ConvBlock]:
        """The down blocks then the up blocks (``2·downsample``), each with a ``modulate`` slot."""
        return [*self.down_blocks, *self.up_blocks]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = 2**self.downsample
        if x.shape[-1] % m or x.shape[-2] % m:
            raise ValueError(f"UNet(downsample={self.downsample}) needs H, W divisible by {m}, got {tuple(x.shape)}")
        skips = [self.stem(x)]
        for block in self.down_blocks:
            skips.append(block(skips[-1]))
        x = self.mid(skips.pop())
        for block in self.up_blocks:
            x = block(x, skips.pop())
        x = self.head(x)
        return F.relu(x) if self.out_activation == "relu" else x


def build_unet(
    in_domains: Sequence[str],
    out_domains: Sequence[str],
    downsample: int = 6,
    num_classes: int | None = None,
    uncertainty: bool = False,
    out_activation: str | None = None,
) -> DomainModel:
    """A :class:`UNet` wrapped as a :class:`DomainModel` (``model.net`` is the UNet)."""
    cin, cout = DomainModel.channels(in_domains, out_domains, num_classes, uncertainty)
    net = UNet(cin, cout, downsample, out_activation)
    return DomainModel(net, in_domains, out_domains, num_classes, uncertainty)


@register_model("unet")
def unet(in_domains: Sequence[str], out_domains: Sequence[str], **kw) -> DomainModel:
    """Reference size: ``downsample=6`` (bottleneck 1024 channels), 256x256 inputs."""
    return build_unet(in_domains, out_domains, **{"downsample": 6, **kw})


@register_model("unet_small")
def unet_small(in_domains: Sequence[str], out_domains: Sequence[str], **kw) -> DomainModel:
    """``downsample=4`` (bottleneck 256 channels)."""
    return build_unet(in_domains, out_domains, **{"downsample": 4, **kw})


@register_model("unet_tiny")
def unet_tiny(in_domains: Sequence[str], out_domains: Sequence[str], **kw) -> DomainModel:
    """``downsample=2`` (bottleneck 64 channels), for tests."""
    return build_unet(in_domains, out_domains, **{"downsample": 2, **kw})
