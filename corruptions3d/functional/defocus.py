"""3DCC depth-of-field blur: ``near_focus`` and ``far_focus`` (``create_dof.py``), batched.

Per image, on depth in the reference's unit (metres / 15.625, invalid pixels filled with the image's
maximum valid depth):

1. 9 depth quantiles ``q_0..q_8`` at 0, 1/8, …, 1 (linear interpolation, as ``torch.quantile``, computed
   by sorting), then ``q_0 −= 1e-4``, ``q_8 += 1e-4``.
2. Circle of confusion at each quantile, a Gaussian σ in pixels: ``r_i = A·|q_i − f|/q_i``.
   near_focus: ``f = q_0``, ``A = s + 2`` (3..7); far_focus: ``f = q_7``, ``A = s + 0.5`` (1.5..5.5).
3. Blur stack: layer i is a separable Gaussian with ``M = int(3·r_i)`` taps (made odd by adding one, so it
   is cut at about ±1.5σ and renormalised), replicate borders; ``r_i < 0.1`` leaves the image unchanged.
4. A pixel with depth in ``[q_l, q_{l+1})`` mixes layers l and l+1 with weights ``1 − t²`` and
   ``1 − (1 − t)²`` (normalised), ``t = (d − q_l)/(q_{l+1} − q_l)``.

Batching: every image has its own kernel per layer, zero-padded to the longest of that layer in the batch (zero
taps leave results unchanged). Layers with a radius of at least :data:`FFT_MIN_RADIUS` taps are filtered in the
frequency domain: the batch is replicate-padded once by the largest radius, transformed once, and each layer is a
product with the DFT of its exact truncated kernel and one inverse transform (equal to the direct convolution up to
float rounding, cost independent of σ). Smaller kernels use a direct grouped convolution.
Training ranges (continuous): near aperture A ∈ [3, 7), far aperture A ∈ [1.5, 5.5); ``focus`` is the
quantile index 0..8 the lens focuses at (rounded; 0 near, 7 far).

Ops return floats; the 8-bit writer rounds where the reference truncates (at most one level apart).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from corruptions3d.core import check_geometry, check_rgb, register_corruption, resolve_params
from corruptions3d.filters import conv_separable, pad
from corruptions3d.functional.blur import fft_size
from corruptions3d.functional.fog import DEPTH_UNIT_M
from corruptions3d.geometry import fill_invalid_depth
from corruptions3d.kernels import fused_kernel
from corruptions3d.parallel import parallel_map
from corruptions3d.random import Seeds

__all__ = [
    "coc_sigmas",
    "defocus_layers",
    "depth_defocus",
    "depth_quantiles",
    "far_focus",
    "layer_quantiles",
    "near_focus",
    "sigma_bank",
]

N_QUANTILES = 8
QUANTILE_EPS = 1e-4
"""Widening of the outer quantiles, in the reference's depth unit (15.625 m)."""
MIN_SIGMA = 0.1
"""Below this σ (pixels) a layer is left sharp."""
FFT_MIN_RADIUS = 16
"""Kernels with at least this radius (taps) are applied by FFT; smaller ones directly (faster there on CPU)."""
NEAR_FOCUS = {"aperture": (3.0, 4.0, 5.0, 6.0, 7.0), "focus": (0,) * 5}
FAR_FOCUS = {"aperture": (1.5, 2.5, 3.5, 4.5, 5.5), "focus": (7,) * 5}


