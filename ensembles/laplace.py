"""Laplace output heads: the per-pixel negative log-likelihood and the split of a (μ, log b) prediction.

A path network outputs ``2C`` channels, ``[μ (C), s = log b (C)]``; the scale is ``b = exp(s) + 1e-10``
and the Laplace standard deviation is ``σ = √2·b`` (XDE §2.3-2.4, §2.7).
"""

from __future__ import annotations

import math

import torch

B_EPS = 1e-10
"""Added to ``exp(s)`` so that ``b`` never reaches 0 (reference ``Task.nll``)."""


def split_laplace(output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a ``(B,2C,H,W)`` network output into ``μ`` and ``s = log b``, each ``(B,C,H,W)``."""
    if output.dim() != 4 or output.shape[1] % 2:
        raise ValueError(f"a Laplace head output must be (B,2C,H,W), got {tuple(output.shape)}")
    return output.chunk(2, dim=1)


def scale(log_b: torch.Tensor) -> torch.Tensor:
    """Laplace scale ``b = exp(s) + 1e-10``, same shape as ``log_b``."""
    return log_b.exp() + B_EPS


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over all pixels of ``values·mask`` (the reference normalises by all pixels, not valid ones)."""
    if mask is None:
        return values.mean()
    return (values * mask.to(values.dtype)).mean()


def laplace_nll(
    mu: torch.Tensor, log_b: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean ``−log Laplace(y | μ, b) = log(2b) + |y − μ| / b`` over all pixels (masked pixels count as 0).

    Args:
        mu, log_b, target: ``(B,C,H,W)``.
        mask: optional bool ``(B,1,H,W)`` or ``(B,C,H,W)`` of valid pixels.
    """
    if not mu.shape == log_b.shape == target.shape:
        raise ValueError(f"mu, log_b and target must share a shape, got {mu.shape}, {log_b.shape}, {target.shape}")
    b = scale(log_b)
    nll = math.log(2.0) + b.log() + (target - mu).abs() / b
    return _masked_mean(nll, mask)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean ``|pred − target|`` over all pixels with invalid pixels zeroed (reference normalisation)."""
    return _masked_mean((pred - target).abs(), mask)
