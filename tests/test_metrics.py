"""Metrics and losses on hand-computed examples; each loss decreases when optimised on a tiny batch."""

from __future__ import annotations

import math

import pytest
import torch

from robust import losses, metrics
from robust.models import create_model
from robust.tasks import IGNORE_INDEX, INVALID_DEPTH

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest.one_thread


def _img(values, channels=1):
    """A (1,C,1,N) image from a flat list (channels repeat the values)."""
    t = torch.tensor(values, dtype=torch.float32).view(1, 1, 1, -1)
    return t.repeat(1, channels, 1, 1)


def test_depth_metrics_hand_computed():
    target = _img([1.0, 2.0, 4.0, INVALID_DEPTH])
    pred = _img([1.1, 3.0, 4.0, 0.0])
    mask = losses.valid_mask("depth_euclidean", target)
    assert mask.tolist() == [[[[True, True, True, False]]]]
    m = metrics.depth_metrics(pred, target, mask)
    # errors 0.1, 1.0, 0.0 over 3 valid pixels; relative 0.1, 0.5, 0; ratios 1.1, 1.5, 1 -> 2 of 3 < 1.25
    assert m["l1"].item() == pytest.approx(1.1 / 3, abs=1e-6)
    assert m["abs_rel"].item() == pytest.approx(0.6 / 3, abs=1e-6)
    assert m["delta1"].item() == pytest.approx(200 / 3, abs=1e-4)


def test_normal_metrics_hand_computed():
    # angles to +z: 0, 10, 20, 45 degrees (tilted in the x-z plane); the last pixel is the invalid code.
    angles = [0.0, 10.0, 20.0, 45.0]
    pred = torch.zeros(1, 3, 1, 5)
    for i, a in enumerate(angles):
        pred[0, :, 0, i] = torch.tensor([math.sin(math.radians(a)), 0.0, math.cos(math.radians(a))]) * 3.0
    pred[0, :, 0, 4] = torch.tensor([1.0, 0.0, 0.0])
    target = torch.zeros(1, 3, 1, 5)
    target[0, 2, 0, :4] = 1.0
    target[0, :, 0, 4] = 128 / 127.5 - 1  # decoded (128,128,128) "no normal"
    mask = losses.valid_mask("normal", target)
    m = metrics.normal_metrics(pred, target, mask)
    assert m["angle_mean"].item() == pytest.approx(75 / 4, abs=1e-3)  # fp32 atan2: ~1e-5 degrees
    assert m["angle_median"].item() == pytest.approx(10.0, abs=1e-3)  # torch lower median of 4 values
    assert m["within_11.25"].item() == pytest.approx(50.0)
    assert m["within_22.5"].item() == pytest.approx(75.0)
    assert m["within_30"].item() == pytest.approx(75.0)


def test_l1_and_psnr_per_image_and_empty_image_is_nan():
    pred = torch.tensor([0.5, 0.5, 0.0, 0.0]).view(2, 1, 1, 2)
    target = torch.tensor([0.0, 1.0, 0.0, 0.0]).view(2, 1, 1, 2)
    mask = torch.tensor([True, True, False, False]).view(2, 1, 1, 2)
    out = metrics.l1(pred, target, mask)
    assert out[0].item() == pytest.approx(0.5) and math.isnan(out[1].item())
    # mse 0.25 -> psnr = -10 log10(0.25) = 6.0206 dB
    assert metrics.psnr(pred, target, mask)[0].item() == pytest.approx(6.0206, abs=1e-4)


