"""XDE middle domains, Laplace NLL, inverse-variance merging and BRAVE fusion."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from ensembles import MIDDLE_DOMAINS, BackboneSpec, BraveFusion, merge_laplace, middle_domain
from ensembles.domains import haar_dwt

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
