"""XTC: gradient balancing, win-rate selection, task graph, perceptual loss, energy, trainer plug-in."""

from __future__ import annotations

import json
import math

import pytest
import torch

from consistency import (
    XTC,
    ConsistencyEnergy,
    EnergyStats,
    TaskGraph,
    WinRateSelector,
    balance_weights,
    consistency_energy,
    gradient_magnitudes,
    path_distances,
    raw_energy,
)
from robust.io import ViewKey, write_view
from robust.models import create_model
from robust.train import main


def test_balance_weights_hand_example():
    # g = (1,2,3,4): G = 10, n = 4, c_i = (G - g_i) / (3·G) = (9,8,7,6)/30; c_direct ×= n-1 = 3
    c = balance_weights(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    torch.testing.assert_close(c, torch.tensor([27, 8, 7, 6]) / 30)
    # two terms: each weight is the other's share of the gradient
    torch.testing.assert_close(balance_weights(torch.tensor([3.0, 1.0])), torch.tensor([0.25, 0.75]))
    with pytest.raises(ValueError, match="zero gradient"):
        balance_weights(torch.zeros(3))


def test_gradient_magnitudes_hand_example():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    # dL1/dw = (3, 0) -> mean |.| = 1.5; dL2/dw = (2w0, 2w1)·... = (2, 4) -> 3
    g = gradient_magnitudes([3 * w[0], (w**2).sum()], [w])
    torch.testing.assert_close(g, torch.tensor([1.5, 3.0]))


def test_win_rate_selection_top_k_after_full_statistics():
    sel = WinRateSelector(["a", "b", "c"], k=2, seed=0)
    assert len(sel.chosen) == 2
    sel.update("a", torch.tensor([1.0, 1.0]), torch.tensor([0.0, 0.0]))  # wins 2/2
    sel.update("b", torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5]))  # wins 1/2
    state = sel.state_dict()
    assert sorted(sel.select()) == sorted(sel.chosen)  # 'c' has no statistics yet: random choice
    sel.load_state_dict(state)
    sel.update("c", torch.tensor([0.0, 0.0]), torch.tensor([1.0, 1.0]))  # wins 0/2
    assert sel.win_rates() == {"a": 1.0, "b": 0.5, "c": 0.0}
    assert sel.select() == ["a", "b"]
    assert sel.win_rates() == {}  # statistics reset each "epoch"


def test_energy_standardisation_hand_example_and_zero_when_paths_agree():
    direct = torch.zeros(4, 1, 2, 2)
    offsets = torch.tensor([1.0, 2.0, 3.0, 6.0]).view(4, 1, 1, 1)
    d = path_distances(direct, {"a": direct + offsets, "b": direct - 2 * offsets})
    torch.testing.assert_close(d["a"], torch.tensor([1.0, 2.0, 3.0, 6.0]))
    # path a: mean 3, mean absolute deviation (2+1+0+3)/4 = 1.5 -> z = (-4/3, -2/3, 0, 2); path b is 2× a,
    # so its standardised distances are identical, and the energy (their mean) equals them
    torch.testing.assert_close(consistency_energy(d), torch.tensor([-4 / 3, -2 / 3, 0.0, 2.0]))
    stats = EnergyStats.fit(d)
    agree = path_distances(direct, {"a": direct, "b": direct})
    assert raw_energy(agree).abs().max() == 0
    # agreement is the lowest energy any image can get under the fitted statistics
    assert (consistency_energy(agree, stats) < consistency_energy(d, stats).min()).all()


def test_task_graph_runs_paths_and_names_missing_edges():
    torch.manual_seed(0)
    a = create_model("unet_tiny", ["rgb"], ["depth_zbuffer"])
    b = create_model("unet_tiny", ["depth_zbuffer"], ["normal"])
    graph = TaskGraph({("rgb", "depth_zbuffer"): a, ("depth_zbuffer", "normal"): b})
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        expected = b({"depth_zbuffer": a({"rgb": x})["depth_zbuffer"]})["normal"]
    torch.testing.assert_close(graph.run(("rgb", "depth_zbuffer", "normal"), x), expected)
    assert not any(p.requires_grad for p in graph.parameters())
    graph.train()
    assert not a.training  # edges stay frozen functions
    with pytest.raises(KeyError, match="rgb->normal"):
        graph.run(("rgb", "normal"), x)


