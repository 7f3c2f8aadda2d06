"""`python -m robust.corrupt`: layout, manifest, resume, batch independence, skipping, preview, errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import corruptions3d
from robust.corrupt import CorruptConfig, corrupt_dataset, parse_severities, select_corruptions
from robust.io import DataError, ViewKey, write_view

NAMES = "fog_3d,iso_noise"


def _dataset(root, n=3, size=32, depth=True):
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        view = {"rgb": torch.rand(3, size, size, generator=g)}
        if depth:
            view["depth_euclidean"] = 1 + 4 * torch.rand(1, size, size, generator=g)
        write_view(root, ViewKey("bldg", i, 0), view)
    return root


def _cfg(tmp_path, **kw) -> CorruptConfig:
    base = dict(data_root=str(tmp_path / "data"), out=str(tmp_path / "out"), corruptions=NAMES, severities="1-2")
    base.update(workers=0, batch_size=2)
    base.update(kw)
    return CorruptConfig(**base)


def test_layout_manifest_and_resume(tmp_path):
    _dataset(tmp_path / "data")
    m = corrupt_dataset(_cfg(tmp_path))
    files = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png"))
    assert len(files) == 2 * 2 * 3
    assert "fog_3d/2/bldg/point_1_view_0_domain_rgb.png" in files
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    tables = manifest["corruptions"]["fog_3d"]["severities"]
    assert tables and all(len(v) == 5 for v in tables.values())
    assert manifest["severities"] == [1, 2] and manifest["config"]["seed"] == 0
    assert m["written_this_run"] == 12 and manifest["images"] == 3
    # Re-running resumes: nothing is rewritten.
    mtimes = {f: (tmp_path / "out" / f).stat().st_mtime_ns for f in files}
    again = corrupt_dataset(_cfg(tmp_path))
    assert again["written_this_run"] == 0
    assert all((tmp_path / "out" / f).stat().st_mtime_ns == t for f, t in mtimes.items())


def test_outputs_do_not_depend_on_batch_size(tmp_path):
    _dataset(tmp_path / "data")
    corrupt_dataset(_cfg(tmp_path, out=str(tmp_path / "a"), batch_size=1))
    corrupt_dataset(_cfg(tmp_path, out=str(tmp_path / "b"), batch_size=3))
    for p in (tmp_path / "a").rglob("*.png"):
        q = tmp_path / "b" / p.relative_to(tmp_path / "a")
        assert np.array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(q))), p


def test_corruptions_needing_missing_geometry_are_skipped(tmp_path, capsys):
    _dataset(tmp_path / "data", depth=False)
    m = corrupt_dataset(_cfg(tmp_path))
    assert "fog_3d" in m["skipped"] and "depth_euclidean" in m["skipped"]["fog_3d"]
    assert list(m["corruptions"]) == ["iso_noise"]
    assert "skipping fog_3d" in capsys.readouterr().out


def test_folder_dataset_and_preview(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        Image.fromarray(np.full((40, 48, 3), 120, np.uint8)).save(tmp_path / "imgs" / cls / "a.jpg")
    cfg = _cfg(tmp_path, dataset="folder", data_root=str(tmp_path / "imgs"), corruptions="iso_noise")
    cfg.preview = True
    corrupt_dataset(cfg)
    assert (tmp_path / "out" / "iso_noise" / "2" / "dog" / "a.png").exists()
    assert Image.open(tmp_path / "out" / "preview.png").size[0] > 3 * 128


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"severities must lie in 1\.\.5"):
        parse_severities("0-5")
    with pytest.raises(ValueError, match="bad --severities"):
        parse_severities("high")
    with pytest.raises(KeyError, match="unknown corruption 'fogg'"):
        select_corruptions("fogg")
    assert set(select_corruptions("all")) == set(corruptions3d.list_corruptions())


def test_empty_root_is_reported(tmp_path):
    (tmp_path / "data").mkdir()
    with pytest.raises(DataError, match="empty root"):
        corrupt_dataset(_cfg(tmp_path))


def test_cli_help_and_run(tmp_path):
    help_text = subprocess.run(
        [sys.executable, "-m", "robust.corrupt", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--corruptions" in help_text and "3dcc" in help_text and "--resume" in help_text
    _dataset(tmp_path / "data", n=1)
    subprocess.run(
        [sys.executable, "-m", "robust.corrupt", "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "o"),
         "--corruptions", "iso_noise", "--severities", "3", "--workers", "0"],
        check=True, capture_output=True,
    )  # fmt: skip
    assert (tmp_path / "o" / "iso_noise" / "3" / "bldg" / "point_0_view_0_domain_rgb.png").exists()


def test_depth_model_predicts_depth_for_folder_data(tmp_path):
    """--depth-model: a trained rgb->depth checkpoint supplies depth, so 3D corruptions run on plain images."""
    from robust.train import main as train_main

    _dataset(tmp_path / "data", n=4)
    run = tmp_path / "run"
    train_main(["--data-root", str(tmp_path / "data"), "--out-dir", str(run), "--model", "unet_tiny",
                "--image-size", "32", "--batch-size", "2", "--workers", "0", "--steps", "2",
                "--out-domains", "depth_euclidean", "--val-every", "2"])  # fmt: skip
    (tmp_path / "imgs" / "cls").mkdir(parents=True)
    Image.fromarray(np.full((40, 48, 3), 200, np.uint8)).save(tmp_path / "imgs" / "cls" / "a.png")
    base = dict(dataset="folder", data_root=str(tmp_path / "imgs"), corruptions="fog_3d", severities="5")
    with pytest.raises(DataError, match="none of the requested corruptions can run"):
        corrupt_dataset(_cfg(tmp_path, out=str(tmp_path / "none"), **base))
    m = corrupt_dataset(_cfg(tmp_path, depth_model=str(run / "checkpoint.pt"), **base))
    assert list(m["corruptions"]) == ["fog_3d"] and not m["skipped"]
    out = np.asarray(Image.open(tmp_path / "out" / "fog_3d" / "5" / "cls" / "a.png"))
    assert out.shape == (40, 48, 3)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        corrupt_dataset(_cfg(tmp_path, depth_model=str(tmp_path / "missing.pt"), **base))
