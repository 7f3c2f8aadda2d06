"""Metrics for every dense domain of :mod:`robust.tasks`, uncertainty calibration and OOD detection.

Per-image metrics return ``(B,)`` tensors (mean over each image's valid pixels; NaN for an image
without valid pixels) so that datasets average over images with ``nanmean``. Segmentation accumulates a
confusion matrix instead (mIoU is a dataset-level quantity). :class:`MetricAccumulator` does both.

Validity masks come from :func:`robust.losses.valid_mask`. Angles are in degrees; ``within_*`` and
``delta1`` in percent.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

import torch

from corruptions3d.geometry import channel_norm
from robust.losses import unit_normals, valid_mask
from robust.tasks import IGNORE_INDEX, get_domain

NORMAL_THRESHOLDS = (11.25, 22.5, 30.0)


def per_image_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` (B,C,H,W) over each image's valid pixels (``mask`` (B,1,H,W)); ``(B,)``, NaN if none."""
    m = mask.expand_as(x).to(x.dtype)
    return (x * m).flatten(1).sum(1) / m.flatten(1).sum(1)


def _clean(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 copies with invalid targets replaced by the prediction (no inf/NaN arithmetic on masked pixels)."""
    pred, target = pred.float(), target.float()
    return pred, torch.where(mask.expand_as(target), target, pred)


def l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per image, ``(B,)``."""
    pred, target = _clean(pred, target, mask)
    return per_image_mean((pred - target).abs(), mask)


def depth_metrics(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """``l1`` (m), ``abs_rel`` = mean |p - t|/t, ``delta1`` = % of pixels with max(p/t, t/p) < 1.25; each ``(B,)``.

    Predictions are clamped to >= 1e-3 m for the ratio (a non-positive depth is maximally wrong, not NaN).
    """
    pred, target = _clean(pred, target, mask)
    mask = mask & (target > 0)
    err = (pred - target).abs()
    safe_t = target.clamp_min(1e-6)
    ratio = torch.maximum(pred.clamp_min(1e-3) / safe_t, safe_t / pred.clamp_min(1e-3))
    return {
        "l1": per_image_mean(err, mask),
        "abs_rel": per_image_mean(err / safe_t, mask),
        "delta1": 100.0 * per_image_mean((ratio < 1.25).float(), mask),
    }


def angular_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel angle in degrees between ``(B,3,H,W)`` vectors, ``(B,1,H,W)`` (atan2: exact near 0 and 180)."""
    p, t = unit_normals(pred.float()), unit_normals(target.float())
    cross = channel_norm(torch.cross(p, t, dim=1))
    dot = (p * t).sum(1, keepdim=True)
    return torch.rad2deg(torch.atan2(cross, dot))


def normal_metrics(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """``angle_mean``, ``angle_median`` (degrees) and ``within_{11.25,22.5,30}`` (%) per image, ``(B,)``."""
    pred, target = _clean(pred, target, mask)
    ang = angular_error(pred, target)
    nan = torch.full_like(ang, float("nan"))
    out = {
        "angle_mean": per_image_mean(ang, mask),
        "angle_median": torch.where(mask, ang, nan).flatten(1).nanmedian(dim=1).values,
    }
    for t in NORMAL_THRESHOLDS:
        out[f"within_{t:g}"] = 100.0 * per_image_mean((ang < t).float(), mask)
    return out


def psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PSNR in dB for [0,1] images, ``(B,)``."""
    pred, target = _clean(pred, target, mask)
    return -10.0 * torch.log10(per_image_mean((pred - target) ** 2, mask).clamp_min(1e-12))


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(K,K)`` int64 counts, rows = ground truth, columns = prediction; label 255 is ignored.

    ``pred`` is ``(B,H,W)`` class indices or ``(B,K,H,W)`` logits.
    """
    if pred.dim() == 4:
        pred = pred.argmax(1)
    keep = (labels != IGNORE_INDEX) & (labels >= 0) & (labels < num_classes)
    idx = labels[keep] * num_classes + pred[keep]
    return torch.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes)


def miou(confusion: torch.Tensor) -> torch.Tensor:
    """Mean IoU (%) over classes present in prediction or ground truth, from a :func:`confusion_matrix`."""
    c = confusion.double()
    inter = c.diag()
    union = c.sum(0) + c.sum(1) - inter
    present = union > 0
    return 100.0 * (inter[present] / union[present]).mean()


def sparsification(
    error: torch.Tensor, uncertainty: torch.Tensor, mask: torch.Tensor, steps: int = 20
) -> dict[str, torch.Tensor]:
    """Sparsification curves and AUSE per image.

    Removing the fraction ``f`` of valid pixels with the highest ``uncertainty`` (resp. the highest
    ``error``, the oracle), the curve is the mean error of the rest. Fractions ``f = 0, 1/steps, ...,
    (steps-1)/steps``. AUSE is the trapezoid area of ``curve - oracle`` over f (units of ``error``),
    with both curves normalised by the image's mean error so images of any scale compare.

    Args: ``error``, ``uncertainty``: ``(B,C,H,W)``; ``mask``: ``(B,1,H,W)``.
    Returns: ``fractions (F,)``, ``curve (B,F)``, ``oracle (B,F)``, ``ause (B,)``.
    """
    m = mask.expand_as(error).flatten(1)
    e = torch.where(m, error.float().flatten(1), 0.0)
    n = m.sum(1, keepdim=True)
    fractions = torch.arange(steps, device=e.device, dtype=torch.float32) / steps
    removed = (fractions[None] * n).floor().long()  # (B,F)

    def curve(score: torch.Tensor) -> torch.Tensor:
        order = torch.where(m, score.float().flatten(1), -torch.inf).argsort(dim=1, descending=True, stable=True)
        csum = torch.nn.functional.pad(e.gather(1, order).cumsum(1), (1, 0))
        total = csum.gather(1, n)
        return (total - csum.gather(1, removed)) / (n - removed).clamp_min(1)

    c, o = curve(uncertainty), curve(error)
    scale = c[:, :1].clamp_min(1e-12)
    c, o = c / scale, o / scale
    ause = torch.trapezoid(c - o, fractions, dim=1)
    ause = torch.where(n[:, 0] > 0, ause, float("nan"))
    return {"fractions": fractions, "curve": c, "oracle": o, "ause": ause}


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Exact ROC-AUC of ``scores`` for binary ``labels`` (1 = positive, e.g. OOD), ties counted as 1/2.

    Mann-Whitney U with average ranks: ``AUC = (R_pos - n_pos(n_pos+1)/2) / (n_pos n_neg)``.
    """
    scores, labels = scores.flatten().double(), labels.flatten().bool()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"roc_auc needs both classes; got {n_pos} positives and {n_neg} negatives")
    _, inverse, counts = torch.unique(scores, sorted=True, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    avg_rank = ends - (counts.double() - 1) / 2  # 1-based average rank of each distinct value
    rank_sum = avg_rank[inverse][labels].sum()
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def domain_metrics(domain: str, pred: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Registry metrics of ``domain`` for ``pred`` against ``batch[domain]``, each ``(B,)`` (not segmentation)."""
    d = get_domain(domain)
    target = batch[d.name]
    mask = valid_mask(d.name, target, batch)
    if d.name.startswith("depth"):
        return depth_metrics(pred, target, mask)
    if d.name == "normal":
        return normal_metrics(pred, target, mask)
    if d.name == "rgb":
        return {"psnr": psnr(pred, target, mask)}
    if d.name == "segment_semantic":
        raise ValueError("segment_semantic is a dataset-level metric: use confusion_matrix/miou or MetricAccumulator")
    return {"l1": l1(pred, target, mask)}


class MetricAccumulator:
    """Accumulates metrics over batches: per-image metrics are averaged over images, mIoU from a confusion matrix.

    >>> acc = MetricAccumulator(num_classes=17)
    >>> acc.update(outputs, batch, ["normal", "segment_semantic"])
    >>> acc.compute()  # {"normal/angle_mean": 21.3, ..., "segment_semantic/miou": 40.2}
    """

    def __init__(self, num_classes: int | None = None) -> None:
        self.num_classes = num_classes
        self.sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), dtype=torch.float64))
        self.counts: dict[str, int] = defaultdict(int)
        self.confusion: torch.Tensor | None = None

    @torch.no_grad()
    def update(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor], domains) -> None:
        for domain in domains:
            name = get_domain(domain).name
            if name == "segment_semantic":
                k = self.num_classes or outputs[name].shape[1]
                labels = torch.where(valid_mask(name, batch[name], batch), batch[name], IGNORE_INDEX)
                cm = confusion_matrix(outputs[name], labels, k).cpu()
                self.confusion = cm if self.confusion is None else self.confusion + cm
                continue
            for metric, values in domain_metrics(name, outputs[name], batch).items():
                values = values.double().cpu()
                ok = ~torch.isnan(values)
                self.sums[f"{name}/{metric}"] += values[ok].sum()
                self.counts[f"{name}/{metric}"] += int(ok.sum())

    def compute(self) -> dict[str, float]:
        out = {k: float(self.sums[k] / v) if v else float("nan") for k, v in self.counts.items()}
        if self.confusion is not None:
            out["segment_semantic/miou"] = float(miou(self.confusion))
        return out
