"""Per-image masked L1 and the perceptual consistency term ``|g(f(x)) − g(y)|`` (XTC §1.4)."""

from __future__ import annotations

import torch
from torch import nn

REDUCTIONS = ("all", "valid")


def per_image_l1(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, reduction: str = "all"
) -> torch.Tensor:
    """Masked ``|pred − target|`` per image, ``(B,)``.

    ``"all"`` divides by every pixel·channel (the reference); ``"valid"`` by the valid ones (0 if none).
    Invalid target values never enter the arithmetic.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must match")
    if mask is None:
        return (pred - target).abs().flatten(1).mean(1)
    m = mask.expand_as(target)
    diff = torch.where(m, (pred - torch.where(m, target, pred.detach())).abs(), 0.0).flatten(1)
    denom = diff.shape[1] if reduction == "all" else m.flatten(1).sum(1).clamp_min(1)
    return diff.sum(1) / denom


def perceptual_l1(
    g: nn.Module | None,
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: str = "all",
) -> torch.Tensor:
    """Perceptual consistency ``|g(pred) − g(target)|`` per image, ``(B,)``; ``g`` is a frozen tensor map.

    ``g(target)`` carries no gradient; only ``pred`` (the trained network's output) receives one.
    ``g=None`` is the identity (the direct term).
    """
    if g is None:
        return per_image_l1(pred, target, mask, reduction)
    with torch.no_grad():
        ref = g(target)
    out = g(pred)
    if mask is not None and mask.shape[-2:] != out.shape[-2:]:
        raise ValueError(f"mask {tuple(mask.shape)} does not match the perceptual output {tuple(out.shape)}")
    return per_image_l1(out, ref, mask, reduction)
