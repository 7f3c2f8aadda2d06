"""4M masking: per-sample input/target token budgets from a mixture of Dirichlets, span masking for text.

Every sample gets exactly ``input_budget`` encoder slots and ``target_budget`` decoder slots, split across
modalities by ``Dirichlet(alphas)`` of one mixture component (picked per sample by weight). No modality
gets more slots than it has tokens (image/vector: input and target are disjoint subsets of its N tokens;
sequence: at most L+1 input and L+2 target slots for L tokens plus EOS and sentinels). Sequence slots
that span masking leaves unused are padding (``valid=False``, weight 0); all other slots are real tokens.

Output arrays per sample (fixed shapes, E = input budget, T = target budget):
``enc_ids, enc_mod, enc_pos, enc_valid`` (E,) and ``dec_ids, dec_mod, dec_pos, dec_target, dec_valid`` (T,).
``*_mod`` indexes the model's modality list, ``*_pos`` the position (grid cell, sequence index, vector dim).
``dec_ids`` is the teacher-forcing input for sequences (unused for image/vector targets).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from unified.modalities import Modality
from unified.sequences import EOS_ID, NUM_SENTINELS, SENTINEL_ID0

KEYS = ("enc_ids", "enc_mod", "enc_pos", "enc_valid", "dec_ids", "dec_mod", "dec_pos", "dec_target", "dec_valid")


@dataclass
class Component:
    """One Dirichlet of the mixture: per-modality alphas (0 or absent = never used) and a sampling weight."""

    input_alphas: dict[str, float]
    target_alphas: dict[str, float]
    weight: float = 1.0


def symmetric_mixture(names: Sequence[str], alphas: Sequence[float] = (0.1, 1.0, 10.0)) -> list[Component]:
    """All→all components, one per alpha (4M-21 uses 0.01, 0.1, 1, 10)."""
    return [Component(dict.fromkeys(names, a), dict.fromkeys(names, a)) for a in alphas]


def split_budget(caps: np.ndarray, alphas: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Integer split of ``budget`` over modalities: ``Dirichlet(alphas)`` proportions, floored, capped at
    ``caps``, remainder handed out in order of decreasing proportion. ``sum == budget`` exactly."""
    active = (alphas > 0) & (caps > 0)
    available = int(caps[active].sum())
    if available < budget:
        raise ValueError(f"token budget {budget} is larger than the {available} tokens available in this sample")
    n = np.zeros(len(caps), dtype=np.int64)
    if budget == 0:
        return n
    p = np.zeros(len(caps))
    p[active] = rng.dirichlet(alphas[active])
    if not np.isfinite(p).all() or p.sum() == 0:  # all-tiny alphas underflow: one random modality
        p = np.zeros(len(caps))
        p[rng.choice(np.flatnonzero(active))] = 1.0
    n[:] = np.minimum(np.floor(p * budget).astype(np.int64), caps)
    n[~active] = 0
    for m in np.argsort(-(p + active)):  # active first, then by proportion
        take = min(int(caps[m] - n[m]), budget - int(n.sum())) if active[m] else 0
        n[m] += take
    return n


