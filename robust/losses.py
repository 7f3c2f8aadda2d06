"""Masked losses per domain, on the canonical encodings of :mod:`robust.tasks`.

Which pixels count (:func:`valid_mask`): the batch's ``mask_valid`` when present (``(B,1,H,W)`` bool,
derived from depth), intersected with the target's own invalid code (depth: the 65535 code / non-finite;
normals: the (128,128,128) "no normal" colour, which decodes to a near-zero vector; labels: 255).

Reductions: ``"valid"`` (default) averages over valid pixels only; ``"all"`` multiplies by the mask and
averages over every pixel, as the XTC/XDE reference code does (the loss then scales with the valid fraction).

Model outputs are raw (see :mod:`robust.models.base`): normals need not be unit length, segmentation
outputs are logits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from corruptions3d.geometry import normalize_channels
from robust.models.registry import uncertainty_key
from robust.tasks import IGNORE_INDEX, get_domain, mask_from_depth

NORMAL_MIN_NORM = 0.5
"""Decoded normals shorter than this are invalid (unit vectors have norm ~1; the invalid code ~0.004)."""


def unit_normals(n: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Normalise ``(B,3,H,W)`` vectors to unit length (zero vectors stay ~zero)."""
    return normalize_channels(n, eps)


def valid_mask(domain: str, target: torch.Tensor, batch: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """``(B,1,H,W)`` bool mask of pixels where ``target`` of ``domain`` is valid (``(B,H,W)`` for labels)."""
    name = get_domain(domain).name
    if name == "segment_semantic":
        mask = target != IGNORE_INDEX
        extra = batch.get("mask_valid") if batch is not None else None
        return mask & extra[:, 0] if extra is not None else mask
    if name.startswith("depth"):
        mask = mask_from_depth(target)
    elif name == "normal":
        mask = target.norm(dim=1, keepdim=True) > NORMAL_MIN_NORM
    else:
        mask = torch.isfinite(target).all(dim=1, keepdim=True)
    extra = batch.get("mask_valid") if batch is not None else None
    return mask & extra.bool() if extra is not None else mask


def masked_mean(x: torch.Tensor, mask: torch.Tensor, reduction: str = "valid") -> torch.Tensor:
    """Mean of ``x`` (B,C,H,W) over pixels where ``mask`` (B,1,H,W) holds; scalar.

    ``"valid"``: sum over valid pixels / (valid pixels · C); ``"all"``: mean of ``x·mask`` over all pixels.
    A batch without valid pixels gives 0 (with gradient 0), not NaN.
    """
    m = mask.to(x.dtype).expand_as(x)
    total = (x * m).sum()
    if reduction == "all":
        return total / x.numel()
    if reduction != "valid":
        raise ValueError(f"reduction must be 'valid' or 'all', got {reduction!r}")
    return total / m.sum().clamp_min(1.0)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, reduction: str = "valid") -> torch.Tensor:
    """Masked L1 ``|pred - target|`` (invalid target values never reach the arithmetic)."""
    target = torch.where(mask.expand_as(target), target, pred.detach())
    return masked_mean((pred - target).abs(), mask, reduction)


def cosine_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, reduction: str = "valid") -> torch.Tensor:
    """Masked ``1 - cos(angle(pred, target))`` for ``(B,3,H,W)`` normals (smooth near zero angle, unlike acos)."""
    cos = F.cosine_similarity(pred, target, dim=1, eps=1e-6).unsqueeze(1)
    return masked_mean(1.0 - cos, mask, reduction)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of ``(B,K,H,W)`` logits vs ``(B,H,W)`` int64 labels, ignoring 255 (and ``~mask``)."""
    if mask is not None:
        labels = torch.where(mask, labels, IGNORE_INDEX)
    if not (labels != IGNORE_INDEX).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX)


def laplace_nll(
    mu: torch.Tensor, log_b: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, reduction: str = "valid"
) -> torch.Tensor:
    """Masked Laplace NLL ``log(2b) + |y - mu|/b`` with ``b = exp(log_b)`` (XDE stage 1)."""
    target = torch.where(mask.expand_as(target), target, mu.detach())
    nll = log_b + torch.log(torch.tensor(2.0, device=mu.device)) + (target - mu).abs() * torch.exp(-log_b)
    return masked_mean(nll, mask, reduction)


def gaussian_nll(
    mu: torch.Tensor, log_sigma: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, reduction: str = "valid"
) -> torch.Tensor:
    """Masked Gaussian NLL ``log(sigma) + (y - mu)^2 / (2 sigma^2) + log(2 pi)/2``."""
    target = torch.where(mask.expand_as(target), target, mu.detach())
    half_log_2pi = 0.9189385332046727
    nll = log_sigma + 0.5 * ((target - mu) * torch.exp(-log_sigma)) ** 2 + half_log_2pi
    return masked_mean(nll, mask, reduction)


def domain_loss(
    domain: str,
    outputs: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    normal_loss: str = "l1",
    reduction: str = "valid",
) -> torch.Tensor:
    """The default loss of ``domain`` (registry ``loss`` field): masked L1 / CE, or Laplace NLL when
    ``outputs`` has a ``{domain}_log_b`` head. ``normal_loss``: ``"l1"`` (reference) or ``"cosine"``."""
    name = get_domain(domain).name
    if normal_loss not in ("l1", "cosine"):
        raise ValueError(f"normal_loss must be 'l1' or 'cosine', got {normal_loss!r}")
    if name not in batch:
        raise KeyError(f"loss for {name!r} needs the target in the batch; batch has {sorted(batch)}")
    pred, target = outputs[name], batch[name]
    mask = valid_mask(name, target, batch)
    if name == "segment_semantic":
        return cross_entropy(pred, target, mask)
    pred = pred.float()
    if uncertainty_key(name) in outputs:
        return laplace_nll(pred, outputs[uncertainty_key(name)].float(), target, mask, reduction)
    if name == "normal" and normal_loss == "cosine":
        return cosine_loss(pred, target, mask, reduction)
    return masked_l1(pred, target, mask, reduction)


def multi_domain_loss(
    outputs: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    domains: Sequence[str],
    weights: Mapping[str, float] | None = None,
    **kw,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of :func:`domain_loss` over ``domains``; returns ``(loss, {"loss/<domain>": detached value})``."""
    total = 0.0
    logs = {}
    for d in domains:
        value = domain_loss(d, outputs, batch, **kw)
        total = total + (weights or {}).get(d, 1.0) * value
        logs[f"loss/{d}"] = value.detach()
    return total, logs
