"""XDE middle domains, Laplace NLL, inverse-variance merging and BRAVE fusion."""

from __future__ import annotations

import json
import math
from functools import partial

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from consistency import balance_weights, gradient_magnitudes
from consistency.losses import perceptual_l1
from ensembles import (
    MIDDLE_DOMAINS,
    BackboneSpec,
    BraveFusion,
    ConsistencyTraining,
    XDEnsemble,
    load_ensemble_state,
    merge_laplace,
    middle_domain,
    perturb,
    sigma_loss,
)
from ensembles.domains import haar_dwt
from ensembles.method import _path
from ensembles.xde import consistency_weights, frozen_copy, path_nll
from robust.io import ViewKey, write_view
from robust.models import create_model
from robust.train import main

# Gaussian taps are built in float32 by corruptions3d.filters, so float64 results agree with scipy to ~1e-7.
TOL = 1e-6


@pytest.fixture
def rgb() -> torch.Tensor:
    return torch.rand(2, 3, 20, 24, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _grey(rgb: torch.Tensor) -> np.ndarray:
    return rgb.mean(1).numpy()


def test_channels_and_shapes(rgb):
    assert list(MIDDLE_DOMAINS) == ["rgb", "emboss4d", "grey", "sobel_edges", "laplace_edges", "gauss", "sharp", "wav"]
    for d in MIDDLE_DOMAINS.values():
        assert d(rgb).shape == (2, d.channels, 20, 24), d.name


def test_sobel_matches_scipy(rgb):
    ref = []
    for g in _grey(rgb):
        b = ndi.gaussian_filter(g, 2.0)  # scipy default border 'reflect' = symmetric
        ref.append(np.hypot(ndi.sobel(b, axis=1), ndi.sobel(b, axis=0)))
    np.testing.assert_allclose(middle_domain("sobel_edges")(rgb)[:, 0].numpy(), np.stack(ref), atol=TOL)


def test_laplace_matches_reference_padding(rgb):
    # reference: torch reflect-pad 8 (scipy 'mirror'), σ=2 Gaussian, replicate-pad 1, 4-neighbour Laplacian
    ref = []
    for g in _grey(rgb):
        b = np.pad(ndi.gaussian_filter(g, 2.0, mode="mirror"), 1, mode="edge")
        ref.append(b[:-2, 1:-1] + b[2:, 1:-1] + b[1:-1, :-2] + b[1:-1, 2:] - 4 * b[1:-1, 1:-1])
    np.testing.assert_allclose(middle_domain("laplace_edges")(rgb)[:, 0].numpy(), np.stack(ref), atol=TOL)


def test_gauss_and_sharp_match_scipy(rgb):
    low = ndi.gaussian_filter(rgb.numpy(), (0, 0, 4.0, 4.0), mode="mirror", truncate=4.0)
    np.testing.assert_allclose(middle_domain("gauss")(rgb).numpy(), low, atol=TOL)
    np.testing.assert_allclose(middle_domain("sharp")(rgb).numpy(), np.clip(2 * rgb.numpy() - low, 0, 1), atol=TOL)


def test_grey_and_identity(rgb):
    torch.testing.assert_close(middle_domain("grey")(rgb), rgb.mean(1, keepdim=True))
    assert middle_domain("rgb")(rgb) is rgb


def test_emboss_hand_example():
    # grey 8-bit image with one bright pixel (value 100) at (1,1); every other pixel 0
    x = torch.zeros(1, 3, 3, 3, dtype=torch.float64)
    x[0, :, 1, 1] = 100 / 255
    out = (middle_domain("emboss4d")(x)[0] * 255).round()
    # kernel k: centre +1, -1 at offset (dy,dx); out(i,j) = g(i,j) - g(i+dy, j+dx) + 128
    for k, (dy, dx) in enumerate([(1, -1), (1, 0), (1, 1), (0, 1)]):
        expected = torch.full((3, 3), 128.0, dtype=torch.float64)
        expected[1, 1] = 228
        expected[1 - dy, 1 - dx] = 28
        torch.testing.assert_close(out[k], expected)


def test_haar_dwt_block_formula():
    x = torch.tensor([[1.0, 2.0], [3.0, 5.0]]).view(1, 1, 2, 2)
    low, det = haar_dwt(x)
    assert low.item() == pytest.approx(11 / 2)
    assert det.flatten().tolist() == pytest.approx([(1 + 2 - 3 - 5) / 2, (1 - 2 + 3 - 5) / 2, (1 - 2 - 3 + 5) / 2])


def test_wavelet_bands_are_resized_bands(rgb):
    out = middle_domain("wav")(rgb)
    low = rgb
    for level in range(3):
        low, det = haar_dwt(low)
        band = torch.nn.functional.interpolate(det[:, :, 0], size=(20, 24), mode="bilinear", align_corners=False)
        torch.testing.assert_close(out[:, 3 + 3 * level : 6 + 3 * level], band)
    # a constant image c: the orthonormal low band gains ×2 per level (8c), every detail band is 0
    const = middle_domain("wav")(torch.full((1, 3, 16, 16), 0.1, dtype=torch.float64))
    torch.testing.assert_close(const[:, :3], torch.full((1, 3, 16, 16), 0.8, dtype=torch.float64))
    assert const[:, 3:].abs().max() == 0


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match=r"\(B,3,H,W\)"):
        middle_domain("grey")(torch.rand(1, 1, 8, 8))
    with pytest.raises(KeyError, match="unknown middle domain"):
        middle_domain("nope")