def quantile_ranks(
    n_pixels: int, n: int = N_QUANTILES
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The order statistics behind ``n+1`` linear-rule quantiles of ``n_pixels`` values: their ranks ``kth``
    (sorted, unique, int64) and, per quantile, the index into ``kth`` of its lower and upper rank and the weight of
    the upper one (float64)."""
    pos = torch.linspace(0, n_pixels - 1, n + 1, dtype=torch.float64)
    lo, hi = pos.floor().long(), pos.ceil().long()
    kth = torch.cat((lo, hi)).unique()  # sorted
    at = {int(k): i for i, k in enumerate(kth)}
    return kth, torch.tensor([at[int(k)] for k in lo]), torch.tensor([at[int(k)] for k in hi]), pos - lo


def interpolate_quantiles(stats: torch.Tensor, ranks: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Quantiles ``(B, n+1)`` from the order statistics ``(B, K)`` at the ranks of :func:`quantile_ranks`."""
    _, i_lo, i_hi, frac = ranks
    s_lo, s_hi = stats[:, i_lo], stats[:, i_hi]
    return s_lo + (s_hi - s_lo) * frac.to(stats.dtype).to(stats.device)


def depth_quantiles(depth: torch.Tensor, n: int = N_QUANTILES) -> torch.Tensor:
    """``(B, n+1)`` per-image quantiles of ``(B,1,H,W)`` at 0, 1/n, …, 1 (``torch.quantile``'s linear rule,
    which fails above 2^24 elements). The order statistics come from one batched sort, or on the CPU from a
    selection (``np.partition``) per image on parallel threads: the same values, without sorting everything."""
    flat = depth.flatten(1)
    ranks = quantile_ranks(flat.shape[1], n)
    kth = ranks[0]
    if flat.device.type == "cpu":
        ks = kth.numpy()
        stats = torch.stack(parallel_map(lambda row: torch.from_numpy(np.partition(row.numpy(), ks)[ks]), flat))
    else:
        stats = flat.sort(dim=1).values[:, kth.to(flat.device)]
    return interpolate_quantiles(stats, ranks)


def coc_sigmas(quantiles: torch.Tensor, focus: torch.Tensor, aperture: torch.Tensor) -> torch.Tensor:
    """Gaussian σ ``(B, n+1)`` in pixels at each quantile: ``A·|q − q_focus|/q``; ``focus`` index ``(B,)``."""
    f = quantiles.gather(1, focus.long().view(-1, 1))
    return aperture.view(-1, 1) * (quantiles - f).abs() / quantiles


def _reference_kernels(sigma: torch.Tensor) -> torch.Tensor:
    """``(B, 2R+1)`` Gaussian taps with the reference's length ``int(3σ)`` made odd, zero-padded to the
    longest kernel in the batch; σ < :data:`MIN_SIGMA` gives a delta."""
    length = (3 * sigma).long()
    length = length + (length % 2 == 0).long()
    half = torch.where(sigma < MIN_SIGMA, torch.zeros_like(length), (length - 1) // 2)
    radius = int(half.max())
    n = torch.arange(-radius, radius + 1, device=sigma.device, dtype=sigma.dtype)
    s = sigma.clamp(min=MIN_SIGMA).view(-1, 1)
    taps = torch.exp(-(n**2) / (2 * s**2)) * (n.abs() <= half.view(-1, 1))
    return taps / taps.sum(1, keepdim=True)


def sigma_bank(sigma: torch.Tensor) -> torch.Tensor:
    """The reference's Gaussian taps for every layer, ``(B, L, 2R+1)`` for per-layer σ ``(B, L)`` in pixels,
    zero-padded to the longest kernel (R: the largest half-width)."""
    taps = [_reference_kernels(sigma[:, i]) for i in range(sigma.shape[1])]
    radius = max(t.shape[1] for t in taps) // 2
    return torch.stack([F.pad(t, (radius - t.shape[1] // 2,) * 2) for t in taps], 1)


def layer_quantiles(depth_euclidean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 1 for ``(B,1,H,W)`` metres: depth in the reference's unit (invalid pixels filled) and the widened layer
    quantiles ``(B, 9)``."""
    depth = fill_invalid_depth(depth_euclidean) / DEPTH_UNIT_M
    return depth, widen_quantiles(depth_quantiles(depth))


def widen_quantiles(q: torch.Tensor) -> torch.Tensor:
    """``q[:, 0] -= QUANTILE_EPS``, ``q[:, -1] += QUANTILE_EPS`` (in place): every depth falls inside a layer."""
    q[:, 0] -= QUANTILE_EPS
    q[:, -1] += QUANTILE_EPS
    return q


def defocus_layers(
    depth_euclidean: torch.Tensor, focus: torch.Tensor, aperture: torch.Tensor, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Steps 1, 2 and 4 for ``(B,1,H,W)`` metres: layer σ ``(B, 9)`` px, and per pixel ``(B, H·W)`` its lower layer
    ``l`` (int64) and the normalised weights of layers ``l`` and ``l+1`` (``dtype``)."""
    depth, q = layer_quantiles(depth_euclidean)
    sigma = coc_sigmas(q, focus, aperture)
    d = depth.flatten(1)
    layer = (torch.searchsorted(q.contiguous(), d) - 1).clamp(0, N_QUANTILES - 1)
    q_lo, q_hi = q.gather(1, layer), q.gather(1, layer + 1)
    t = (d - q_lo) / (q_hi - q_lo)
    w_lo, w_hi = 1 - t**2, 1 - (1 - t) ** 2
    total = w_lo + w_hi
    return sigma, layer, (w_lo / total).to(dtype), (w_hi / total).to(dtype)


@fused_kernel("depth_defocus")
def depth_defocus(
    rgb: torch.Tensor, depth_euclidean: torch.Tensor, focus: torch.Tensor, aperture: torch.Tensor
) -> torch.Tensor:
    """Depth-layered defocus ``(B,3,H,W)`` focusing at quantile index ``focus`` ``(B,)`` with aperture ``(B,)``."""
    sigma, layer, w_lo, w_hi = defocus_layers(depth_euclidean, focus, aperture, rgb.dtype)
    b = rgb.shape[0]
    weights = torch.zeros(b, N_QUANTILES + 1, layer.shape[1], device=rgb.device, dtype=rgb.dtype)  # (B, L, H·W)
    weights.scatter_(1, layer[:, None], w_lo[:, None])
    weights.scatter_(1, layer[:, None] + 1, w_hi[:, None])
    weights = weights.view(b, N_QUANTILES + 1, 1, *rgb.shape[-2:])
    used = torch.nonzero(weights.flatten(2).amax((0, 2)) > 0).flatten().tolist()
    kernels = {i: _reference_kernels(sigma[:, i]) for i in used}
    fft_radius = max((k.shape[1] // 2 for k in kernels.values() if k.shape[1] // 2 >= FFT_MIN_RADIUS), default=0)
    spectrum = _replicate_spectrum(rgb, fft_radius) if fft_radius else None
    out = torch.zeros_like(rgb)
    for i in used:
        kernel = kernels[i]
        if kernel.shape[1] == 1:
            blurred = rgb
        elif spectrum is not None and kernel.shape[1] // 2 >= FFT_MIN_RADIUS:
            blurred = _fft_separable(spectrum, kernel, fft_radius, rgb.shape[-2:])
        else:
            blurred = conv_separable(rgb, kernel.view(b, -1), border="replicate")
        out.addcmul_(weights[:, i], blurred)
    return out


def _replicate_spectrum(rgb: torch.Tensor, radius: int) -> torch.Tensor:
    """``rfft2`` of ``(B,C,H,W)`` replicate-padded by ``radius`` px, zero-extended to a fast FFT size."""
    h, w = rgb.shape[-2:]
    padded = pad(rgb, radius, radius, radius, radius, "replicate")
    return torch.fft.rfft2(padded, s=(fft_size(h + 2 * radius), fft_size(w + 2 * radius)))


def _fft_separable(spectrum: torch.Tensor, kernel: torch.Tensor, radius: int, size: tuple[int, int]) -> torch.Tensor:
    """Blur ``(B,C,H,W)`` of ``size`` whose :func:`_replicate_spectrum` (padded by ``radius``) is given, with the
    symmetric separable kernel ``(B,2r+1)`` on rows and columns, r <= radius. No wrap-around: padded length >= H+2r.
    """
    hp = spectrum.shape[-2]
    wp = fft_size(size[1] + 2 * radius)
    r = kernel.shape[1] // 2

    def centred(n: int) -> torch.Tensor:  # taps circularly centred on index 0: real spectrum (symmetric taps)
        taps = torch.zeros(kernel.shape[0], n, device=kernel.device, dtype=torch.float64)
        taps[:, : r + 1] = kernel[:, r:]
        taps[:, n - r :] = kernel[:, :r]
        return taps

    ky = torch.fft.fft(centred(hp)).real.float()
    kx = torch.fft.rfft(centred(wp)).real.float()
    cols = torch.fft.ifft(spectrum * ky[:, None, :, None], dim=-2)[..., radius : radius + size[0], :]
    return torch.fft.irfft(cols * kx[:, None, None, :], n=wp, dim=-1)[..., radius : radius + size[1]]


def _defocus(table: dict, rgb, depth_euclidean, severity, params) -> torch.Tensor:
    check_rgb(rgb)
    depth = check_geometry(rgb, depth_euclidean, "depth_euclidean")
    p = resolve_params(table, severity, params, rgb)
    focus = p["focus"].round().long()
    if bool(((focus < 0) | (focus > N_QUANTILES)).any()):
        raise ValueError(f"focus must be a quantile index 0..{N_QUANTILES}, got {focus.tolist()}")
    return depth_defocus(rgb, depth, focus, p["aperture"])


@register_corruption(
    "near_focus",
    family="3dcc",
    requires=("depth_euclidean",),
    severities=NEAR_FOCUS,
    ranges={"aperture": (3.0, 7.0), "focus": (0.0, 0.0)},
)
def near_focus(
    rgb: torch.Tensor,
    depth_euclidean: torch.Tensor,
    severity: int | None = None,
    params: Mapping[str, Any] | None = None,
    generator: Seeds = None,
) -> torch.Tensor:
    """Focus on the nearest depth (quantile 0); farther layers blur, σ ≤ aperture pixels."""
    return _defocus(NEAR_FOCUS, rgb, depth_euclidean, severity, params)


@register_corruption(
    "far_focus",
    family="3dcc",
    requires=("depth_euclidean",),
    severities=FAR_FOCUS,
    ranges={"aperture": (1.5, 5.5), "focus": (7.0, 7.0)},
)
def far_focus(
    rgb: torch.Tensor,
    depth_euclidean: torch.Tensor,
    severity: int | None = None,
    params: Mapping[str, Any] | None = None,
    generator: Seeds = None,
) -> torch.Tensor:
    """Focus on the 87.5th depth percentile (quantile 7); nearer layers blur strongly."""
    return _defocus(FAR_FOCUS, rgb, depth_euclidean, severity, params)
