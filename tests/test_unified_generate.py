"""``python -m unified.generate`` end to end: a synthetic Taskonomy view → VQ-VAE tokenizers → token shards →
tiny model overfit on that view → generated depth and normal written back as a Taskonomy folder.

One view, not two: telling two views apart from their rgb tokens takes the tiny model ~300 steps (measured),
more than this file's time budget; discrimination between samples is covered by test_unified_model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robust.io import TaskonomyDataset, ViewKey, domain_path, read_png, write_view
from robust.synth.dataset import ensure_dataset
from unified import generate, tokenize, train, train_tokenizer
from unified.shards import parse_key, read_shards, shard_paths, write_shard
from unified.vqvae import VQVAE

MODALITIES = ("rgb", "depth", "normal")
SIZE, GRID = 32, 2  # 2x2 token grid (patch 16)


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest.one_thread


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> dict:
    """The user path up to a trained checkpoint: render, train tokenizers, tokenize, train (overfit the view)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("generate")
    data = ensure_dataset(root / "data", buildings=1, points=1, views=1, size=SIZE)
    tok = root / "tok"
    for m in MODALITIES:
        out = root / f"vq_{m}"
        train_tokenizer.main(
            ["--data", str(data), "--out", str(out), "--modality", m, "--vocab-size", "64", "--width", "16",
             "--image-size", str(SIZE), "--steps", "5", "--batch-size", "2", "--workers", "0", "--log-every", "5",
             "--tokenizers", str(tok)]
        )  # fmt: skip
        saved, copied = VQVAE.load(out / "vqvae.pt").state_dict(), VQVAE.load(tok / f"{m}.pt").state_dict()
        assert all(torch.equal(saved[k], copied[k]) for k in saved)
    shards = root / "shards"
    tokenize.main(
        ["--data", str(data), "--out", str(shards), "--tokenizers", str(tok), "--modalities", *MODALITIES,
         "--image-size", str(SIZE), "--workers", "0"]
    )  # fmt: skip
    run = root / "run"
    train.main(
        ["--shards", str(shards), "--out", str(run), "--size", "tiny", "--modalities", *MODALITIES, "--grid", str(GRID),
         "--input-budget", "6", "--target-budget", "6", "--alphas", "1.0", "--batch-size", "8", "--steps", "150",
         "--warmup-steps", "10", "--lr", "5e-3", "--weight-decay", "0", "--log-every", "150", "--ckpt-every", "150",
         "--workers", "0", "--device", "cpu"]
    )  # fmt: skip
    torch.set_num_threads(n)
    return {"data": data, "tok": tok, "shards": shards, "ckpt": run / "checkpoint-00000150.pt", "root": root}


def _argv(p: dict, out, *extra: str) -> list[str]:
    return ["--checkpoint", str(p["ckpt"]), "--shards", str(p["shards"]), "--tokenizers", str(p["tok"]),
            "--out", str(out), "--device", "cpu", *extra]  # fmt: skip


