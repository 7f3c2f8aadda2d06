"""Model registry, UNet and timm dense models: shapes per domain combo, parameter counts, errors, weights."""

from __future__ import annotations

import pytest
import torch

from robust.models import UNet, create_model, list_models, uncertainty_key

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest.one_thread


@pytest.mark.parametrize(
    ("in_domains", "out_domains", "expected"),
    [
        (["rgb"], ["normal"], {"normal": 3}),
        (["rgb"], ["depth_euclidean", "reshading"], {"depth_euclidean": 1, "reshading": 1}),
        (
            ["rgb", "depth_zbuffer"],
            ["principal_curvature", "segment_semantic"],
            {"principal_curvature": 2, "segment_semantic": 5},
        ),
        (["normal", "mask_valid"], ["relighting"], {"relighting": 10}),
    ],
)
def test_unet_output_shapes_per_domain(in_domains, out_domains, expected):
    model = create_model("unet_tiny", in_domains, out_domains, num_classes=5)
    chans = {"rgb": 3, "depth_zbuffer": 1, "normal": 3, "mask_valid": 1}
    batch = {d: torch.rand(2, chans[d], 16, 24) for d in in_domains}
    out = model(batch)
    assert {k: v.shape[1] for k, v in out.items()} == expected
    assert all(v.shape == (2, v.shape[1], 16, 24) for v in out.values())


def test_unet_reference_parameter_count():
    # The reference notes count 75.5 M parameters for d=6, 3->1 channels, and 1.18 M for d=3.
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert round(count(UNet(3, 1, downsample=6)) / 1e5) == 755
    assert round(count(UNet(3, 1, downsample=3)) / 1e4) == 118


def test_unet_blocks_are_addressable_for_film():
    net = UNet(3, 1, downsample=3)
    blocks = net.blocks()
    assert len(blocks) == 6
    x = torch.rand(1, 3, 16, 16)
    base = net(x)

    class Shift(torch.nn.Module):
        def forward(self, h):
            return h + 1.0

    blocks[0].modulate = Shift()
    assert not torch.allclose(net(x), base)


def test_uncertainty_head_outputs_log_scale():
    model = create_model("unet_tiny", ["rgb"], ["normal"], uncertainty=True)
    out = model(torch.rand(1, 3, 8, 8))
    assert out["normal"].shape == out[uncertainty_key("normal")].shape == (1, 3, 8, 8)


def test_registry_lists_and_rejects_bad_input():
    assert {"unet", "unet_tiny"} <= set(list_models())
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        create_model("nope")
    with pytest.raises(KeyError, match="unknown domain 'rgbx'"):
        create_model("unet_tiny", ["rgbx"], ["normal"])
    with pytest.raises(ValueError, match="num_classes"):
        create_model("unet_tiny", ["rgb"], ["segment_semantic"])
    with pytest.raises(ValueError, match="not a prediction target"):
        create_model("unet_tiny", ["rgb"], ["mask_valid"])
    model = create_model("unet_tiny", ["rgb", "depth_zbuffer"], ["normal"])
    with pytest.raises(KeyError, match="depth_zbuffer"):
        model({"rgb": torch.rand(1, 3, 8, 8)})
    with pytest.raises(ValueError, match="divisible by 4"):
        model(torch.rand(1, 4, 10, 8))


@pytest.mark.parametrize("backbone", ["resnet10t", "vit_tiny_patch16_224"])
def test_dense_timm_backbones_predict_at_input_size(backbone):
    model = create_model(
        "dense",
        ["rgb", "depth_zbuffer"],
        ["normal", "segment_semantic"],
        backbone=backbone,
        head_channels=16,
        num_classes=3,
    )
    out = model({"rgb": torch.rand(2, 3, 64, 48), "depth_zbuffer": torch.rand(2, 1, 64, 48)})
    assert out["normal"].shape == (2, 3, 64, 48)
    assert out["segment_semantic"].shape == (2, 3, 64, 48)


def test_dense_loads_backbone_weights_from_local_file(tmp_path):
    import timm

    torch.manual_seed(0)
    source = timm.create_model("resnet10t", pretrained=False)
    path = tmp_path / "resnet10t.pth"
    torch.save(source.state_dict(), path)
    model = create_model(
        "dense", ["rgb"], ["depth_zbuffer"], backbone="resnet10t", head_channels=16, pretrained_file=path
    )
    loaded = model.net.backbone.state_dict()
    assert torch.equal(loaded["conv1.0.weight"], source.state_dict()["conv1.0.weight"])
    assert torch.equal(loaded["layer4.0.conv2.weight"], source.state_dict()["layer4.0.conv2.weight"])
    with pytest.raises(FileNotFoundError, match=r"missing\.pth"):
        create_model("dense", ["rgb"], ["normal"], backbone="resnet10t", pretrained_file=tmp_path / "missing.pth")
    with pytest.raises(KeyError, match="unknown timm backbone 'resnet9000'"):
        create_model("dense", ["rgb"], ["normal"], backbone="resnet9000")