def test_merging_equals_closed_form_inverse_variance():
    g = torch.Generator().manual_seed(1)
    k, b, c, h, w = 4, 2, 3, 5, 6
    mu = torch.randn(k, b, c, h, w, generator=g, dtype=torch.float64)
    log_b = torch.randn(k, b, c, h, w, generator=g, dtype=torch.float64)
    mean, sigma = merge_laplace(mu, log_b)
    sig = math.sqrt(2) * (log_b.exp() + 1e-10)
    prec = (sig**-2).sum(2, keepdim=True)  # Σ_c σ^-2 per path and pixel
    wgt = prec / prec.sum(0)
    torch.testing.assert_close(mean, (wgt * mu).sum(0))
    torch.testing.assert_close(sigma, ((wgt**2) * sig**2).sum(0).sqrt())
    # C=1: the classic inverse-variance result σ̄² = 1 / Σ σ_i^-2
    _, s1 = merge_laplace(mu[:, :, :1], log_b[:, :, :1])
    torch.testing.assert_close(s1**-2, (sig[:, :, :1] ** -2).sum(0))


def test_brave_fusion_trains_head_only():
    torch.manual_seed(0)
    vit = BackboneSpec("test_vit", kwargs={"img_size": 32})  # timm's tiny test models (~0.3 M params)
    model = BraveFusion(["test_efficientnet", vit], out_channels=1, width=16)
    frozen = {n: p.clone() for n, p in model.backbones.named_parameters()}
    x, y = torch.rand(4, 3, 32, 32), torch.rand(4, 1, 32, 32)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    assert not model.backbones.training
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = (model(x) - y).abs().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(torch.equal(p, frozen[n]) for n, p in model.backbones.named_parameters())
    assert model.eval()(x).shape == (4, 1, 32, 32)


def test_brave_missing_weights_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.safetensors"):
        BraveFusion([f"test_efficientnet={tmp_path / 'missing.safetensors'}"], out_channels=1)


def _normal_batch(n=2, size=16):
    g = torch.Generator().manual_seed(1)
    normal = torch.nn.functional.normalize(torch.randn(n, 3, size, size, generator=g), dim=1)
    return {"rgb": torch.rand(n, 3, size, size, generator=g), "normal": normal}


def test_xde_nll_and_sigma_losses_decrease():
    torch.manual_seed(0)
    ens = XDEnsemble.build("normal", ["rgb", "sobel_edges"], downsample=1)
    frozen = frozen_copy(ens)  # f0 before the NLL steps, so μ has drifted from it (|μ - μ0| away from its kink)
    batch = _normal_batch()
    opt = torch.optim.Adam(ens.parameters(), lr=3e-3)
    nll = []
    for _ in range(5):
        opt.zero_grad()
        out = ens(batch)
        loss = sum(path_nll(_path(out, m), batch, "normal") for m in ("rgb", "sobel_edges"))
        loss.backward()
        opt.step()
        nll.append(loss.item())
    assert nll[-1] < nll[0]
    mean, sigma = ens.predict(batch["rgb"])
    assert mean.shape == sigma.shape == (2, 3, 16, 16) and (sigma > 0).all()

    rgb = perturb(batch["rgb"], torch.Generator().manual_seed(0))
    assert rgb.shape == batch["rgb"].shape and not torch.equal(rgb, batch["rgb"])
    opt = torch.optim.Adam(ens.parameters(), lr=1e-3)
    sig = []
    for _ in range(5):
        opt.zero_grad()
        loss, _ = sigma_loss(
            ens.paths["rgb"](batch), ens.paths["rgb"]({"rgb": rgb}), frozen.paths["rgb"]({"rgb": rgb})["normal"],
            batch, "normal",
        )  # fmt: skip
        loss.backward()
        opt.step()
        sig.append(loss.item())
    assert sig[-1] < sig[0]


