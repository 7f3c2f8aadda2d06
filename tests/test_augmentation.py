"""Training-time augmentation and the albumentations adapter."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
import torch

import corruptions3d
from corruptions3d.adapters import Corrupt
from corruptions3d.augmentation import Augment3DCC, RandomCorruption


def _batch(b=6, size=32):
    g = torch.Generator().manual_seed(0)
    return {
        "rgb": torch.rand(b, 3, size, size, generator=g),
        "depth_euclidean": 1 + 3 * torch.rand(b, 1, size, size, generator=g),
    }


def test_random_corruption_is_per_sample_and_reproducible():
    batch = _batch()
    aug = RandomCorruption(["fog_3d", "iso_noise"], p=0.5)
    seeds = torch.arange(6, dtype=torch.int64) * 7919
    out = aug(batch, generator=seeds)["rgb"]
    assert torch.equal(out, aug(batch, generator=seeds)["rgb"])
    choice = aug.sample(batch, seeds)
    for i, c in enumerate(choice):
        changed = not torch.equal(out[i], batch["rgb"][i])
        assert changed == (c is not None), (i, c)
    # Batch independence: sample 2 alone, with its seed, gets the same result.
    alone = aug({k: v[2:3] for k, v in batch.items()}, generator=seeds[2:3])["rgb"]
    assert torch.equal(alone[0], out[2])


def test_random_corruption_skips_names_without_inputs():
    rgb = _batch()["rgb"]
    aug = RandomCorruption(["fog_3d", "iso_noise"], p=1.0)
    choice = aug.sample({"rgb": rgb}, torch.arange(6, dtype=torch.int64))
    assert {c[0] for c in choice} == {"iso_noise"}
    out = aug(rgb, generator=0)
    assert out.shape == rgb.shape and not torch.equal(out, rgb)


def test_continuous_parameters_differ_from_the_severity_table():
    """With continuous=True ranged parameters are redrawn, so two samples at the same severity differ."""
    c = corruptions3d.get_corruption("fog_3d")
    assert c.ranges, "fog_3d must define a continuous range for training"
    rgb = torch.full((2, 3, 8, 8), 0.5)
    rgb[:, 0] = 0.9
    batch = {"rgb": rgb, "depth_euclidean": torch.full((2, 1, 8, 8), 3.0)}
    aug = RandomCorruption(["fog_3d"], p=1.0, severities=[3])
    out = aug(batch, generator=torch.tensor([1, 2]))["rgb"]
    table = corruptions3d.corrupt(batch, "fog_3d", severity=3)
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out, table)


def test_augment_3dcc_policy_runs_with_and_without_depth():
    batch = _batch(8)
    aug = Augment3DCC()
    out = aug(batch, generator=3)
    assert out["rgb"].shape == batch["rgb"].shape and torch.isfinite(out["rgb"]).all()
    out2 = aug(batch["rgb"], generator=3)
    assert out2.shape == batch["rgb"].shape
    with pytest.raises(ValueError, match="sum to 1"):
        Augment3DCC(0.5, 0.5, 0.5)


def test_albumentations_adapter():
    img = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    depth = np.full((32, 32), 4.0, np.float32)
    t = A.Compose(
        [A.HorizontalFlip(p=1.0), Corrupt("fog_3d", severity=5, seed=1)], additional_targets={"depth": "mask"}
    )
    out = t(image=img, depth=depth)["image"]
    assert out.dtype == np.uint8 and out.shape == img.shape
    again = t(image=img, depth=depth)["image"]
    assert np.array_equal(out, again)
    # Fog at 4 m and severity 5 pulls every pixel towards the airlight: contrast drops.
    assert out.astype(float).std() < img.astype(float).std()
    with pytest.raises(ValueError, match=r"needs \['depth_euclidean'\].*depth"):
        A.Compose([Corrupt("fog_3d", severity=1)])(image=img)
    with pytest.raises(ValueError, match=r"severity must be in 1\.\.5"):
        Corrupt("fog_3d", severity=6)


def test_random_corruption_subsets_scene_renderers(tmp_path):
    """A batch carrying a scene renderer is split per corruption group through the renderer's subset()."""
    from robust.io import TaskonomyDataset, collate_views
    from robust.scene_renderer import SynthSceneRenderer
    from robust.synth import generate

    generate(tmp_path, buildings=1, points=2, views=2, size=32, seed=0)
    ds = TaskonomyDataset(tmp_path, ["rgb"])
    batch = collate_views([ds[i] for i in range(len(ds))])
    keys = batch.pop("key")
    batch["scene"] = SynthSceneRenderer.from_dataset(tmp_path, keys)
    aug = RandomCorruption(["scale", "iso_noise"], p=1.0, continuous=False)
    seeds = torch.arange(len(keys), dtype=torch.int64) + 11
    out = aug(batch, generator=seeds)["rgb"]
    choice = aug.sample(batch, seeds)
    i = next(i for i, c in enumerate(choice) if c[0] == "scale")
    alone = corruptions3d.corrupt(
        {"rgb": batch["rgb"][i : i + 1], "scene": batch["scene"].subset([i])}, "scale", choice[i][1]
    )
    assert torch.allclose(out[i], alone[0], atol=1e-6)
