"""Per-image reference implementations of the photometric/depth 3D Common Corruptions.

Re-implemented from the documented behaviour of the 3DCC generation code (``create_3dcc/``, see
``shared/reference/3dcc.md`` §1.3), computed the way that code computes them: one image at a time,
defocus with per-radius torch convolutions and ``torch.quantile``, the rest in float64 numpy, PIL
``posterize``, ``np.random`` (RandomState) noise, and 8-bit output by truncation (``x·255`` cast to uint8).
Used by the tests (do our batched ops reproduce the formulas?) and by the benchmarks (the baseline).

Every function has the signature ``fn(rgb, geometry, severity, rng) -> uint8 (H,W,3)`` with ``rgb``
float64 ``(H,W,3)`` in [0,1], ``geometry`` a dict of float64 arrays (``depth_euclidean`` ``(H,W)`` metres,
``reshading`` ``(H,W)``, ``relighting`` ``(K,H,W)``) and ``rng`` a ``np.random.RandomState``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

DEPTH_UNIT_M = 15.625  # the reference reads depth as raw/8000 with raw = 512·metres

RefFn = Callable[[np.ndarray, Mapping[str, np.ndarray], int, np.random.RandomState], np.ndarray]


def to_uint8(x: np.ndarray) -> np.ndarray:
    """The reference's 8-bit conversion: clip, scale by 255 and truncate."""
    return (np.clip(x, 0, 1) * 255).astype(np.uint8)


def normalised_depth(depth_m: np.ndarray) -> np.ndarray:
    """Depth in units of 15.625 m; values >= 1 (incl. the 65535 code) set to the largest value below 1."""
    d = depth_m / DEPTH_UNIT_M
    invalid = d >= 1.0
    return np.where(invalid, d[~invalid].max(), d) if invalid.any() else d


