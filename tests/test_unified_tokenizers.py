"""Tokenizers round-trip (VQ-VAE, WordPiece, boxes, metadata, vectors) and token shards."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from robust.io import DataError, ViewKey, write_view
from unified.sequences import BINS, TextTokenizer, dequantize, quantize
from unified.shards import read_shards, shard_paths, write_shard
from unified.tokenize import TokenizeConfig, tokenize_dataset
from unified.train_tokenizer import TokenizerTrainConfig, train_vqvae
from unified.vqvae import VQVAE, VQVAEConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest.one_thread


@pytest.fixture(scope="module")
def text() -> TextTokenizer:
    captions = ["a room with 2 chairs and a table", "a kitchen with a lamp", "an empty room", "a sofa near a wall"]
    return TextTokenizer.train(captions, vocab_size=4400, words=["chair", "table", "lamp", "sofa"])


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """Six 32² views of smooth rgb/depth in one building, with a scene.json."""
    root = tmp_path_factory.mktemp("taskonomy")
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    for p in range(6):
        a, b = torch.rand(2, generator=g)
        rgb = torch.stack([xx * a, yy * b, (xx + yy) / 2])
        depth = (1 + 3 * (a * xx + b * yy))[None]
        write_view(root, ViewKey("b1", p, 0), {"rgb": rgb, "depth_euclidean": depth})
    (root / "b1" / "scene.json").write_text(json.dumps({"objects": [{"class": "chair"}, {"class": "table"}]}))
    return root


def test_vqvae_error_decreases_with_training(data_root, tmp_path):
    cfg = TokenizerTrainConfig(
        data=str(data_root), out=str(tmp_path), modality="depth", vocab_size=32, width=16, image_size=32,
        steps=40, batch_size=6, lr=2e-3, log_every=10, workers=0,
    )  # fmt: skip
    _, history = train_vqvae(cfg)
    assert history[-1] < 0.5 * history[0]
    loaded = VQVAE.load(tmp_path / "vqvae.pt")
    depth = torch.stack([torch.ones(1, 32, 32) * 2.0])
    ids = loaded.encode(depth)
    assert ids.shape == (1, 2, 2) and ids.max() < 32
    assert loaded.decode(ids).shape == (1, 1, 32, 32)


def test_vqvae_labels_round_trip_to_canonical_labels():
    model = VQVAE(VQVAEConfig("segment_semantic", vocab_size=16, width=8)).eval()
    labels = torch.randint(1, 32, (2, 32, 32))
    labels[0, :4] = 255
    out = model.decode(model.encode(labels))
    assert out.shape == labels.shape and out.dtype == torch.int64
    assert set(out.unique().tolist()) <= set(range(1, 32)) | {255}
    with pytest.raises(ValueError, match="not a multiple of 16"):
        model.encode(labels[:, :24, :24])


def test_text_boxes_metadata_round_trip(text):
    caption = "a room with 2 chairs and a table"
    assert text.decode(text.encode(caption)) == caption
    boxes = [(0.1, 0.2, 0.5, 0.6, "chair"), (0.0, 0.05, 0.3, 0.9, "table")]
    decoded = text.decode_boxes(text.encode_boxes(boxes))
    assert [b[4] for b in decoded] == ["table", "chair"]  # sorted by distance of the top-left corner to 0
    for got, want in zip(decoded, sorted(boxes, key=lambda b: b[0] ** 2 + b[1] ** 2)):
        # 1000 bins over [0, 1]: rounding error at most half a bin, 1 / (2 * 999)
        np.testing.assert_allclose(got[:4], want[:4], atol=0.5 / (BINS - 1) + 1e-6)
    meta = {"brightness": 0.4, "mean_depth": 3.3, "objects": 7}
    got = text.decode_metadata(text.encode_metadata(meta))
    assert got.keys() == meta.keys()
    assert abs(got["brightness"] - 0.4) <= 0.5 / (BINS - 1) + 1e-6 and got["objects"] == 7
    assert abs(got["mean_depth"] - 3.3) <= 20 * 0.5 / (BINS - 1) + 1e-6
    with pytest.raises(KeyError, match="unknown metadata keys"):
        text.encode_metadata({"humidity": 1.0})


def test_vector_bins_round_trip():
    x = torch.rand(4, 16) * 2 - 1
    ids = quantize(x, -1, 1, 256)
    assert ids.min() >= 0 and ids.max() < 256
    # uniform bins over [-1, 1]: error at most half a bin width, 2 / (2 * 255)
    assert (dequantize(ids, -1, 1, 256) - x).abs().max() <= 1 / 255 + 1e-6


def test_tokenize_writes_resumable_shards_that_round_trip(data_root, tmp_path, text):
    tok = tmp_path / "tok"
    tok.mkdir()
    vq = VQVAE(VQVAEConfig("rgb", vocab_size=32, width=16)).eval()
    vq.save(tok / "rgb.pt")
    text.save(tok / "text.json")
    cfg = TokenizeConfig(
        data=str(data_root), out=str(tmp_path / "shards"), tokenizers=str(tok),
        modalities=["rgb", "caption", "metadata"], image_size=32, shard_size=4, batch_size=4, workers=0,
    )  # fmt: skip
    paths = tokenize_dataset(cfg)
    assert [p.name for p in paths] == ["shard-00000.tar", "shard-00001.tar"]
    samples = read_shards(shard_paths(tmp_path / "shards"), ["rgb", "caption", "metadata"])
    assert [k for k, _ in samples] == [f"b1/{p}/0" for p in range(6)]
    _, tokens = samples[0]
    assert text.decode(tokens["caption"]) == "a room with a chair and a table"
    assert set(text.decode_metadata(tokens["metadata"])) >= {"brightness", "mean_depth", "objects", "classes"}
    assert tokens["rgb"].shape == (4,)
    # resume: complete shards are kept, missing ones rewritten
    mtime = paths[0].stat().st_mtime_ns
    paths[1].unlink()
    tokenize_dataset(cfg)
    assert paths[0].stat().st_mtime_ns == mtime and paths[1].exists()
    again = read_shards(shard_paths(tmp_path / "shards"), ["rgb", "caption", "metadata"])
    for (k1, t1), (k2, t2) in zip(samples, again):
        assert k1 == k2 and all((t1[m] == t2[m]).all() for m in t1)


def test_shard_errors_are_clear(tmp_path, data_root):
    write_shard(tmp_path / "s" / "shard-00000.tar", [("b/1/0", {"rgb": np.arange(4)})])
    with pytest.raises(DataError, match=r"shard-00000.tar: sample 'b/1/0' lacks modality 'depth'"):
        read_shards(shard_paths(tmp_path / "s"), ["rgb", "depth"])
    with pytest.raises(DataError, match="no token shards"):
        shard_paths(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=r"no VQ-VAE for 'rgb'"):
        tokenize_dataset(TokenizeConfig(data=str(data_root), out=str(tmp_path / "o"), tokenizers=str(tmp_path)))
