"""Masking: exact Dirichlet budgets, disjoint image inputs/targets, span masking, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from unified.masking import Component, Masker, span_mask, split_budget, symmetric_mixture
from unified.modalities import resolve
from unified.sequences import EOS_ID, SENTINEL_ID0

NAMES = ("rgb", "depth", "caption", "global_feature")


def _sample(rng: np.random.Generator, caption_len: int) -> dict[str, np.ndarray]:
    return {
        "rgb": rng.integers(0, 1024, 16),
        "depth": rng.integers(0, 1024, 16),
        "caption": rng.integers(5000, 6000, caption_len),
        "global_feature": rng.integers(0, 256, 16),
    }


def test_split_budget_is_exact_and_capped():
    rng = np.random.default_rng(0)
    for _ in range(500):
        m = rng.integers(1, 6)
        caps = rng.integers(0, 40, m)
        alphas = rng.choice([0.0, 0.01, 0.5, 10.0], m)
        avail = int(caps[(alphas > 0) & (caps > 0)].sum())
        budget = int(rng.integers(0, avail + 1))
        n = split_budget(caps, alphas, budget, rng)
        assert n.sum() == budget
        assert (n <= caps).all() and (n[alphas == 0] == 0).all()


def test_masker_budgets_exact_over_many_draws():
    mods = resolve(NAMES, grid=4)
    masker = Masker(mods, 20, 24, symmetric_mixture(NAMES, (0.01, 0.5, 10.0)))
    rng = np.random.default_rng(1)
    for i in range(100):
        s = _sample(rng, int(rng.integers(1, 10)))
        out = masker.sample(s, np.random.default_rng(i))
        assert out["enc_ids"].shape == (20,) and out["dec_target"].shape == (24,)
        for j, m in enumerate(mods):
            enc = out["enc_valid"] & (out["enc_mod"] == j)
            dec = out["dec_valid"] & (out["dec_mod"] == j)
            if m.is_sequence:
                assert enc.sum() <= len(s[m.name]) + 1 and dec.sum() <= len(s[m.name]) + 2
                continue
            # image/vector: every slot is filled, and inputs and targets are disjoint real tokens
            pin, ptgt = out["enc_pos"][enc], out["dec_pos"][dec]
            assert not set(pin) & set(ptgt)
            assert enc.sum() + dec.sum() <= 16
            np.testing.assert_array_equal(out["enc_ids"][enc], s[m.name][pin])
            np.testing.assert_array_equal(out["dec_target"][dec], s[m.name][ptgt])
        # non-sequence slots are always valid: padding only comes from span masking
        seq = out["enc_mod"] == NAMES.index("caption")
        assert out["enc_valid"][~seq & (np.arange(20) < out["enc_valid"].sum())].all()


def test_masking_is_a_function_of_the_seed():
    masker = Masker(resolve(NAMES, grid=4), 20, 24)
    s = _sample(np.random.default_rng(0), 6)
    a, b = masker.batch([s, s], [7, 8]), masker.batch([s], [7])
    for k in a:
        np.testing.assert_array_equal(a[k][0].numpy(), b[k][0].numpy())
    assert any((a[k][0] != a[k][1]).any() for k in a)


def test_span_mask_merges_back_to_the_sequence():
    rng = np.random.default_rng(2)
    for _ in range(100):
        tokens = rng.integers(5000, 6000, rng.integers(1, 20))
        inp, target = span_mask(tokens, int(rng.integers(1, 25)), 50, rng)
        spans, cur = {}, None
        for t in target[:-1]:
            if SENTINEL_ID0 <= t < SENTINEL_ID0 + 200:
                cur = t
                spans[cur] = []
            else:
                spans[cur].append(t)
        merged = [x for t in inp for x in spans.get(t, [t])]
        np.testing.assert_array_equal(merged, [*tokens, EOS_ID])


def test_bad_input_raises_clear_errors():
    mods = resolve(NAMES, grid=4)
    with pytest.raises(ValueError, match="larger than the 48 tokens available"):
        Masker(mods, 60, 8).sample(
            {"rgb": np.arange(16), "depth": np.arange(16), "global_feature": np.arange(16)}, np.random.default_rng(0)
        )
    with pytest.raises(KeyError, match="unknown modality 'sonar'"):
        resolve(("rgb", "sonar"))
    with pytest.raises(KeyError, match="unknown modalities"):
        Masker(mods, 8, 8, [Component({"sonar": 1.0}, {"rgb": 1.0})])
