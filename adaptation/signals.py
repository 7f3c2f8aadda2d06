"""Adaptation signals: what the adapters see at test time besides the image.

A :class:`Signal` is ``values`` ``(B,C,H,W)`` plus a ``mask`` ``(B,1,H,W)`` of the pixels where they hold,
and a ``kind``:

- ``"regression"``: sparse ground truth in the target's units (e.g. depth in metres at a few pixels);
- ``"classes"``: sparse click labels as one-hot ``(B,K,H,W)`` at the clicked pixels;
- ``"map"``: a dense label-free map (consistency energy, XDE uncertainty ...) with an all-true mask;
  it conditions RNA but gives no loss (TTO/TENT then need an explicit ``objective``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from robust.tasks import IGNORE_INDEX

KINDS = ("regression", "classes", "map")
RNA_TRAIN_FRACTION = (0.0, 0.0025)
"""Per-image fraction of valid pixels kept in RNA training, drawn uniformly (reference: U(0, 0.25 %))."""


@dataclass
class Signal:
    """``values`` (B,C,H,W) float, ``mask`` (B,1,H,W) bool, ``kind`` in :data:`KINDS`."""

    values: torch.Tensor
    mask: torch.Tensor
    kind: str = "regression"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"signal kind must be one of {KINDS}, got {self.kind!r}")
        v, m = self.values, self.mask
        if v.dim() != 4 or m.dim() != 4 or m.shape[1] != 1 or m.shape[0] != v.shape[0] or m.shape[-2:] != v.shape[-2:]:
            raise ValueError(
                f"signal values must be (B,C,H,W) and mask (B,1,H,W) of the same B,H,W; "
                f"got values {tuple(v.shape)}, mask {tuple(m.shape)}"
            )
        self.mask = m.bool()

    def check(self, image: torch.Tensor, channels: int | None = None, name: str = "signal") -> None:
        """Raise ``ValueError`` unless the signal matches ``image`` (B,*,H,W) (and ``channels`` when given)."""
        v = self.values
        if v.shape[0] != image.shape[0] or v.shape[-2:] != image.shape[-2:]:
            raise ValueError(
                f"{name}: values {tuple(v.shape)} do not match the image batch {tuple(image.shape)} (B, H, W differ)"
            )
        if channels is not None and v.shape[1] != channels:
            raise ValueError(f"{name}: expected {channels} channel(s) for kind {self.kind!r}, got {v.shape[1]}")

    def to(self, device: torch.device | str) -> Signal:
        return Signal(self.values.to(device), self.mask.to(device), self.kind)

    def __getitem__(self, idx) -> Signal:
        return Signal(self.values[idx], self.mask[idx], self.kind)


def keep_fraction(
    valid: torch.Tensor, fraction: float | tuple[float, float], generator: torch.Generator | None = None
) -> torch.Tensor:
    """Keep each pixel of ``valid`` (B,1,H,W) with probability p; p is fixed or drawn per image from ``(lo, hi)``."""
    b = valid.shape[0]
    if isinstance(fraction, tuple):
        lo, hi = fraction
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"fraction range must satisfy 0 <= lo <= hi <= 1, got {fraction}")
        p = lo + (hi - lo) * torch.rand(b, 1, 1, 1, generator=generator)
    else:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
        p = torch.full((b, 1, 1, 1), float(fraction))
    u = torch.rand(valid.shape, generator=generator)
    return (u < p).to(valid.device) & valid.bool()


def sparse_depth(
    depth: torch.Tensor,
    valid: torch.Tensor,
    fraction: float | tuple[float, float] = 0.0025,
    generator: torch.Generator | None = None,
) -> Signal:
    """Sparse depth supervision: ``depth`` (B,1,H,W) metres at a random ``fraction`` of ``valid`` pixels."""
    mask = keep_fraction(valid, fraction, generator)
    return Signal(torch.where(mask, depth, torch.zeros_like(depth)), mask, "regression")


def sparse_clicks(
    labels: torch.Tensor,
    num_classes: int,
    fraction: float | tuple[float, float] = 0.0025,
    generator: torch.Generator | None = None,
) -> Signal:
    """Click labels: one-hot ``(B,K,H,W)`` at a random ``fraction`` of labelled pixels of ``labels`` (B,H,W)."""
    if labels.dim() != 3:
        raise ValueError(f"labels must be (B,H,W) int64, got {tuple(labels.shape)}")
    labelled = (labels != IGNORE_INDEX).unsqueeze(1)
    mask = keep_fraction(labelled, fraction, generator)
    onehot = F.one_hot(labels.clamp(0, num_classes - 1), num_classes).permute(0, 3, 1, 2).float()
    return Signal(onehot * mask, mask, "classes")


def dense_map(values: torch.Tensor) -> Signal:
    """A label-free dense signal (B,C,H,W), e.g. a consistency-energy or uncertainty map."""
    if values.dim() != 4:
        raise ValueError(f"map signal must be (B,C,H,W), got {tuple(values.shape)}")
    mask = torch.ones_like(values[:, :1], dtype=torch.bool)
    return Signal(values.float(), mask, "map")


def signal_loss(pred: torch.Tensor, signal: Signal) -> torch.Tensor:
    """Per-sample loss ``(B,)`` of ``pred`` (B,C,H,W) against the signal at its masked pixels.

    ``regression``: mean |pred - values| over masked pixels and channels; ``classes``: mean cross-entropy
    of the logits at clicked pixels. Images without a masked pixel get 0 (gradient 0).
    """
    if signal.kind == "map":
        raise ValueError("a 'map' signal has no supervised loss: pass objective=callable(outputs) -> (B,) loss")
    m = signal.mask.to(pred.dtype)
    count = m.sum(dim=(1, 2, 3)).clamp_min(1.0)
    if signal.kind == "regression":
        target = torch.where(signal.mask, signal.values.to(pred.dtype), pred.detach())
        return ((pred - target).abs() * m).sum(dim=(1, 2, 3)) / (count * pred.shape[1])
    nll = -(signal.values.to(pred.dtype) * F.log_softmax(pred, dim=1)).sum(dim=1, keepdim=True)
    return (nll * m).sum(dim=(1, 2, 3)) / count


def controller_input(pred: torch.Tensor, signal: Signal) -> torch.Tensor:
    """RNA controller input: ``[signal, current prediction]`` at the signal's pixels, prediction detached.

    regression: ``cat(y·m, pred·m)`` (as released); classes: ``cat(onehot·m, softmax(pred)·m)``;
    map: ``cat(map, pred)``.
    """
    pred = pred.detach()
    if signal.kind == "classes":
        pred = pred.softmax(dim=1)
    m = signal.mask.to(pred.dtype)
    return torch.cat([signal.values.to(pred.dtype) * m, pred * m], dim=1)