def test_chain_rgb_depth_normal_writes_the_decoded_ground_truth_tokens(pipeline, tmp_path):
    out = tmp_path / "pred"
    generate.main(
        _argv(pipeline, out, "--cond", "rgb", "--targets", "depth", "normal", "--scheme", "maskgit", "--steps", "4",
              "--temperature", "0", "--cfg-scale", "1")
    )  # fmt: skip
    # a valid Taskonomy folder with the generated domains of every view, at the token grid's size
    ds = TaskonomyDataset(out, ["depth_euclidean", "normal"])
    samples = read_shards(shard_paths(pipeline["shards"]), MODALITIES)
    keys = [parse_key(k) for k, _ in samples]
    assert sorted(ds.keys) == sorted(keys) == [ViewKey("synth000", 0, 0)]
    for key in ds.keys:
        for domain, bits, shape in (("depth_euclidean", 16, (SIZE, SIZE)), ("normal", 8, (SIZE, SIZE, 3))):
            assert read_png(domain_path(out, key, domain), bits).shape == shape  # bit depth checked on read
    assert not [p for p in out.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert {p.parent.name for p in out.rglob("*.png")} == {"depth_euclidean", "normal"}
    # generation reproduces the overfit views' tokens: the written PNGs equal the decoded ground-truth tokens
    gt = tmp_path / "gt"
    vq = {m: VQVAE.load(pipeline["tok"] / f"{m}.pt") for m in ("depth", "normal")}
    with torch.no_grad():
        for key, (_, tokens) in zip(keys, samples):
            ids = {m: torch.as_tensor(tokens[m]).view(1, GRID, GRID) for m in vq}
            write_view(gt, key, {vq[m].modality.domain: vq[m].decode(ids[m])[0] for m in vq})
    assert all(len(np.unique(samples[0][1][m])) > 1 for m in ("depth", "normal"))  # not a constant image
    for key in keys:
        for domain in ("depth_euclidean", "normal"):
            want = read_png(domain_path(gt, key, domain))
            np.testing.assert_array_equal(read_png(domain_path(out, key, domain)), want)


def test_generation_errors_name_the_problem(pipeline, tmp_path):
    out = tmp_path / "pred"
    with pytest.raises(KeyError, match="--targets: unknown modality 'dpeth'"):
        generate.main(_argv(pipeline, out, "--targets", "dpeth"))
    trained = r"the model was not trained on it \(rgb, depth, normal\)"
    with pytest.raises(ValueError, match=f"--targets reshading: {trained}"):
        generate.main(_argv(pipeline, out, "--targets", "reshading"))
    with pytest.raises(ValueError, match=f"--cond edges: {trained}"):
        generate.main(_argv(pipeline, out, "--cond", "edges"))
    with pytest.raises(FileNotFoundError, match=r"--checkpoint .*missing\.pt: file not found"):
        generate.main(_argv({**pipeline, "ckpt": tmp_path / "missing.pt"}, out))
    with pytest.raises(FileNotFoundError, match=r"--tokenizers .*depth\.pt: no VQ-VAE for 'depth'"):
        generate.main(_argv({**pipeline, "tok": tmp_path}, out))
    write_shard(tmp_path / "s64" / "shard-00000.tar", [("synth000/0/0", {"rgb": np.zeros(16, np.int64)})])
    with pytest.raises(ValueError, match="rgb has 16 tokens per view but the model needs 4"):
        generate.main(_argv({**pipeline, "shards": tmp_path / "s64"}, out))
    assert not out.exists()


def test_demo_defaults_write_the_same_layout_and_sample_only_tokenizer_codes(pipeline, tmp_path):
    # CLI defaults: 1-step ROAR, temperature 0.01, classifier-free guidance 2 (conditional + unconditional pass)
    out = tmp_path / "pred"
    generate.main(_argv(pipeline, out, "--targets", "depth"))
    assert TaskonomyDataset(out, ["depth_euclidean"]).keys == [ViewKey("synth000", 0, 0)]
    assert {p.parent.name for p in out.rglob("*")} == {"pred", "synth000", "depth_euclidean"}
    # the VQ-VAEs have 64 codes, the modality 1024 ids: at temperature 5 the unrestricted logits of the overfit
    # model spread mass over all 1024 ids, so only the codebook restriction keeps every sample < 64
    model = generate.load_model(pipeline["ckpt"])
    (_, tokens), *_ = read_shards(shard_paths(pipeline["shards"]), ["rgb"])
    cond = {"rgb": torch.as_tensor(tokens["rgb"]).expand(32, -1)}
    hot = generate.Step("depth", "roar", 1, temperature=5.0)
    assert (generate.Generator(model).parallel(cond, hot, 32) >= 64).any()
    hot.vocab = 64
    assert (generate.Generator(model).parallel(cond, hot, 32) < 64).all()


def test_help_shows_examples(capsys):
    with pytest.raises(SystemExit):
        generate.main(["--help"])
    assert "python -m unified.generate --checkpoint" in capsys.readouterr().out
