"""Frost textures for the ImageNet-C ``frost`` corruption, generated procedurally (nothing is downloaded).

Each of the five procedural textures is a seeded field of ice dendrites (a straight stem with side branches at ±60°,
as in hexagonal ice crystals, shorter towards the tip), drawn as anti-aliased lines, plus a blurred copy for glow,
a low-frequency veil and fine grain, tinted pale blue. Sizes and brightness statistics roughly follow the five
photographs ``imagecorruptions`` ships (means ~0.45-0.8, std ~0.07-0.17). The same index always gives the same
texture; textures are generated once per process and cached.

If the ``imagecorruptions`` package is installed, ``source='imagecorruptions'`` loads its frost photographs
(Apache-2.0 package data) from the local installation instead.
"""

from __future__ import annotations

import importlib.util
import math
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F

from corruptions3d import filters
from corruptions3d.random import mix

TEXTURE_SOURCES = ("procedural", "imagecorruptions")
PROCEDURAL_VERSION = 1
_PROCEDURAL_SIZES = ((600, 900), (420, 640), (360, 540), (480, 720), (500, 660))
_REFERENCE_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")  # frost6 is never drawn


def _splat(acc: torch.Tensor, pts: torch.Tensor, weight: torch.Tensor) -> None:
    """Add ``weight`` at the pixels nearest to points ``(N,2)`` (y, x) of ``acc`` ``(H,W)`` (in place)."""
    h, w = acc.shape
    y, x = pts[:, 0].round().long(), pts[:, 1].round().long()
    ok = (y >= 0) & (y < h) & (x >= 0) & (x < w)
    acc += torch.bincount((y * w + x)[ok], weight[ok], minlength=h * w).view(h, w).to(acc.dtype)


