"""Gradient-magnitude balancing of loss terms (XTC ``compute_grad_ratio``, reference §1.4).

Each term's weight shrinks with the size of the gradient it sends into the trained network: with
``g_i = mean |∂L_i/∂θ|`` over every parameter element and ``G = Σ g_i`` over ``n`` terms,
``c_i = (G − g_i) / ((n − 1)·G)`` (the ``c_i`` sum to 1), then the direct term's weight is multiplied by
``n − 1``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch


def balance_weights(grad_magnitudes: torch.Tensor, direct_index: int = 0) -> torch.Tensor:
    """Weights ``(n,)`` from per-term gradient magnitudes ``(n,)``; term ``direct_index`` is the direct loss.

    A single term gets weight 1 (there is nothing to balance).
    """
    g = grad_magnitudes.detach().double()
    n = g.numel()
    if g.dim() != 1 or n == 0:
        raise ValueError(f"grad_magnitudes must be a non-empty 1-D tensor, got shape {tuple(grad_magnitudes.shape)}")
    if n == 1:
        return torch.ones(1, dtype=grad_magnitudes.dtype, device=grad_magnitudes.device)
    total = g.sum()
    if total <= 0:
        raise ValueError("all loss terms have zero gradient; cannot balance them")
    c = (total - g) / ((n - 1) * total)
    c[direct_index] *= n - 1
    return c.to(grad_magnitudes.dtype)


def gradient_magnitudes(losses: Sequence[torch.Tensor], params: Iterable[torch.nn.Parameter]) -> torch.Tensor:
    """``g_i = mean |∂L_i/∂θ|`` over all elements of ``params`` for each scalar loss, ``(n,)``.

    Runs one backward pass per loss and keeps the graph, so the weighted total can be backpropagated after.
    Parameters a loss does not reach count as zero gradient.
    """
    params = [p for p in params if p.requires_grad]
    numel = sum(p.numel() for p in params)
    if numel == 0:
        raise ValueError("no trainable parameters to measure gradients on")
    mags = []
    for loss in losses:
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        mags.append(sum(g.abs().sum() for g in grads if g is not None) / numel)
    return torch.stack([torch.as_tensor(m, dtype=torch.float32) for m in mags]).detach()