def test_miou_ignores_255_hand_computed():
    labels = torch.tensor([[0, 0, 1, 1, IGNORE_INDEX]])
    pred = torch.tensor([[0, 1, 1, 1, 0]])
    cm = metrics.confusion_matrix(pred, labels, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    # class 0: inter 1, union 2 -> 0.5; class 1: inter 2, union 3 -> 2/3; class 2 absent (excluded)
    assert metrics.miou(cm).item() == pytest.approx(100 * (0.5 + 2 / 3) / 2)


def test_roc_auc_exact_with_ties():
    scores = torch.tensor([0.1, 0.4, 0.4, 0.8, 0.3])
    labels = torch.tensor([0, 0, 1, 1, 1])
    # pairs (pos, neg): 0.4>0.1 1, 0.4=0.4 0.5, 0.8>0.1 1, 0.8>0.4 1, 0.3>0.1 1, 0.3<0.4 0 -> 4.5 / 6
    assert metrics.roc_auc(scores, labels).item() == pytest.approx(0.75)
    assert metrics.roc_auc(torch.arange(4.0), torch.tensor([0, 0, 1, 1])).item() == 1.0
    with pytest.raises(ValueError, match="both classes"):
        metrics.roc_auc(torch.rand(3), torch.ones(3))


def test_sparsification_oracle_uncertainty_has_zero_ause_and_reversed_is_positive():
    error = _img([4.0, 3.0, 2.0, 1.0])
    mask = torch.ones_like(error, dtype=torch.bool)
    good = metrics.sparsification(error, error.clone(), mask, steps=4)
    assert good["ause"].item() == pytest.approx(0.0, abs=1e-7)
    bad = metrics.sparsification(error, -error, mask, steps=4)
    # mean error of the kept pixels after removing 0..3 pixels; oracle removes the largest, bad the smallest
    oracle = torch.tensor([10 / 4, 6 / 3, 3 / 2, 1.0]) / 2.5
    worst = torch.tensor([10 / 4, 9 / 3, 7 / 2, 4.0]) / 2.5
    assert torch.allclose(bad["oracle"][0], oracle) and torch.allclose(bad["curve"][0], worst)
    assert bad["ause"].item() == pytest.approx(torch.trapezoid(worst - oracle, torch.arange(4) / 4).item())


def test_calibration_nll_hand_computed():
    mu, y = _img([0.0]), _img([1.0])
    mask = torch.ones_like(mu, dtype=torch.bool)
    zero = torch.zeros_like(mu)
    # Laplace b=1: log 2 + 1; Gaussian sigma=1: 0.5 + log(2 pi)/2
    assert losses.laplace_nll(mu, zero, y, mask).item() == pytest.approx(math.log(2) + 1)
    assert losses.gaussian_nll(mu, zero, y, mask).item() == pytest.approx(0.5 + 0.5 * math.log(2 * math.pi))


def test_masked_l1_reductions_and_invalid_pixels_never_leak():
    pred = _img([1.0, 1.0, 0.0, 0.0])
    target = _img([0.0, 0.0, float("inf"), 5.0])
    mask = _img([1, 1, 0, 0]).bool()
    assert losses.masked_l1(pred, target, mask).item() == pytest.approx(1.0)
    assert losses.masked_l1(pred, target, mask, reduction="all").item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="reduction"):
        losses.masked_l1(pred, target, mask, reduction="sum")


@pytest.mark.parametrize(
    ("domain", "extra"),
    [
        ("depth_euclidean", {}),
        ("normal", {}),
        ("normal", {"normal_loss": "cosine"}),
        ("segment_semantic", {}),
        ("reshading", {"uncertainty": True}),
    ],
)
def test_each_loss_decreases_on_a_tiny_batch(domain, extra):
    torch.manual_seed(0)
    uncertainty = extra.pop("uncertainty", False)
    model = create_model("unet_tiny", ["rgb"], [domain], num_classes=4, uncertainty=uncertainty)
    batch = {"rgb": torch.rand(2, 3, 8, 8), "mask_valid": torch.rand(2, 1, 8, 8) > 0.2}
    if domain == "segment_semantic":
        batch[domain] = torch.randint(0, 4, (2, 8, 8))
    elif domain == "normal":
        batch[domain] = losses.unit_normals(torch.randn(2, 3, 8, 8))
    else:
        batch[domain] = torch.rand(2, 1, 8, 8) * 3 + 0.5
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    values = []
    for _ in range(6):
        loss = losses.domain_loss(domain, model(batch), batch, **extra)
        opt.zero_grad()
        loss.backward()
        opt.step()
        values.append(loss.item())
    assert values[-1] < values[0]


def test_accumulator_averages_over_images_and_accumulates_confusion():
    acc = metrics.MetricAccumulator(num_classes=2)
    for value in (1.0, 3.0):
        batch = {"reshading": torch.zeros(1, 1, 2, 2), "segment_semantic": torch.tensor([[[0, 1], [1, 1]]])}
        outputs = {"reshading": torch.full((1, 1, 2, 2), value), "segment_semantic": batch["segment_semantic"]}
        acc.update(outputs, batch, ["reshading", "segment_semantic"])
    out = acc.compute()
    assert out["reshading/l1"] == pytest.approx(2.0)
    assert out["segment_semantic/miou"] == pytest.approx(100.0)