def span_mask(tokens: np.ndarray, n_in: int, n_tgt: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """T5 span masking of ``tokens`` + EOS: returns (encoder input ≤ n_in, full target sequence).

    ``keep_prob ~ U(0,1)``; each masked run becomes sentinel ``[S_k]`` in the input; the target is
    ``[S_0] run_0 [S_1] run_1 ... [S_K]``. Over-long inputs retry with ``keep_prob * 0.9`` (as 4M).
    """
    seq = np.append(tokens.astype(np.int64), EOS_ID)
    keep_prob = rng.uniform() if n_in > 0 else 0.0
    while True:
        keep = rng.random(len(seq)) < keep_prob
        masked = ~keep
        start = masked & ~np.concatenate([[False], masked[:-1]])
        run = np.cumsum(start) - 1
        inp = np.where(keep, seq, SENTINEL_ID0 + run)[keep | start]
        if len(inp) <= n_in or n_in == 0:
            break
        keep_prob *= 0.9
    n_runs = int(start.sum())
    if n_runs >= NUM_SENTINELS:
        raise ValueError(f"sequence of {len(tokens)} tokens needs {n_runs} sentinels (> {NUM_SENTINELS})")
    body = np.insert(seq[masked], np.flatnonzero(start[masked]), SENTINEL_ID0 + np.arange(n_runs))
    target = np.append(body, SENTINEL_ID0 + n_runs)
    return (inp if n_in > 0 else inp[:0]), target


@dataclass
class Masker:
    """Turns token dicts (``{modality: int array}``) into fixed-size encoder/decoder slot arrays."""

    modalities: list[Modality]
    input_budget: int = 256
    target_budget: int = 256
    components: list[Component] = field(default_factory=list)

    def __post_init__(self) -> None:
        names = [m.name for m in self.modalities]
        if not self.components:
            self.components = symmetric_mixture(names)
        for c in self.components:
            unknown = (set(c.input_alphas) | set(c.target_alphas)) - set(names)
            if unknown:
                raise KeyError(f"mixture alphas name unknown modalities {sorted(unknown)}; model has {names}")
        self._alphas = [
            (
                np.array([c.input_alphas.get(n, 0.0) for n in names]),
                np.array([c.target_alphas.get(n, 0.0) for n in names]),
            )
            for c in self.components
        ]
        w = np.array([c.weight for c in self.components], dtype=float)
        self._weights = w / w.sum()

    def sample(self, tokens: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Mask one sample; modalities missing from ``tokens`` count as having no tokens."""
        mods = self.modalities
        lengths = np.array([len(tokens[m.name]) if m.name in tokens else -1 for m in mods])
        present = lengths >= 0
        seq = np.array([m.is_sequence for m in mods])
        in_caps = np.where(present, np.where(seq, lengths + 1, lengths), 0)
        a_in, a_tgt = self._alphas[rng.choice(len(self._alphas), p=self._weights)]
        n_in = split_budget(in_caps, a_in, self.input_budget, rng)
        tgt_caps = np.where(present, np.where(seq, lengths + 2, lengths - n_in), 0)
        n_tgt = split_budget(tgt_caps, a_tgt, self.target_budget, rng)
        enc: list[tuple[np.ndarray, ...]] = []
        dec: list[tuple[np.ndarray, ...]] = []
        for i, m in enumerate(mods):
            if n_in[i] == 0 and n_tgt[i] == 0:
                continue
            t = np.asarray(tokens[m.name], dtype=np.int64)
            if m.is_sequence:
                inp, target = span_mask(t, int(n_in[i]), int(n_tgt[i]), rng)
                enc.append((inp, np.arange(len(inp))))
                dec_in, dec_out = target[:-1][: n_tgt[i]], target[1:][: n_tgt[i]]
                dec.append((dec_in, np.arange(len(dec_in)), dec_out))
            else:
                perm = rng.permutation(len(t))
                pin, ptgt = perm[: n_in[i]], perm[n_in[i] : n_in[i] + n_tgt[i]]
                enc.append((t[pin], pin))
                dec.append((np.zeros_like(ptgt), ptgt, t[ptgt]))
            enc[-1] = (*enc[-1], np.full(len(enc[-1][0]), i))
            dec[-1] = (*dec[-1], np.full(len(dec[-1][0]), i))
        out = {}
        e_ids, e_pos, e_mod = (_pad([x[j] for x in enc], self.input_budget) for j in range(3))
        d_ids, d_pos, d_tgt, d_mod = (_pad([x[j] for x in dec], self.target_budget) for j in range(4))
        n_enc, n_dec = sum(len(x[0]) for x in enc), sum(len(x[0]) for x in dec)
        out.update(enc_ids=e_ids, enc_pos=e_pos, enc_mod=e_mod, enc_valid=np.arange(self.input_budget) < n_enc)
        out.update(dec_ids=d_ids, dec_pos=d_pos, dec_target=d_tgt, dec_mod=d_mod)
        out["dec_valid"] = np.arange(self.target_budget) < n_dec
        return out

    def batch(self, samples: Sequence[dict[str, np.ndarray]], seeds: Sequence[int]) -> dict[str, torch.Tensor]:
        """Mask each sample with its own stream ``default_rng(seed)`` and stack to ``(B, E|T)`` tensors."""
        masked = [self.sample(s, np.random.default_rng(seed)) for s, seed in zip(samples, seeds, strict=True)]
        return {k: torch.from_numpy(np.stack([m[k] for m in masked])) for k in KEYS}


def _pad(parts: list[np.ndarray], size: int) -> np.ndarray:
    x = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
    return np.concatenate([x, np.zeros(size - len(x), np.int64)])
