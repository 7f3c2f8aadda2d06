"""The eight analytic middle domains of Cross-Domain Ensembles (XDE, §2.2) as batched torch ops.

Each op maps rgb ``(B,3,H,W)`` in [0,1] to a ``(B,C,H,W)`` float tensor; nothing is learned. Borders follow
the reference where it states them (``torch`` reflect padding = ``reflect101``; scipy's default ``reflect``
= ``symmetric``); the emboss border, which the reference leaves open, repeats the edge pixel.

=============  ==  ==========================================================================================
name           C   definition
=============  ==  ==========================================================================================
rgb            3   identity (the direct path)
emboss4d       4   g = round(255·grey); g − g[neighbour] for neighbours lower-left, below, lower-right, right;
                   +128, clamp [0,255], /255
grey           1   channel mean
sobel_edges    1   grey; Gaussian σ=2 (radius 8, symmetric); hypot(Sobel_x, Sobel_y) (scipy.ndimage.sobel)
laplace_edges  1   grey; Gaussian σ=2 (17 taps, reflect101); replicate-pad 1; [[0,1,0],[1,−4,1],[0,1,0]]
gauss          3   per-channel Gaussian σ=4 (33 taps, reflect101)
sharp          3   unsharp mask clamp(x + (x − gauss(x)), 0, 1)
wav            12  3-level Haar DWT (zero mode): low-pass band (level 3) and the first detail band of each
                   level (low-pass along W, high-pass along H), each bilinearly resized to H×W
=============  ==  ==========================================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from corruptions3d.core import check_rgb
from corruptions3d.filters import conv_separable, gaussian_blur, pad

EMBOSS_OFFSETS = ((1, -1), (1, 0), (1, 1), (0, 1))
"""(dy, dx) of the −1 tap of each emboss kernel: lower-left, below, lower-right, right."""
LAPLACIAN = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))


def _sigma(x: torch.Tensor, value: float) -> torch.Tensor:
    return torch.full((x.shape[0],), value, device=x.device)


def grey(rgb: torch.Tensor) -> torch.Tensor:
    """Channel mean ``(B,1,H,W)``."""
    return rgb.mean(1, keepdim=True)


def emboss4d(rgb: torch.Tensor) -> torch.Tensor:
    """Four directional emboss responses of the 8-bit grey image, ``(B,4,H,W)`` in [0,1]."""
    g = (grey(rgb) * 255).round()
    h, w = g.shape[-2:]
    padded = pad(g, 1, 1, 1, 1, "replicate")
    shifted = [padded[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in EMBOSS_OFFSETS]
    return ((g - torch.cat(shifted, 1)) + 128).clamp(0, 255) / 255


def sobel_edges(rgb: torch.Tensor) -> torch.Tensor:
    """Gradient magnitude of the σ=2-blurred grey image, ``(B,1,H,W)`` (unnormalised, as scipy)."""
    g = gaussian_blur(grey(rgb), _sigma(rgb, 2.0), truncate=4.0, border="symmetric")
    b = g.shape[0]
    deriv = torch.tensor([-1.0, 0.0, 1.0], device=g.device).expand(b, 3)
    smooth = torch.tensor([1.0, 2.0, 1.0], device=g.device).expand(b, 3)
    gx = conv_separable(g, deriv, smooth, "symmetric")
    gy = conv_separable(g, smooth, deriv, "symmetric")
    return torch.hypot(gx, gy)


def laplace_edges(rgb: torch.Tensor) -> torch.Tensor:
    """Laplacian of the σ=2-blurred grey image, ``(B,1,H,W)``."""
    g = gaussian_blur(grey(rgb), _sigma(rgb, 2.0), truncate=4.0, border="reflect101")
    kernel = torch.tensor(LAPLACIAN, device=g.device, dtype=g.dtype).view(1, 1, 3, 3)
    return F.conv2d(pad(g, 1, 1, 1, 1, "replicate"), kernel)


def gauss(rgb: torch.Tensor) -> torch.Tensor:
    """Per-channel Gaussian low-pass σ=4 px, ``(B,3,H,W)``."""
    return gaussian_blur(rgb, _sigma(rgb, 4.0), truncate=4.0, border="reflect101")


def sharp(rgb: torch.Tensor) -> torch.Tensor:
    """Unsharp mask ``clamp(2x − gauss(x), 0, 1)``, ``(B,3,H,W)``."""
    return (2 * rgb - gauss(rgb)).clamp(0, 1)


def haar_dwt(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One level of the orthonormal Haar DWT (zero mode) of ``(B,C,H,W)``.

    Returns the low-pass band and the detail bands ``(B,C,3,⌈H/2⌉,⌈W/2⌉)`` ordered (low-W/high-H,
    high-W/low-H, high-W/high-H). For a 2×2 block [[a,b],[c,d]]: low = (a+b+c+d)/2, first detail =
    (a+b−c−d)/2 (pywt ``dec_hi`` = [−1, 1]/√2 convention, up to sign).
    """
    x = F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2))
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    low = (a + b + c + d) / 2
    details = torch.stack(((a + b - c - d) / 2, (a - b + c - d) / 2, (a - b - c + d) / 2), 2)
    return low, details


def wav(rgb: torch.Tensor, levels: int = 3) -> torch.Tensor:
    """Wavelet middle domain ``(B,3·(levels+1),H,W)``: low-pass band + first detail band per level."""
    size = rgb.shape[-2:]
    bands, low = [], rgb
    for _ in range(levels):
        low, details = haar_dwt(low)
        bands.append(details[:, :, 0])
    up = [F.interpolate(t, size=size, mode="bilinear", align_corners=False) for t in (low, *bands)]
    return torch.cat(up, 1)


@dataclass(frozen=True)
class MiddleDomain:
    """A named analytic transform of rgb with its output channel count."""

    name: str
    channels: int
    fn: Callable[[torch.Tensor], torch.Tensor]

    def __call__(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.fn(check_rgb(rgb))


MIDDLE_DOMAINS: dict[str, MiddleDomain] = {
    d.name: d
    for d in (
        MiddleDomain("rgb", 3, lambda x: x),
        MiddleDomain("emboss4d", 4, emboss4d),
        MiddleDomain("grey", 1, grey),
        MiddleDomain("sobel_edges", 1, sobel_edges),
        MiddleDomain("laplace_edges", 1, laplace_edges),
        MiddleDomain("gauss", 3, gauss),
        MiddleDomain("sharp", 3, sharp),
        MiddleDomain("wav", 12, wav),
    )
}
"""The XDE ensemble, in the reference order (direct first)."""


def middle_domain(name: str) -> MiddleDomain:
    """Look a middle domain up by name; unknown names raise ``KeyError`` listing the known ones."""
    if name not in MIDDLE_DOMAINS:
        raise KeyError(f"unknown middle domain {name!r}; known: {', '.join(MIDDLE_DOMAINS)}")
    return MIDDLE_DOMAINS[name]
