"""Exact inverse-variance merging of Laplace path predictions (XDE §2.7, ``demo.py``).

Each path predicts a Laplace ``(μ, s = log b)`` per pixel and channel; its standard deviation is
``σ = √2·b`` with ``b = exp(s) + 1e-10`` (the reference's floor on ``b``).
"""

from __future__ import annotations

import math

import torch

B_EPS = 1e-10


def scale(log_b: torch.Tensor) -> torch.Tensor:
    """Laplace scale ``b = exp(s) + 1e-10``."""
    return log_b.exp() + B_EPS


def merge_weights(log_b: torch.Tensor) -> torch.Tensor:
    """Per-pixel path weights ``w_i = Σ_c σ_{i,c}^{-2} / Σ_j Σ_c σ_{j,c}^{-2}``, ``σ = √2·b``.

    Args:
        log_b: ``(K,B,C,H,W)`` log scales of K paths.

    Returns:
        ``(K,B,1,H,W)`` weights summing to 1 over K, shared across channels.
    """
    log_sigma = scale(log_b).log() + 0.5 * math.log(2.0)
    log_precision = torch.logsumexp(-2 * log_sigma, dim=2, keepdim=True)
    return torch.softmax(log_precision, dim=0)


def merge_laplace(mu: torch.Tensor, log_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge K path predictions into a mean and a standard deviation, both ``(B,C,H,W)``.

    ``μ̄_c = Σ_i w_i μ_{i,c}`` and ``σ̄_c = sqrt(Σ_i w_i² σ_{i,c}²)`` (paths assumed independent).

    Args:
        mu, log_b: ``(K,B,C,H,W)``.
    """
    if mu.dim() != 5 or mu.shape != log_b.shape:
        raise ValueError(f"mu and log_b must both be (K,B,C,H,W), got {tuple(mu.shape)} and {tuple(log_b.shape)}")
    w = merge_weights(log_b)
    sigma = math.sqrt(2.0) * scale(log_b)
    return (w * mu).sum(0), ((w * sigma) ** 2).sum(0).sqrt()


def disagreement(mu: torch.Tensor) -> torch.Tensor:
    """``√2·std_i(μ_i)`` over the K paths of ``(K,B,C,H,W)`` (what the reference demo saves as uncertainty)."""
    return math.sqrt(2.0) * mu.std(0, correction=0)
