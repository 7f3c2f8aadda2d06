"""Model: 4M-B trunk size, block-diagonal decoder attention, overfitting + generation, exact resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from unified.generate import Generator, Step
from unified.masking import Masker, symmetric_mixture
from unified.modalities import Modality, get_modality, register_modality
from unified.model import UnifiedModel, model_config, trunk_parameters
from unified.shards import write_shard
from unified.train import TrainConfig, load_config, train

# Small-vocabulary toy modalities keep the tiny model's logits cheap (and exercise register_modality).
TOY = ("toy_a", "toy_b", "toy_text")
for _m in (
    Modality("toy_a", "image", "vqvae", 64, 16, domain="rgb", channels=3),
    Modality("toy_b", "image", "vqvae", 64, 16, domain="depth_euclidean", channels=1),
    Modality("toy_text", "sequence", "wordpiece", 256, 8),
):
    try:
        get_modality(_m.name)
    except KeyError:
        register_modality(_m)


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest.one_thread


def _samples(n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        {"toy_a": rng.integers(0, 64, 16), "toy_b": rng.integers(0, 64, 16), "toy_text": rng.integers(210, 256, 4)}
        for _ in range(n)
    ]


def test_base_trunk_matches_4m_b():
    # 4M README: 198M; by arithmetic 12*(4D²+3·D·2048) + 12*(8D²+3·D·2048) = 198.18M, plus 6 norms of D per 2 blocks
    assert abs(trunk_parameters(model_config("B")) - 198.2e6) / 198.2e6 < 0.005
    assert abs(trunk_parameters(model_config("L")) - 704.7e6) / 704.7e6 < 0.005
    assert abs(trunk_parameters(model_config("XL")) - 2.82e9) / 2.82e9 < 0.005


def test_decoder_attention_stays_within_each_modality():
    torch.manual_seed(0)
    model = UnifiedModel(model_config("tiny", modalities=TOY, grid=4)).eval()
    batch = Masker(model.modalities, 12, 20, symmetric_mixture(TOY, (10.0,))).batch(_samples(2), [0, 1])
    mask = model.decoder_mask(batch)[:, 0]
    mod = batch["dec_mod"]
    cross = (mod[:, :, None] != mod[:, None, :]) & mask
    assert not cross.any()
    # behaviour: changing one modality's decoder queries (positions) leaves other modalities' logits unchanged
    with torch.no_grad():
        ref = model.logits(batch)
        changed = dict(batch)
        is_b = mod == TOY.index("toy_b")
        changed["dec_pos"] = torch.where(is_b, (batch["dec_pos"] + 1) % 16, batch["dec_pos"])
        out = model.logits(changed)
    other = ~is_b & batch["dec_valid"]
    assert is_b.any() and other.any()
    torch.testing.assert_close(out[other], ref[other], rtol=0, atol=1e-5)  # float reassociation only
    assert not torch.allclose(out[is_b], ref[is_b])


def test_decoder_is_causal_within_a_sequence():
    torch.manual_seed(0)
    model = UnifiedModel(model_config("tiny", modalities=TOY, grid=4)).eval()
    t = 6
    dec = {
        "dec_ids": torch.tensor([[4, 220, 221, 222, 223, 3]]),
        "dec_pos": torch.arange(t)[None],
        "dec_mod": torch.full((1, t), 2),
        "dec_valid": torch.ones(1, t, dtype=torch.bool),
    }
    enc = {k: torch.zeros(1, 0, dtype=torch.bool if k == "enc_valid" else torch.long) for k in
           ("enc_ids", "enc_pos", "enc_mod", "enc_valid")}  # fmt: skip
    with torch.no_grad():
        a = model.logits({**enc, **dec})
        dec["dec_ids"] = torch.tensor([[4, 220, 221, 240, 241, 3]])
        b = model.logits({**enc, **dec})
    torch.testing.assert_close(a[:, :3], b[:, :3], rtol=0, atol=1e-5)
    assert not torch.allclose(a[:, 3:], b[:, 3:])


def test_tiny_model_overfits_and_generation_reproduces_tokens():
    torch.manual_seed(0)
    model = UnifiedModel(model_config("tiny", modalities=TOY, grid=4))
    samples = _samples(3)
    masker = Masker(model.modalities, 16, 16, symmetric_mixture(TOY, (1.0,)))
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3, betas=(0.9, 0.95), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 240)
    losses = []
    for step in range(240):
        batch = masker.batch([samples[i % 3] for i in range(12)], [[step, i] for i in range(12)])
        loss, _, _ = model(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-10:]) < np.mean(losses[:3]) / 10
    gen = Generator(model, seed=0)
    cond = {"toy_a": torch.tensor(np.stack([s["toy_a"] for s in samples]))}
    out = gen.chain(cond, [Step("toy_b", "maskgit", 4, temperature=0.0), Step("toy_text", temperature=0.0)])
    np.testing.assert_array_equal(out["toy_b"].numpy(), np.stack([s["toy_b"] for s in samples]))
    np.testing.assert_array_equal(out["toy_text"][:, :4].numpy(), np.stack([s["toy_text"] for s in samples]))
    assert (out["toy_text"][:, 4:] == 0).all()
    guided = gen.chain(cond, [Step("toy_b", "roar", 4, temperature=0.5, top_k=3, top_p=0.9, cfg_scale=2.0)])
    assert (guided["toy_b"].numpy() == np.stack([s["toy_b"] for s in samples])).mean() > 0.9


def test_checkpoint_resume_gives_the_identical_next_loss(tmp_path):
    shards = tmp_path / "shards"
    write_shard(shards / "shard-00000.tar", [(f"b/{i}/0", s) for i, s in enumerate(_samples(6))])
    cfg_file = tmp_path / "cfg.json"
    cfg = {"shards": str(shards), "modalities": list(TOY), "grid": 4, "input_budget": 12, "target_budget": 12}
    cfg.update(batch_size=4, steps=4, warmup_steps=2, lr=0.003, log_every=1, ckpt_every=2, workers=0)
    cfg_file.write_text(json.dumps(cfg))
    full = train(load_config(["--config", str(cfg_file), "--out", str(tmp_path / "a")]))
    resumed_dir = tmp_path / "b"
    resumed_dir.mkdir()
    (resumed_dir / "checkpoint-00000002.pt").write_bytes((tmp_path / "a" / "checkpoint-00000002.pt").read_bytes())
    resumed = train(load_config(["--config", str(cfg_file), "--out", str(resumed_dir)]))
    assert [r["step"] for r in resumed] == [3, 4]
    assert resumed[0]["loss"] == full[2]["loss"] and resumed[1]["loss"] == full[3]["loss"]
    assert isinstance(load_config(["--config", str(cfg_file), "--out", "x", "--steps", "9"]), TrainConfig)
    assert load_config(["--config", str(cfg_file), "--out", "x", "--steps", "9"]).steps == 9


def test_training_rejects_shards_without_a_modality(tmp_path):
    shards = tmp_path / "shards"
    write_shard(shards / "shard-00000.tar", [("b/0/0", {"toy_a": np.arange(16)})])
    cfg = TrainConfig(shards=str(shards), out=str(tmp_path / "run"), modalities=list(TOY), grid=4, workers=0)
    with pytest.raises(ValueError, match=r"shard-00000.tar: sample 'b/0/0' lacks modality 'toy_b'"):
        train(cfg)