def test_consistency_energy_module_is_zero_mean_on_its_reference_set():
    torch.manual_seed(0)
    mk = create_model
    graph = TaskGraph(
        {
            ("rgb", "depth_zbuffer"): mk("unet_tiny", ["rgb"], ["depth_zbuffer"]),
            ("depth_zbuffer", "normal"): mk("unet_tiny", ["depth_zbuffer"], ["normal"]),
            ("rgb", "reshading"): mk("unet_tiny", ["rgb"], ["reshading"]),
            ("reshading", "normal"): mk("unet_tiny", ["reshading"], ["normal"]),
        }
    )
    energy = ConsistencyEnergy(mk("unet_tiny", ["rgb"], ["normal"]), "normal", graph, ["depth_zbuffer", "reshading"])
    ref = torch.rand(6, 3, 16, 16)
    energy.fit([ref[:3], ref[3:]])
    # standardised per path by its own mean: the mean over the reference set is 0 (float64 stats, fp32 nets)
    assert energy(ref).mean().item() == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(KeyError, match="rgb->keypoints2d"):
        ConsistencyEnergy(energy.direct, "normal", graph, ["keypoints2d"])


def _batch(n=4, size=16):
    g = torch.Generator().manual_seed(1)
    normal = torch.nn.functional.normalize(torch.randn(n, 3, size, size, generator=g), dim=1)
    return {"rgb": torch.rand(n, 3, size, size, generator=g), "normal": normal}


def test_xtc_loss_decreases_and_balances_each_step():
    torch.manual_seed(0)
    model = create_model("unet_tiny", ["rgb"], ["normal"], downsample=1)
    percep = {z: create_model("unet_tiny", ["normal"], [z], downsample=1) for z in ("depth_zbuffer", "reshading")}
    xtc = XTC(model, "normal", percep)
    batch = _batch(n=2)
    opt = torch.optim.Adam([p for p in xtc.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss, logs = xtc.loss(batch, xtc(batch))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    # 3 terms: the c_i = (G-g_i)/(2G) sum to 1 before the direct weight is doubled -> total 1 + c_direct
    w = [float(logs[f"weight/{t}"]) for t in ("direct", "depth_zbuffer", "reshading")]
    assert sum(w) == pytest.approx(1 + w[0] / 2, rel=1e-5)
    assert all(not p.requires_grad for p in xtc.perceptual.parameters())


def test_xtc_balance_every_reuses_weights_between_updates(monkeypatch):
    import consistency.xtc as xtc_module

    torch.manual_seed(0)
    model = create_model("unet_tiny", ["rgb"], ["normal"], downsample=1)
    percep = {"reshading": create_model("unet_tiny", ["normal"], ["reshading"], downsample=1)}
    xtc = XTC(model, "normal", percep, balance_every=3)
    calls = []
    monkeypatch.setattr(xtc_module, "gradient_magnitudes", lambda m, p: calls.append(1) or gradient_magnitudes(m, p))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    weights = []
    for _ in range(4):
        opt.zero_grad()
        loss, logs = xtc.loss(_batch(n=2), xtc(_batch(n=2)))
        loss.backward()
        opt.step()
        weights.append(float(logs["weight/direct"]))
    # measured at steps 0 and 3 only; steps 1-2 reuse step 0's weights exactly
    assert len(calls) == 2 and weights[0] == weights[1] == weights[2] != weights[3]
    with pytest.raises(ValueError, match="balance_every"):
        XTC(model, "normal", percep, balance_every=0)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """6 random 32×32 views: rgb, depth_euclidean, normal."""
    root = tmp_path_factory.mktemp("taskonomy")
    g = torch.Generator().manual_seed(0)
    for i in range(6):
        sample = {
            "rgb": torch.rand(3, 32, 32, generator=g),
            "depth_euclidean": 1 + 4 * torch.rand(1, 32, 32, generator=g),
            "normal": torch.nn.functional.normalize(torch.randn(3, 32, 32, generator=g), dim=0),
        }
        write_view(root, ViewKey(f"b{i % 2}", i, 0), sample, point_info={"field_of_view_rads": math.pi / 3})
    return root


def _args(root, out, *extra):
    return ["--data-root", str(root), "--out-dir", str(out), "--model", "unet_tiny", "--image-size", "32",
            "--batch-size", "2", "--workers", "0", "--log-every", "1", "--warmup", "10", "--val-every", "100",
            "--val-fraction", "0.2", *extra]  # fmt: skip


def _losses(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def test_xtc_through_trainer_resumes_exactly(data_root, tmp_path):
    percep = tmp_path / "n2d"
    main(_args(data_root, percep, "--in-domains", "normal", "--out-domains", "depth_euclidean", "--steps", "1"))
    xtc = ("--out-domains", "normal", "--method", "xtc", "--method-args",
           f"percep=depth_euclidean:{percep / 'checkpoint.pt'}", "select_every=2")  # fmt: skip
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    main(_args(data_root, straight, *xtc, "--steps", "3"))
    main(_args(data_root, resumed, *xtc, "--steps", "2"))
    main(_args(data_root, resumed, *xtc, "--steps", "3", "--resume"))
    # CPU fp32 is deterministic and the checkpoint carries the win-rate state: bitwise-equal losses
    assert _losses(resumed) == _losses(straight)
    with pytest.raises(ValueError, match="percep"):
        main(_args(data_root, tmp_path / "bad", "--out-domains", "normal", "--method", "xtc", "--steps", "1"))