@lru_cache(maxsize=len(_PROCEDURAL_SIZES))
def procedural_frost(index: int) -> torch.Tensor:
    """Procedural frost texture ``index`` (0-4): ``(3,H,W)`` float32 RGB in [0,1], deterministic."""
    if not 0 <= index < len(_PROCEDURAL_SIZES):
        raise ValueError(f"frost texture index must be in 0..{len(_PROCEDURAL_SIZES) - 1}, got {index}")
    full = _PROCEDURAL_SIZES[index]
    h, w = full[0] // 2, full[1] // 2  # drawn at half resolution, then upsampled (soft like the photographs)
    g = torch.Generator().manual_seed(mix(0xF2057, PROCEDURAL_VERSION, index))
    density = (0.6, 1.0, 1.4, 0.8, 1.2)[index]
    n = int(h * w / 75 * density)
    origin = torch.rand(n, 2, generator=g) * torch.tensor([h, w])
    theta = torch.rand(n, generator=g) * 2 * math.pi
    length = 3 + 17 * torch.rand(n, generator=g) ** 2
    bright = 0.35 + 0.65 * torch.rand(n, generator=g)
    direction = torch.stack((torch.sin(theta), torch.cos(theta)), -1)  # (n,2) (dy, dx)

    acc = torch.zeros(h, w)
    t = torch.linspace(0, 1, 40)
    stem = origin[:, None] + t[None, :, None] * length[:, None, None] * direction[:, None]  # (n,80,2)
    _splat(acc, stem.reshape(-1, 2), (bright[:, None] * (1 - 0.5 * t)).expand(n, -1).reshape(-1) * 0.5)
    k = 7
    pos = (torch.arange(k) + 0.5) / k + (torch.rand(n, k, generator=g) - 0.5) / k  # (n,k) along the stem
    branch_len = 0.5 * length[:, None] * (1 - pos) * (0.6 + 0.4 * torch.rand(n, k, generator=g))
    tb = torch.linspace(0, 1, 12)
    for side in (-1.0, 1.0):
        a = theta + side * math.pi / 3
        d = torch.stack((torch.sin(a), torch.cos(a)), -1)  # (n,2)
        start = origin[:, None] + pos[..., None] * length[:, None, None] * direction[:, None]  # (n,k,2)
        pts = start[:, :, None] + tb[None, None, :, None] * branch_len[..., None, None] * d[:, None, None]
        wgt = (bright[:, None, None] * (1 - 0.6 * tb)[None, None]).expand(n, k, -1) * 0.4
        _splat(acc, pts.reshape(-1, 2), wgt.reshape(-1))
    crystals = acc.clamp(0, 1)[None, None]
    one = torch.ones(1)
    sharp = F.interpolate(crystals, size=full, mode="bicubic", align_corners=False)
    glow = filters.gaussian_blur(F.interpolate(crystals, size=full, mode="bilinear"), 3.0 * one)
    coarse = torch.rand(1, 1, h // 32 + 3, w // 32 + 3, generator=g)
    veil = F.interpolate(coarse, size=full, mode="bicubic", align_corners=False)
    grain = filters.gaussian_blur(torch.randn(1, 1, *full, generator=g), 0.7 * one)
    lum = 0.3 + 0.25 * veil + 0.45 * sharp + 0.5 * glow + 0.03 * grain
    tint = torch.tensor([0.86, 0.95, 1.0]).view(1, 3, 1, 1)
    return (lum * tint + torch.tensor([0.0, 0.02, 0.05]).view(1, 3, 1, 1)).clamp(0, 1)[0]


def imagecorruptions_frost_dir() -> Path | None:
    """The ``frost`` folder of an installed ``imagecorruptions`` (found without importing it), else ``None``."""
    spec = importlib.util.find_spec("imagecorruptions")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "frost"
    return folder if all((folder / f).is_file() for f in _REFERENCE_FILES) else None


@lru_cache(maxsize=len(_REFERENCE_FILES))
def reference_frost(index: int) -> torch.Tensor:
    """Frost photograph ``index`` (0-4) of the installed ``imagecorruptions``: ``(3,H,W)`` float32 RGB in [0,1]."""
    from torchvision.io import ImageReadMode, decode_image, read_file

    folder = imagecorruptions_frost_dir()
    if folder is None:
        raise FileNotFoundError(
            "frost texture='imagecorruptions' needs the imagecorruptions package installed (its frost images are "
            "package data); use texture='procedural' otherwise"
        )
    return decode_image(read_file(str(folder / _REFERENCE_FILES[index])), mode=ImageReadMode.RGB).float() / 255


def texture_source(source: str) -> str:
    """A one-line description of the textures behind ``source`` (for dataset manifests)."""
    if source == "procedural":
        return f"corruptions3d.frost procedural v{PROCEDURAL_VERSION} (5 seeded textures)"
    if source == "imagecorruptions":
        folder = imagecorruptions_frost_dir()
        return f"imagecorruptions frost photographs {', '.join(_REFERENCE_FILES)} in {folder}"
    raise ValueError(f"frost texture source must be one of {TEXTURE_SOURCES}, got {source!r}")


@lru_cache(maxsize=8)
def frost_bank(source: str, height: int, width: int, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """The five textures of ``source`` scaled as the reference does for an ``height×width`` image: upscaled to cover
    it if smaller, then ×1.1 (bicubic). Returns ``(5,3,Hmax,Wmax)`` zero-padded textures and their ``(5,2)`` sizes."""
    load = {"procedural": procedural_frost, "imagecorruptions": reference_frost}
    if source not in load:
        raise ValueError(f"frost texture source must be one of {TEXTURE_SOURCES}, got {source!r}")
    textures = []
    for i in range(len(_REFERENCE_FILES)):
        tex = load[source](i)
        th, tw = tex.shape[-2:]
        scale = 1.1 * max(1.0, height / th, width / tw)
        size = (math.ceil(th * scale), math.ceil(tw * scale))
        textures.append(F.interpolate(tex[None], size=size, mode="bicubic", align_corners=False)[0].clamp(0, 1))
    hm, wm = max(t.shape[1] for t in textures), max(t.shape[2] for t in textures)
    bank = torch.stack([F.pad(t, (0, wm - t.shape[2], 0, hm - t.shape[1])) for t in textures])
    sizes = torch.tensor([t.shape[1:] for t in textures])
    return bank.to(device), sizes
