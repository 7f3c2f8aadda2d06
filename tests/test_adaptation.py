"""Behaviour of adaptation/: RNA FiLM and training, TTO/TENT/norm baselines, meta-gradients, the CLI."""

from __future__ import annotations

import pytest
import torch

from adaptation import (
    FAST,
    RNA,
    TTO,
    TWO_PASS,
    RNATrainConfig,
    Signal,
    adapt,
    entropy,
    load_rna,
    make_method,
    save_rna,
    sparse_depth,
    train_rna,
)
from adaptation.film import SpatialFiLM
from adaptation.meta import meta_gradient
from adaptation.signals import controller_input
from robust.models import create_model

S = 32  # px; unet_tiny needs multiples of 4


def depth_batch(b: int = 3, size: int = S, dtype=torch.float32, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    depth = (1 + 4 * torch.rand(b, 1, size, size, generator=g)).to(dtype)
    return {
        "rgb": torch.rand(b, 3, size, size, generator=g).to(dtype),
        "depth_euclidean": depth,
        "mask_valid": torch.ones(b, 1, size, size, dtype=torch.bool),
    }


def depth_model(dtype=torch.float32, seed: int = 0):
    torch.manual_seed(seed)
    return create_model("unet_tiny", ["rgb"], ["depth_euclidean"]).to(dtype).eval()


def signal_for(batch: dict, fraction: float = 0.05, seed: int = 1) -> Signal:
    g = torch.Generator().manual_seed(seed)
    return sparse_depth(batch["depth_euclidean"], batch["mask_valid"], fraction, g)


@pytest.mark.parametrize("chain", ["fast", "two_pass"])
@pytest.mark.parametrize("mode", ["shift", "scale_shift"])
def test_film_with_zero_embedding_is_exactly_the_frozen_model(mode, chain):
    model, batch = depth_model(), depth_batch()
    rna = RNA(model, controller_downsample=2, film_mode=mode, **{"fast": FAST, "two_pass": TWO_PASS}[chain])
    for film in rna.films:  # FiLM convs start at zero; give them weights so that only z = 0 is tested
        torch.nn.init.normal_(film.conv.weight, std=0.1)
    with torch.no_grad():
        ref = model(batch)["depth_euclidean"]
        z = torch.zeros(3, rna.controller.out_channels, S // 4, S // 4)
        assert torch.equal(rna.conditioned(batch, z)["depth_euclidean"], ref)  # bias-free FiLM: x + 0 exactly
        z = torch.rand_like(z)
        assert not torch.allclose(rna.conditioned(batch, z)["depth_euclidean"], ref)
        assert torch.equal(model(batch)["depth_euclidean"], ref)  # FiLM is off outside conditioned()


def test_lowres_film_only_changes_where_the_feature_map_is_finer_than_the_embedding():
    torch.manual_seed(0)
    released, lowres = SpatialFiLM(8, 4), SpatialFiLM(8, 4, lowres=True)
    torch.nn.init.normal_(released.conv.weight)
    lowres.load_state_dict(released.state_dict())
    z = torch.rand(2, 8, 8, 8)
    with torch.no_grad():
        for size in (4, 8):  # coarser or equal: both resize z first, then convolve (the same ops)
            x = torch.rand(2, 4, size, size)
            assert torch.equal(lowres(x, z), released(x, z))
        x = torch.rand(2, 4, 32, 32)  # finer: conv then upsample; bilinear and conv commute only in the interior
        assert not torch.allclose(lowres(x, z), released(x, z))


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_feedback_pass_is_the_frozen_model_at_the_given_scale(scale):
    model, batch = depth_model(), depth_batch()
    signal = signal_for(batch)
    rna = RNA(model, controller_downsample=2, feedback_scale=scale)
    torch.nn.init.normal_(rna.films[-1].conv.weight)
    x = batch["rgb"]
    with torch.no_grad():
        pred = model(x)["depth_euclidean"]
        if scale < 1:
            small = model(torch.nn.functional.avg_pool2d(x, 2))["depth_euclidean"]
            pred = torch.nn.functional.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False)
        z = rna.controller(controller_input(pred, signal))
        expected = rna.conditioned(x, z)["depth_euclidean"]
        assert torch.equal(rna(batch, signal)["depth_euclidean"], expected)  # the same ops in the same order


def test_fast_rna_costs_less_and_rejects_bad_scales():
    model = depth_model()
    fast, two = RNA(model, controller_downsample=2), RNA(model, controller_downsample=2, **TWO_PASS)
    count = lambda m: sum(p.numel() for p in m.adapter_parameters())  # noqa: E731
    assert count(fast) < count(two) / 3  # width 8 vs 16: controller and FiLM convs ~4x (2x for the first layers)
    with pytest.raises(ValueError, match="feedback_scale"):
        RNA(model, feedback_scale=0.3)
    with pytest.raises(ValueError, match="controller width"):
        RNA(model, controller_width=12)


def test_film_on_timm_dense_model_fusion_blocks():
    torch.manual_seed(0)
    model = create_model("dense_resnet18", ["rgb"], ["depth_euclidean"], head_channels=32).eval()
    rna = RNA(model, controller_downsample=2)
    assert len(rna.films) == 4
    for film in rna.films:
        torch.nn.init.normal_(film.conv.weight, std=0.1)
    batch = depth_batch(2, 64)
    with torch.no_grad():
        ref = model(batch)["depth_euclidean"]
        z = torch.zeros(2, rna.controller.out_channels, 16, 16)
        assert torch.equal(rna.conditioned(batch, z)["depth_euclidean"], ref)
        assert not torch.allclose(rna.conditioned(batch, z + 1)["depth_euclidean"], ref)


def test_rna_training_never_changes_the_base_network(capsys):
    model, batch = depth_model(), depth_batch(2)
    rna = RNA(model, controller_downsample=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ctrl_before = {k: v.clone() for k, v in rna.controller.state_dict().items()}
    cfg = RNATrainConfig(steps=2, lr=1e-2, fraction=(0.01, 0.05), corruptions=["color_quant", "no_such_shift"])
    losses = train_rna(rna, [batch], cfg)
    assert "no_such_shift" in capsys.readouterr().out
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(not torch.equal(ctrl_before[k], v) for k, v in rna.controller.state_dict().items())
    model.net.head[-1].weight.requires_grad_(True)
    with pytest.raises(RuntimeError, match="frozen"):
        train_rna(rna, [batch], cfg)


def test_rna_checkpoint_round_trip(tmp_path):
    model, batch = depth_model(), depth_batch()
    rna = RNA(model, controller_downsample=2)
    torch.nn.init.normal_(rna.films[0].conv.weight)
    signal = signal_for(batch)
    path = save_rna(tmp_path / "rna.pt", rna)
    with torch.no_grad():
        loaded = load_rna(path, model)(batch, signal)["depth_euclidean"]
        assert torch.equal(loaded, rna(batch, signal)["depth_euclidean"])
    state = torch.load(path, weights_only=True)  # a checkpoint from before the fast chain: released hparams
    state["hparams"] = {k: v for k, v in state["hparams"].items() if k not in TWO_PASS}
    two = RNA(model, controller_downsample=2, **TWO_PASS)
    torch.save({**state, **two.adapter_state_dict(), "hparams": state["hparams"]}, tmp_path / "old.pt")
    assert load_rna(tmp_path / "old.pt", model).hparams == two.hparams


def test_tto_with_zero_steps_equals_no_adaptation():
    model, batch = depth_model(), depth_batch()
    signal = signal_for(batch)
    none = adapt(model, batch, signal, "none")["depth_euclidean"]
    tto = adapt(model, batch, signal, "tto", steps=0)["depth_euclidean"]
    # same weights; vmap runs the convs batched per image, so only float32 summation order differs
    torch.testing.assert_close(tto, none, rtol=1e-5, atol=1e-5)


def test_tto_lowers_the_sparse_loss_and_leaves_the_model_alone():
    model, batch = depth_model(), depth_batch()
    signal = signal_for(batch)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    before = adapt(model, batch, signal, "none")["depth_euclidean"]
    after = adapt(model, batch, signal, "tto", steps=5, lr=1e-2, params="all")["depth_euclidean"]
    from adaptation import signal_loss

    assert (signal_loss(after, signal) < signal_loss(before, signal)).all()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_per_sample_tto_is_batch_independent():
    model, batch = depth_model(torch.float64), depth_batch(3, dtype=torch.float64)
    signal = signal_for(batch)
    kw = dict(steps=3, lr=1e-2, params="norm")
    x = batch["rgb"]  # a tensor input keeps float64 (DomainModel casts dict inputs to float32)
    together = adapt(model, x, signal, "tto", **kw)["depth_euclidean"]
    alone = adapt(model, x[1:2], signal[1:2], "tto", **kw)["depth_euclidean"]
    torch.testing.assert_close(together[1:2], alone, rtol=1e-10, atol=1e-10)  # float64: rounding only


def test_episodic_resets_and_continual_carries_state():
    model, batch = depth_model(), depth_batch(2)
    signal = signal_for(batch)
    episodic = TTO(model, "episodic", steps=2, lr=1e-2)
    first = episodic(batch, signal)["depth_euclidean"]
    torch.testing.assert_close(episodic(batch, signal)["depth_euclidean"], first, rtol=0, atol=0)
    continual = make_method("tto", model, mode="continual", steps=2, lr=1e-2)
    a = continual(batch, signal)["depth_euclidean"]
    b = continual(batch, signal)["depth_euclidean"]
    assert not torch.allclose(a, b)  # the second batch starts from the first batch's weights
    continual.reset()
    torch.testing.assert_close(continual(batch, signal)["depth_euclidean"], a, rtol=0, atol=0)


def test_norm_adaptation_is_identity_for_groupnorm():
    model, batch = depth_model(), depth_batch()
    torch.testing.assert_close(adapt(model, batch, None, "norm"), adapt(model, batch, None, "none"), rtol=0, atol=0)


def test_tent_reduces_entropy_on_a_shifted_batch():
    torch.manual_seed(0)
    model = create_model("unet_tiny", ["rgb"], ["segment_semantic"], num_classes=4).eval()
    g = torch.Generator().manual_seed(0)
    shifted = {"rgb": (torch.rand(4, 3, S, S, generator=g) + 0.5 * torch.randn(4, 3, S, S, generator=g)).clamp(0, 1)}
    tent = make_method("tent", model, steps=1, lr=1e-2)
    h0 = entropy(adapt(model, shifted, None, "none")["segment_semantic"]).mean()
    for _ in range(5):
        tent(shifted)
    h1 = entropy(tent(shifted)["segment_semantic"]).mean()
    assert h1 < h0


def _meta_losses(batch):
    x, y = batch["rgb"], batch["depth_euclidean"]
    inner = lambda f: ((f(x)["depth_euclidean"] - y) ** 2).mean()  # noqa: E731
    outer = lambda f: ((f(x)["depth_euclidean"] - 2 * y) ** 2).mean()  # noqa: E731
    return inner, outer


def test_meta_gradient_matches_finite_differences_float64():
    model, batch = depth_model(torch.float64), depth_batch(2, 16, torch.float64)
    inner, outer = _meta_losses(batch)
    _, grads = meta_gradient(model, inner, outer, steps=2, lr=0.05)
    w = model.net.head[-1].weight
    eps = 1e-6
    for idx in [(0, 0, 0, 0), (0, 5, 0, 0)]:
        with torch.no_grad():
            w[idx] += eps
        up, _ = meta_gradient(model, inner, outer, steps=2, lr=0.05)
        with torch.no_grad():
            w[idx] -= 2 * eps
        down, _ = meta_gradient(model, inner, outer, steps=2, lr=0.05)
        with torch.no_grad():
            w[idx] += eps
        fd = (up - down) / (2 * eps)
        # central differences: O(eps^2) truncation + O(1e-16/eps) rounding, i.e. ~1e-10 relative
        torch.testing.assert_close(grads["net.head.3.weight"][idx], fd, rtol=1e-6, atol=1e-9)


def test_higher_backend_equals_torch_func():
    pytest.importorskip("higher")
    model, batch = depth_model(torch.float64), depth_batch(2, 16, torch.float64)
    inner, outer = _meta_losses(batch)
    o1, g1 = meta_gradient(model, inner, outer, steps=2, lr=0.05)
    o2, g2 = meta_gradient(model, inner, outer, steps=2, lr=0.05, backend="higher")
    torch.testing.assert_close(o1, o2, rtol=1e-12, atol=1e-14)
    for k in g1:
        torch.testing.assert_close(g1[k], g2[k], rtol=1e-10, atol=1e-12)  # same float64 ops, reordered at most


def test_bad_input_raises_clear_errors():
    model, batch = depth_model(), depth_batch()
    signal = signal_for(batch)
    with pytest.raises(ValueError, match="unknown adaptation method 'sgd'"):
        adapt(model, batch, signal, "sgd")
    with pytest.raises(ValueError, match=r"signal.*do not match"):
        adapt(model, batch, signal[:2], "tto", steps=1)
    with pytest.raises(ValueError, match="needs a signal"):
        adapt(model, batch, None, "tto")
    with pytest.raises(ValueError, match="not a class output"):
        make_method("tent", model)
    with pytest.raises(TypeError, match=r"needs an adaptation\.RNA"):
        adapt(model, batch, signal, "rna")
    with pytest.raises(ValueError, match="mask"):
        Signal(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mode must be"):
        make_method("none", model, mode="online")


def test_adapt_cli_on_the_real_sample(sample_root, tmp_path):
    from robust.adapt import main

    model = depth_model()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    save_rna(tmp_path / "rna.pt", RNA(model, controller_downsample=2))
    out = tmp_path / "out"
    args = ["--data-root", str(sample_root), "--out", str(out), "--weights", str(tmp_path / "w.pt"), "--size", "32"]
    args += ["--model", "unet_tiny", "--rna", str(tmp_path / "rna.pt"), "--tto-steps", "1", "--fraction", "0.05"]
    main([*args, "--methods", "none", "tto", "rna", "--corruption", "color_quant", "--severity", "5"])
    table = (out / "results.csv").read_text().splitlines()
    assert table[0].startswith("shift,method") and len(table) == 4
    assert len(list((out / "predictions" / "rna").rglob("*.png"))) == 1
    with pytest.raises(FileNotFoundError, match="--weights"):
        main([*args[:6], "--weights", str(tmp_path / "missing.pt")])
