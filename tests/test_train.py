"""The trainer: CLI end to end on a tiny Taskonomy-format root, exact resume, method plug-ins, bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch

from robust.io import ViewKey, write_view
from robust.train import TrainConfig, main, parse_val_corruptions
from robust.training import Method, register_method
from robust.training.data import ResumableSampler

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest.one_thread

FOV = math.radians(60)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """6 random 32x32 views in 2 buildings: rgb, depth_euclidean, normal, point_info."""
    root = tmp_path_factory.mktemp("taskonomy")
    g = torch.Generator().manual_seed(0)
    for i in range(6):
        key = ViewKey(f"b{i % 2}", i, 0)
        sample = {
            "rgb": torch.rand(3, 32, 32, generator=g),
            "depth_euclidean": 1 + 4 * torch.rand(1, 32, 32, generator=g),
            "normal": torch.nn.functional.normalize(torch.randn(3, 32, 32, generator=g), dim=0),
        }
        write_view(root, key, sample, point_info={"field_of_view_rads": FOV, "resolution": 32})
    return root


def _args(root, out, *extra):
    return ["--data-root", str(root), "--out-dir", str(out), "--model", "unet_tiny", "--image-size", "32",
            "--batch-size", "2", "--workers", "0", "--log-every", "1", "--warmup", "10", *extra]  # fmt: skip


def _rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_cli_two_steps_writes_run_folder_and_validates_clean_and_corrupted(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    main(_args(data_root, out, "--out-domains", "depth_euclidean", "normal", "--steps", "2", "--val-every", "2",
               "--val-buildings", "b1", "--val-corruptions", "gaussian_noise:3,not_a_corruption:2"))  # fmt: skip
    assert "skipping validation corruption 'not_a_corruption'" in capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["out_domains"] == ["depth_euclidean", "normal"]
    rows = _rows(out)
    assert [r["step"] for r in rows if "train/loss" in r] == [1, 2]
    val = next(r for r in rows if "val/clean/normal/angle_mean" in r)
    assert 0 <= val["val/clean/normal/angle_mean"] <= 180
    assert "val/gaussian_noise_3/depth_euclidean/abs_rel" in val
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert state["step"] == 2 and {"model", "optimizer", "scheduler", "rng"} <= set(state)


def test_resume_gives_identical_next_step_loss(data_root, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    common = ("--out-domains", "normal", "--val-fraction", "0", "--val-every", "100", "--grad-accum", "2")
    main(_args(data_root, straight, *common, "--steps", "3"))
    main(_args(data_root, resumed, *common, "--steps", "2"))
    main(_args(data_root, resumed, *common, "--steps", "3", "--resume"))
    # warm-up lr depends only on the step, so steps 1-3 match; CPU fp32 is deterministic -> bitwise equal
    loss = {r["step"]: r["train/loss"] for r in _rows(straight) if "train/loss" in r}
    loss_resumed = {r["step"]: r["train/loss"] for r in _rows(resumed) if "train/loss" in r}
    assert loss_resumed == loss


class OneByOne(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)

    def forward(self, batch):
        return {"normal": self.conv(batch["rgb"])}


def test_registered_method_is_trained_and_validated(data_root, tmp_path):
    seen = []

    @register_method("test_plugin")
    def build(cfg):
        def loss_fn(batch, outputs):
            seen.append(tuple(outputs["normal"].shape))
            return (outputs["normal"] - batch["normal"]).abs().mean(), {"extra": torch.tensor(1.0)}

        return Method(OneByOne(), loss_fn, predict=lambda model, batch: {"normal": -model(batch)["normal"]})

    out = tmp_path / "run"
    main(_args(data_root, out, "--method", "test_plugin", "--steps", "1", "--val-fraction", "0.2"))
    rows = _rows(out)
    assert seen == [(2, 3, 32, 32)] and rows[0]["train/extra"] == 1.0
    assert "val/clean/normal/angle_mean" in rows[1]


def test_sampler_resumes_mid_epoch_and_shards():
    full = ResumableSampler(5, seed=3)
    stream = [j for _, j in zip(range(12), full)]
    assert sorted(j % 5 for j in stream[:5]) == list(range(5))  # each epoch is a permutation
    assert [j for _, j in zip(range(5), ResumableSampler(5, seed=3, start=7))] == stream[7:12]
    ranks = [[j for _, j in zip(range(3), ResumableSampler(5, 3, start=2, rank=r, world_size=2))] for r in (0, 1)]
    assert ranks[0] == stream[2:8:2] and ranks[1] == stream[3:9:2]


def test_bad_input_raises_clear_errors(data_root, tmp_path):
    with pytest.raises(KeyError, match="unknown domain 'normals2'"):
        main(_args(data_root, tmp_path / "a", "--out-domains", "normals2"))
    with pytest.raises(KeyError, match="unknown model 'unet9'"):
        main([*_args(data_root, tmp_path / "b", "--steps", "1"), "--model", "unet9"])
    with pytest.raises(KeyError, match="unknown method 'magic'"):
        main(_args(data_root, tmp_path / "c", "--method", "magic"))
    with pytest.raises(FileNotFoundError, match=r"checkpoint\.pt"):
        main(_args(data_root, tmp_path / "d", "--resume"))
    with pytest.raises(ValueError, match="name:severity"):
        parse_val_corruptions(["fog_3d"])
    with pytest.raises(ValueError, match="--data-root is required"):
        TrainConfig(out_dir="x")
