"""Taskonomy data layer: codecs, layouts, pairing, resizing, intrinsics, bad input, atomic writes."""

from __future__ import annotations

import io
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robust.io import (
    DataError,
    ResizeCrop,
    TaskonomyDataset,
    TaskonomyIndex,
    TaskonomyLoader,
    ViewKey,
    collate_views,
    decode_batch,
    decode_values,
    domain_path,
    read_png,
    read_split,
    write_png,
    write_view,
)
from robust.io.atomic import atomic_write_bytes
from robust.io.png import encode_png
from robust.tasks import IGNORE_INDEX, INVALID_DEPTH, get_domain, list_domains, mask_from_depth

SAMPLE_DOMAINS = ["rgb", "depth_euclidean", "reshading", "relighting"]


def _random_view(h: int = 24, w: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    """A view with every on-disk domain, already quantised to its encoding."""
    g = torch.Generator().manual_seed(seed)
    raw = {
        "rgb": torch.randint(0, 256, (3, h, w), generator=g) / 255.0,
        "depth_euclidean": torch.randint(1, 65536, (1, h, w), generator=g) / 512.0,
        "depth_zbuffer": torch.randint(1, 65536, (1, h, w), generator=g) / 512.0,
        "normal": torch.randint(0, 256, (3, h, w), generator=g) / 127.5 - 1.0,
        "reshading": torch.randint(0, 256, (1, h, w), generator=g) / 255.0,
        "relighting": torch.randint(0, 256, (10, h, w), generator=g) / 255.0,
        "segment_semantic": torch.randint(1, 18, (h, w), generator=g),
        "edge_texture": torch.randint(0, 65536, (1, h, w), generator=g) / 65535.0,
        "edge_occlusion": torch.randint(0, 65536, (1, h, w), generator=g) / 65535.0,
        "principal_curvature": torch.randint(0, 256, (2, h, w), generator=g) / 255.0,
        "keypoints2d": torch.randint(0, 65536, (1, h, w), generator=g) / 65535.0,
        "keypoints3d": torch.randint(0, 65536, (1, h, w), generator=g) / 65535.0,
        "mask_valid": torch.rand((1, h, w), generator=g) > 0.5,
    }
    raw["segment_semantic"][0, :3] = IGNORE_INDEX
    return raw


def test_registry_lists_every_contract_domain():
    expected = {
        "rgb", "depth_euclidean", "depth_zbuffer", "mask_valid", "normal", "reshading", "relighting",
        "segment_semantic", "edge_texture", "edge_occlusion", "principal_curvature", "keypoints2d",
        "keypoints3d", "intrinsics",
    }  # fmt: skip
    assert set(list_domains()) == expected
    assert get_domain("segmentsemantic").name == "segment_semantic"
    with pytest.raises(KeyError, match="unknown domain 'nope'"):
        get_domain("nope")


def test_real_sample_round_trips_bit_exactly(sample_root, tmp_path):
    """decode -> encode reproduces the original PNG arrays exactly, for every domain of the real view."""
    index = TaskonomyIndex.scan(sample_root)
    (key,) = index.files
    for name in SAMPLE_DOMAINS:
        d = get_domain(name)
        paths = index.files[key][name]
        paths = [paths[k] for k in sorted(paths)] if isinstance(paths, dict) else [paths]
        for p in paths:
            raw = read_png(p)
            t = d.decode(raw)
            if d.per_light:
                t = t[:1]
            again = d.encode(t)
            assert again.dtype == raw.dtype
            np.testing.assert_array_equal(again, raw, err_msg=str(p))
            np.testing.assert_array_equal(d.decode(again).numpy(), t.numpy())
    # The written copy reads back to the same tensors.
    ds = TaskonomyDataset(sample_root, SAMPLE_DOMAINS)
    s = ds[0]
    write_view(tmp_path, s["key"], {k: s[k] for k in SAMPLE_DOMAINS})
    s2 = TaskonomyDataset(tmp_path, SAMPLE_DOMAINS)[0]
    for name in SAMPLE_DOMAINS:
        assert torch.equal(s[name], s2[name]), name


def test_sample_depth_is_metres_and_invalid_is_masked(sample_root):
    s = TaskonomyDataset(sample_root, ["depth_euclidean", "mask_valid"])[0]
    depth, mask = s["depth_euclidean"], s["mask_valid"]
    assert depth.dtype == torch.float32 and mask.dtype == torch.bool
    valid = depth[mask]
    # Reference notes: raw min 265 and median 853 (units of 1/512 m), one pixel at 65535.
    assert valid.min().item() == pytest.approx(265 / 512)
    assert valid.median().item() == pytest.approx(853 / 512, abs=2 / 512)
    assert (~mask).sum().item() >= 1
    assert torch.all(depth[~mask] == INVALID_DEPTH)


def test_every_domain_round_trips_through_files(tmp_path):
    view = _random_view()
    key = ViewKey("b1", 3, 7)
    write_view(tmp_path, key, view)
    names = [n for n in view if n != "mask_valid"] + ["mask_valid"]
    s = TaskonomyDataset(tmp_path, names)[0]
    for n in names:
        assert torch.equal(s[n], view[n]), n
    assert domain_path(tmp_path, key, "segment_semantic").name == "point_3_view_7_domain_segmentsemantic.png"


@pytest.mark.parametrize(
    "layout",
    ["flat", "building", "archive", "omnidata"],
)
def test_layouts_pair_views_by_identity_not_sort_order(tmp_path, layout):
    """Views pair by (building, point, view) in every supported layout, even when listings disagree."""
    views = {ViewKey("bA", p, v): _random_view(8, 8, seed=10 * p + v) for p in (1, 10, 2) for v in (0, 1)}
    for key, view in views.items():
        for name in ("rgb", "depth_euclidean"):
            src = domain_path(tmp_path / "staging", key, name)
            dst = {
                "flat": tmp_path / "root" / name / src.name,
                "building": tmp_path / "root" / key.building / name / src.name,
                "archive": tmp_path / "root" / f"{key.building}_{name}" / name / src.name,
                "omnidata": tmp_path / "root" / name / "taskonomy" / key.building / src.name,
            }[layout]
            write_view(tmp_path / "staging", key, {name: view[name]})
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(src, dst)
    # Drop the first rgb so that sorted listings of the two folders no longer line up.
    first_rgb = min((tmp_path / "root").rglob("*_domain_rgb.png"))
    first_rgb.unlink()
    ds = TaskonomyDataset(tmp_path / "root", ["rgb", "depth_euclidean"], strict=False)
    expected_building = {"flat": "", "building": "bA", "archive": "bA", "omnidata": "taskonomy/bA"}[layout]
    assert len(ds) == len(views) - 1
    for i in range(len(ds)):
        s = ds[i]
        key = s["key"]
        assert key.building == expected_building
        original = views[ViewKey("bA", key.point, key.view)]
        assert torch.equal(s["rgb"], original["rgb"])
        assert torch.equal(s["depth_euclidean"], original["depth_euclidean"])


def test_missing_domain_names_the_file(tmp_path):
    write_view(tmp_path, ViewKey("", 0, 0), {"rgb": torch.zeros(3, 4, 4), "depth_euclidean": torch.ones(1, 4, 4)})
    write_view(tmp_path, ViewKey("", 0, 1), {"rgb": torch.zeros(3, 4, 4)})
    with pytest.raises(DataError, match=r"point_0_view_1_domain_rgb\.png: missing domain 'depth_euclidean'"):
        TaskonomyDataset(tmp_path, ["rgb", "depth_euclidean"])
    assert len(TaskonomyDataset(tmp_path, ["rgb", "depth_euclidean"], strict=False)) == 1


def test_wrong_bit_depth_is_rejected(tmp_path):
    # An 8-bit depth PNG is the classic mistake (omnidata issue #32).
    path = tmp_path / "depth_euclidean" / "point_0_view_0_domain_depth_euclidean.png"
    write_png(path, np.full((4, 4), 200, np.uint8))
    ds = TaskonomyDataset(tmp_path, ["depth_euclidean"])
    with pytest.raises(DataError, match=r"domain_depth_euclidean\.png: wrong bit depth: expected 16-bit, found 8-bit"):
        ds[0]


def test_mismatched_sizes_are_rejected(tmp_path):
    key = ViewKey("", 0, 0)
    write_view(tmp_path, key, {"rgb": torch.zeros(3, 4, 4), "depth_euclidean": torch.ones(1, 5, 4)})
    with pytest.raises(DataError, match=r"mismatched sizes for view .*rgb \(4, 4\), depth_euclidean \(5, 4\)"):
        TaskonomyDataset(tmp_path, ["rgb", "depth_euclidean"])[0]


def test_unreadable_png_and_empty_root(tmp_path):
    bad = tmp_path / "rgb" / "point_0_view_0_domain_rgb.png"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match=r"domain_rgb\.png: unreadable PNG"):
        TaskonomyDataset(tmp_path, ["rgb"])[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty root"):
        TaskonomyDataset(empty, ["rgb"])
    with pytest.raises(DataError, match="does not exist"):
        TaskonomyDataset(tmp_path / "nowhere", ["rgb"])


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "out" / "file.png"

    def boom(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, b"x" * 1000)
    assert list(target.parent.iterdir()) == []


def test_resize_crop_is_consistent_and_follows_intrinsics(tmp_path):
    h, w = 40, 60
    view = _random_view(h, w)
    key = ViewKey("", 0, 0)
    info = {"field_of_view_rads": math.radians(60), "resolution": w}
    write_view(tmp_path, key, {k: view[k] for k in ("rgb", "depth_euclidean", "segment_semantic")}, point_info=info)
    names = ["rgb", "depth_euclidean", "segment_semantic", "mask_valid", "intrinsics"]
    full = TaskonomyDataset(tmp_path, names)[0]
    k_full = full["intrinsics"]
    assert k_full[0, 0].item() == pytest.approx((w / 2) / math.tan(math.radians(30)), rel=1e-6)
    s = TaskonomyDataset(tmp_path, names, transform=ResizeCrop(size=20, crop=16))[0]
    assert s["rgb"].shape == (3, 16, 16) and s["segment_semantic"].shape == (16, 16)
    assert s["depth_euclidean"].shape == (1, 16, 16) and s["mask_valid"].shape == (1, 16, 16)
    # Nearest resizing keeps labels and depth values from the original sets (no blending).
    assert set(s["segment_semantic"].unique().tolist()) <= set(view["segment_semantic"].unique().tolist())
    assert set(s["depth_euclidean"].unique().tolist()) <= set(view["depth_euclidean"].unique().tolist())
    # Scale 0.5, then a centre crop from (20, 30) to 16: x0 = 7, y0 = 2.
    k = s["intrinsics"]
    assert k[0, 0].item() == pytest.approx(k_full[0, 0].item() * 0.5)
    assert k[0, 2].item() == pytest.approx(w / 2 * 0.5 - 7)
    assert k[1, 2].item() == pytest.approx(h / 2 * 0.5 - 2)
    batch = collate_views([s, s])
    assert batch["rgb"].shape == (2, 3, 16, 16) and batch["key"] == [key, key]


def test_random_crop_is_reproducible(tmp_path):
    write_view(tmp_path, ViewKey("", 0, 0), {"rgb": _random_view(32, 32)["rgb"]})
    a = TaskonomyDataset(tmp_path, ["rgb"], transform=ResizeCrop(crop=8, mode="random", seed=3))[0]["rgb"]
    b = TaskonomyDataset(tmp_path, ["rgb"], transform=ResizeCrop(crop=8, mode="random", seed=3))[0]["rgb"]
    assert torch.equal(a, b)


def test_split_csv_with_cr_line_endings(tmp_path):
    csv = tmp_path / "split.csv"
    csv.write_bytes(b"id,train,val,test\rallensville,1,0,0\rbeechwood,0,1,0\r")
    assert read_split(csv, "train") == ["allensville"]
    assert read_split(csv, "val") == ["beechwood"]
    with pytest.raises(DataError, match="no column 'dev'"):
        read_split(csv, "dev")
    for b in ("allensville", "beechwood"):
        write_view(tmp_path / "root", ViewKey(b, 0, 0), {"rgb": torch.zeros(3, 4, 4)})
    ds = TaskonomyDataset(tmp_path / "root", ["rgb"], split_csv=csv, split="val")
    assert [k.building for k in ds.keys] == ["beechwood"]


def test_mask_from_depth_and_16bit_reading(tmp_path):
    p = tmp_path / "d.png"
    Image.fromarray(np.array([[0, 1, 65534, 65535]], np.uint16)).save(p)
    a = read_png(p, 16)
    assert a.dtype == np.uint16 and a.tolist() == [[0, 1, 65534, 65535]]
    depth = get_domain("depth_euclidean").decode(a)
    assert mask_from_depth(depth).tolist() == [[[False, True, True, False]]]


def test_point_info_missing_field_is_reported(tmp_path):
    key = ViewKey("", 0, 0)
    write_view(tmp_path, key, {"rgb": torch.zeros(3, 4, 4)}, point_info={"resolution": 4})
    with pytest.raises(DataError, match=r"fixatedpose\.json: point_info lacks field 'field_of_view_rads'"):
        TaskonomyDataset(tmp_path, ["rgb", "intrinsics"])[0]
    info = json.loads(domain_path(tmp_path, key, "point_info").read_text())
    assert info == {"resolution": 4}


def test_written_files_have_taskonomy_names(tmp_path):
    write_view(tmp_path, ViewKey("b", 2, 5), {"relighting": torch.zeros(10, 4, 4)})
    names = sorted(p.name for p in Path(tmp_path, "b", "relighting").iterdir())
    assert names == sorted(f"point_2_view_5_domain_relighting_{k}.png" for k in range(10))


def _assert_same_batch(got: dict, ref: dict) -> None:
    assert got.keys() == ref.keys()
    assert got["key"] == ref["key"]
    for name in ref:
        if name != "key":
            assert got[name].dtype == ref[name].dtype, name
            # Bit-identical: both sides apply the registry's decode to the same integers (exact lookups vs divisions).
            assert torch.equal(got[name], ref[name]), name


@pytest.mark.parametrize(
    "transform",
    [None, ResizeCrop(crop=200), ResizeCrop(size=96, crop=64, mode="random", seed=2)],
    ids=["native", "crop", "resize+random_crop"],
)
def test_loader_equals_float_path_on_sample(sample_root, transform):
    """Raw uint8/uint16 views decoded per batch equal the per-sample float views, for every sample domain."""
    ds = TaskonomyDataset(sample_root, [*SAMPLE_DOMAINS, "mask_valid"], transform=transform)
    (got,) = list(TaskonomyLoader(torch.utils.data.Subset(ds, [0]), batch_size=1, num_workers=0))
    _assert_same_batch(got, collate_views([ds[0]]))


@pytest.mark.parametrize("mask_on_disk", [True, False])
def test_loader_equals_float_path_for_every_domain(tmp_path, mask_on_disk):
    """Every on-disk domain, 3 views in batches of 2 through a worker process, native size and resized."""
    for i in range(3):
        view = _random_view(seed=i)
        view["depth_euclidean"][0, 0, :2] = torch.tensor([0.0, INVALID_DEPTH])  # both invalid codes
        if not mask_on_disk:
            del view["mask_valid"]
        write_view(tmp_path, ViewKey("b", i, 0), view, point_info={"field_of_view_rads": 1.0, "resolution": 32})
    names = [n for n in list_domains() if n != "mask_valid"] + ["mask_valid"]

    def flip(sample, _index):  # any other transform sees canonical (decoded) tensors, as before
        return {k: v.flip(-1) if k != "intrinsics" else v for k, v in sample.items()}

    for transform in (None, ResizeCrop(size=16, crop=12, mode="random", seed=1), flip):
        ds = TaskonomyDataset(tmp_path, names, transform=transform)
        raw = ds.as_raw()[0]
        if transform is None:
            assert raw["rgb"].dtype == torch.uint8 and raw["depth_euclidean"].dtype == torch.uint16
        elif transform is flip:
            assert raw["segment_semantic"].dtype == torch.int64
        else:  # bilinear resizing is not exact on integers: those domains are decoded in the worker.
            assert raw["rgb"].dtype == torch.float32 and raw["segment_semantic"].dtype == torch.uint8
        batches = list(TaskonomyLoader(ds, batch_size=2, num_workers=1))
        assert [len(b["key"]) for b in batches] == [2, 1]
        for b, start in zip(batches, (0, 2)):
            _assert_same_batch(b, collate_views([ds[i] for i in range(start, min(start + 2, len(ds)))]))


def test_decode_values_and_loader_reject_wrong_input(tmp_path):
    with pytest.raises(TypeError, match=r"rgb: expected on-disk uint8/uint16 values, got torch\.float32"):
        decode_values(torch.zeros(3, 2, 2), "rgb")
    with pytest.raises(TypeError, match="needs a TaskonomyDataset"):
        TaskonomyLoader([1, 2, 3])
    # Canonical tensors and keys pass through decode_batch untouched.
    batch = {"key": ["k"], "intrinsics": torch.eye(3)[None], "rgb": torch.full((1, 3, 1, 1), 255, dtype=torch.uint8)}
    out = decode_batch(batch)
    assert out["key"] == ["k"] and out["intrinsics"] is batch["intrinsics"] and out["rgb"].eq(1.0).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_loader_on_cuda_equals_float_path(sample_root):
    ds = TaskonomyDataset(sample_root, [*SAMPLE_DOMAINS, "mask_valid"], transform=ResizeCrop(crop=256))
    (got,) = list(TaskonomyLoader(ds, batch_size=1, num_workers=1, device="cuda"))
    assert got["rgb"].is_cuda
    on_cpu = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in got.items()}
    _assert_same_batch(on_cpu, collate_views([ds[0]]))


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "P", "1", "I;16"])
def test_read_png_matches_pillow_for_every_colour_type(tmp_path, mode):
    """Gray stays (H,W), colour is RGB (H,W,3) with alpha dropped, palettes expand, 1-bit becomes 0/255."""
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (5, 7, 4), dtype=np.uint8)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65536, (5, 7)).astype(np.uint16))
    else:
        img = Image.fromarray(rgba).convert(mode)
    path = tmp_path / "x.png"
    img.save(path)
    expected = np.asarray(img if mode in ("L", "RGB", "I;16") else img.convert("RGB" if mode in ("RGBA", "P") else "L"))
    got = read_png(path, 16 if mode == "I;16" else 8)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def test_device_lookup_tables_equal_the_registry_decode():
    """The table path used off the CPU (checked here on CPU tensors) decodes every on-disk value exactly."""
    from robust.io.taskonomy import _decode_by_table

    for name in list_domains(on_disk=True):
        codec = get_domain(name).codec
        values = np.arange(2**codec.bit_depth, dtype=np.uint8 if codec.bit_depth == 8 else np.uint16).reshape(-1, 2)
        got = _decode_by_table(torch.from_numpy(values), name)
        assert torch.equal(got, codec.decode(values)), name


@pytest.mark.parametrize("shape,dtype", [((6, 9, 3), np.uint8), ((6, 9), np.uint8), ((6, 9), np.uint16)])
def test_encode_png_is_lossless_for_any_decoder(shape, dtype):
    """Our encoder's bytes decode to the same values (RGB order, full 16-bit range) in Pillow as in read_png."""
    rng = np.random.default_rng(1)
    a = rng.integers(0, np.iinfo(dtype).max + 1, shape).astype(dtype)
    a.flat[0] = np.iinfo(dtype).max
    data = encode_png(a)
    with Image.open(io.BytesIO(data)) as img:
        np.testing.assert_array_equal(np.asarray(img).astype(dtype), a)


def test_encode_png_rejects_unsupported_arrays():
    with pytest.raises(ValueError, match="dtype float32"):
        encode_png(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="single-channel"):
        encode_png(np.zeros((4, 4, 3), np.uint16))
    with pytest.raises(ValueError, match=r"\(H,W,3\)"):
        encode_png(np.zeros((4, 4, 4), np.uint8))