def test_xde_consistency_stage_weights_and_loss_decrease():
    # hand example, g = (1, 2, 3, 4), G = 10: XTC gives c_i = (G - g_i) / (3G) = (.3, .2667, .2333, .2), the
    # NLL (direct) weight times n - 1 = 3 -> 0.9, then / 10 -> 0.09
    expected = torch.tensor([0.09, 0.8 / 3, 0.7 / 3, 0.2])
    torch.testing.assert_close(consistency_weights(torch.tensor([1.0, 2.0, 3.0, 4.0])), expected)

    torch.manual_seed(0)
    ens = XDEnsemble.build("normal", ["rgb", "grey"], downsample=1)
    g = {"reshading": create_model("unet_tiny", ["normal"], ["reshading"], downsample=1)}
    stage2 = ConsistencyTraining(ens, g)
    assert not any(p.requires_grad for p in stage2.perceptual.parameters())
    batch = _normal_batch()
    opt = torch.optim.Adam(ens.parameters(), lr=3e-3)
    middles, keys = ("rgb", "grey"), ("nll", "reshading")

    def objective(weights=None):
        """Stage-2 loss summed over paths, with the given per-path weights (default: freshly balanced)."""
        out = stage2(batch)
        parts = {m: stage2.path_loss(m, _path(out, m), batch) for m in middles}
        w = weights or {m: [logs[f"weight/{k}"] for k in keys] for m, (_, logs) in parts.items()}
        fixed = sum(float(wi) * float(parts[m][1][f"loss/{k}"]) for m in middles for wi, k in zip(w[m], keys))
        return sum(loss for loss, _ in parts.values()), fixed, w

    start_loss, start, w0 = objective()
    for _ in range(8):
        opt.zero_grad()
        objective()[0].backward()
        opt.step()
    # the balanced weights move every step, so compare the objective under the step-0 weights
    assert objective(w0)[1] < start == pytest.approx(start_loss.item(), rel=1e-5)
    # the logged NLL weight is 1/10 of XTC's balanced direct weight on the same gradient magnitudes
    out = stage2.ensemble.paths["grey"](batch)
    params = list(ens.paths["grey"].parameters())
    to_reshading = partial(stage2.perceptual.transfer, "normal", "reshading")
    terms = [path_nll(out, batch, "normal"), perceptual_l1(to_reshading, out["normal"], batch["normal"]).mean()]
    balanced = balance_weights(gradient_magnitudes(terms, params))
    _, logs = stage2.path_loss("grey", out, batch)
    assert float(logs["weight/nll"]) == pytest.approx(float(balanced[0]) / 10, rel=1e-5)
    assert float(logs["weight/reshading"]) == pytest.approx(float(balanced[1]), rel=1e-5)


@pytest.mark.parametrize("stage", ["nll", "consistency", "sigma"])
def test_xde_through_trainer_resumes_exactly(tmp_path, stage):
    g = torch.Generator().manual_seed(0)
    root = tmp_path / "data"
    for i in range(4):
        normal = torch.nn.functional.normalize(torch.randn(3, 16, 16, generator=g), dim=0)
        shading = torch.rand(1, 16, 16, generator=g)
        write_view(root, ViewKey("b", i, 0), {"rgb": torch.rand(3, 16, 16, generator=g), "normal": normal,
                                              "reshading": shading})  # fmt: skip

    def args(out, *extra, method=("--out-domains", "normal", "--method", "xde")):
        return ["--data-root", str(root), "--out-dir", str(out), "--model", "unet_tiny", "--model-args",
                "downsample=1", "--image-size", "16", "--batch-size", "2", "--workers", "0", "--log-every", "1",
                "--val-every", "100", "--val-fraction", "0.25", *method, *extra]  # fmt: skip

    middles = "middles=rgb,laplace_edges"
    xde = ["--method-args", f"stage={stage}", middles]
    if stage != "nll":
        main(args(tmp_path / "stage1", "--steps", "1", "--method-args", "stage=nll", middles))
        xde.append(f"init={tmp_path / 'stage1' / 'checkpoint.pt'}")
    if stage == "consistency":  # a frozen normal->reshading network for the perceptual term
        main(args(tmp_path / "n2r", "--steps", "1", method=("--in-domains", "normal", "--out-domains", "reshading")))
        xde.append(f"percep=reshading:{tmp_path / 'n2r' / 'checkpoint.pt'}")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    main(args(straight, *xde, "--steps", "3"))
    main(args(resumed, *xde, "--steps", "2"))
    main(args(resumed, *xde, "--steps", "3", "--resume"))

    def losses(out):
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}

    # CPU fp32 and the global RNG (perturbations) restored from the checkpoint: bitwise-equal losses
    assert losses(resumed) == losses(straight)
    ens = load_ensemble_state(XDEnsemble.build("normal", ["rgb", "laplace_edges"], 1), straight / "checkpoint.pt")
    assert ens.predict(torch.rand(1, 3, 16, 16))[1].shape == (1, 3, 16, 16)
