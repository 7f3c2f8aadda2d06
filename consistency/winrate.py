"""Win-rate selection of the perceptual terms to train with (XTC ``WinRateEnergyLoss``, reference §1.4).

For a term Z, a "win" is a sample where the consistency path is worse than the direct ``rgb→Z`` network:
``percep_Z > direct_Z``. At each epoch end the k terms with the highest win rate are chosen; while some
term has no statistics yet (or with ``random_select``) k terms are drawn at random instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class WinRateSelector:
    """Tracks per-term win rates over an epoch and picks the active terms for the next one."""

    def __init__(self, terms: Sequence[str], k: int, random_select: bool = False, seed: int = 0):
        if not terms:
            raise ValueError("WinRateSelector needs at least one perceptual term")
        if not 1 <= k <= len(terms):
            raise ValueError(f"k must be in 1..{len(terms)} (the number of terms), got {k}")
        self.terms = list(terms)
        self.k = k
        self.random_select = random_select
        self.generator = torch.Generator().manual_seed(seed)
        self.wins = dict.fromkeys(self.terms, 0.0)
        self.counts = dict.fromkeys(self.terms, 0)
        self.chosen = self._random()

    def _random(self) -> list[str]:
        idx = torch.randperm(len(self.terms), generator=self.generator)[: self.k]
        return [self.terms[i] for i in sorted(idx.tolist())]

    def update(self, term: str, percep: torch.Tensor, direct: torch.Tensor) -> None:
        """Add a batch of per-sample losses ``(B,)`` of the consistency path and of the direct network."""
        if term not in self.wins:
            raise KeyError(f"unknown term {term!r}; known: {self.terms}")
        self.wins[term] += float((percep.detach() > direct.detach()).float().sum())
        self.counts[term] += percep.numel()

    def win_rates(self) -> dict[str, float]:
        """Win rate per term seen so far this epoch (terms without samples are absent)."""
        return {t: self.wins[t] / self.counts[t] for t in self.terms if self.counts[t]}

    def select(self) -> list[str]:
        """End the epoch: choose the next terms (top-k win rate, or random) and reset the statistics."""
        rates = self.win_rates()
        if self.random_select or len(rates) < len(self.terms):
            self.chosen = self._random()
        else:
            order = sorted(self.terms, key=lambda t: -rates[t])
            self.chosen = [t for t in self.terms if t in order[: self.k]]
        self.wins = dict.fromkeys(self.terms, 0.0)
        self.counts = dict.fromkeys(self.terms, 0)
        return self.chosen

    def state_dict(self) -> dict:
        return {
            "chosen": list(self.chosen),
            "wins": dict(self.wins),
            "counts": dict(self.counts),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.chosen = list(state["chosen"])
        self.wins = dict(state["wins"])
        self.counts = dict(state["counts"])
        self.generator.set_state(state["generator"])