# ---- defocus (torch, per image, one convolution per radius, as create_dof.py) ----


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma < 0.1:
        return x
    m = int(3 * sigma)
    m = m + 1 if m % 2 == 0 else m
    n = torch.arange(m, dtype=torch.float32) - (m - 1) / 2
    w = torch.exp(-(n**2) / (2 * sigma**2))
    w = w / w.sum()
    y = F.pad(x, (m // 2, m // 2, m // 2, m // 2), mode="replicate")
    y = F.conv2d(y, w.view(1, 1, 1, -1).repeat(3, 1, 1, 1), groups=3)
    return F.conv2d(y, w.view(1, 1, -1, 1).repeat(3, 1, 1, 1), groups=3)


def _defocus(rgb: np.ndarray, depth_m: np.ndarray, focus_index: int, aperture: float) -> np.ndarray:
    x = torch.from_numpy(rgb).float().permute(2, 0, 1)[None]
    d = torch.from_numpy(normalised_depth(depth_m)).float()
    q = torch.quantile(d.flatten(), torch.linspace(0, 1, 9))
    q[0] -= 1e-4
    q[-1] += 1e-4
    sigmas = aperture * (q - q[focus_index]).abs() / q
    stack = torch.stack([_gaussian_blur(x, float(s))[0] for s in sigmas])  # (9,3,H,W)
    idx = torch.searchsorted(q, d.flatten()).view_as(d) - 1
    t = (d - q[idx]) / (q[idx + 1] - q[idx])
    w0, w1 = 1 - t**2, 1 - (1 - t) ** 2
    layer0 = stack.gather(0, idx[None, None].expand(1, 3, *d.shape))[0]
    layer1 = stack.gather(0, (idx + 1)[None, None].expand(1, 3, *d.shape))[0]
    out = (w0 * layer0 + w1 * layer1) / (w0 + w1)
    return to_uint8(out.permute(1, 2, 0).double().numpy())


def near_focus(rgb, geometry, severity, rng):
    return _defocus(rgb, geometry["depth_euclidean"], 0, severity + 2.0)


def far_focus(rgb, geometry, severity, rng):
    return _defocus(rgb, geometry["depth_euclidean"], 7, severity + 2.0 - 1.5)


# ---- fog, flash (float64 numpy) ----


def fog_3d(rgb, geometry, severity, rng):
    t = np.exp(-[4, 8, 12, 16, 20][severity - 1] * normalised_depth(geometry["depth_euclidean"]))[..., None]
    return to_uint8(t * rgb + rgb.mean() * (1 - t))


def flash(rgb, geometry, severity, rng):
    k = [2.4, 1.4, 0.9, 0.6, 0.4][severity - 1]
    return to_uint8(np.minimum(rgb + rgb * geometry["reshading"][..., None] / k, 1))


# ---- relighting (numpy, np.random) ----


def shadow(rgb, geometry, severity, rng):
    lights = geometry["relighting"]
    picked = rng.choice(len(lights), 5, replace=False)
    ordered = sorted(picked, key=lambda i: -lights[i].mean())
    return to_uint8(rgb * lights[ordered[severity - 1]][..., None] * rng.uniform(1.0, 1.1))


def multi_illumination(rgb, geometry, severity, rng):
    lights = geometry["relighting"]
    n = [5, 4, 3, 2, 1][severity - 1]
    lo, hi = [(0.20, 0.30), (0.25, 0.35), (0.35, 0.45), (0.50, 0.60), (1.0, 1.1)][severity - 1]
    out = np.zeros_like(rgb)
    for i in rng.randint(0, len(lights), n):
        out += rgb * lights[i][..., None] * rng.uniform(lo, hi)
    return to_uint8(out)


# ---- sensor (PIL / numpy, create_non3d.py) ----


def _poisson_gaussian(x: np.ndarray, photons: float, sigma: float, rng: np.random.RandomState) -> np.ndarray:
    x = np.clip(rng.poisson(x * photons) / photons, 0, 1)
    return np.clip(x + rng.normal(size=x.shape, scale=sigma), 0, 1)


def iso_noise(rgb, geometry, severity, rng):
    return to_uint8(_poisson_gaussian(rgb, 25, 0.7 * [0.08, 0.12, 0.18, 0.26, 0.38][severity - 1], rng))


def imadjust(rgb: np.ndarray, severity: int) -> np.ndarray:
    """low_light's deterministic part: ``((x − min)/(max − min))^2 · c``, c = .6 … .2 (float64)."""
    lo, hi = rgb.min(), rgb.max()
    return ((rgb - lo) / (hi - lo)) ** 2 * [0.6, 0.5, 0.4, 0.3, 0.2][severity - 1]


def low_light(rgb, geometry, severity, rng):
    return to_uint8(_poisson_gaussian(imadjust(rgb, severity), 10 * 12, 0.1 * 0.18, rng))


def color_quant(rgb, geometry, severity, rng):
    img = Image.fromarray(to_uint8(rgb))
    return np.array(ImageOps.posterize(img, 6 - severity))


REFERENCES: dict[str, tuple[RefFn, tuple[str, ...]]] = {
    "near_focus": (near_focus, ("depth_euclidean",)),
    "far_focus": (far_focus, ("depth_euclidean",)),
    "fog_3d": (fog_3d, ("depth_euclidean",)),
    "flash": (flash, ("reshading",)),
    "shadow": (shadow, ("relighting",)),
    "multi_illumination": (multi_illumination, ("relighting",)),
    "iso_noise": (iso_noise, ()),
    "low_light": (low_light, ()),
    "color_quant": (color_quant, ()),
}
"""Corruption name -> (per-image reference function, geometry domains it reads)."""


def run_reference(name: str, batch: Mapping[str, torch.Tensor], severity: int, seed: int = 0) -> torch.Tensor:
    """Apply the reference to each image of a batch dict (image i uses ``RandomState(seed + i)``).

    Returns ``(B,3,H,W)`` float32 = the reference's uint8 output / 255.
    """
    fn, domains = REFERENCES[name]
    outs = []
    for i in range(batch["rgb"].shape[0]):
        rgb = batch["rgb"][i].permute(1, 2, 0).double().numpy()
        geometry = {d: batch[d][i].double().numpy() for d in domains}
        geometry = {d: g[0] if d != "relighting" else g for d, g in geometry.items()}
        outs.append(torch.from_numpy(fn(rgb, geometry, severity, np.random.RandomState(seed + i))))
    return torch.stack(outs).permute(0, 3, 1, 2).float() / 255
