"""The XTC training objective: direct loss plus perceptual consistency terms through frozen networks,
balanced by gradient magnitude, with the perceptual terms chosen by win rate (reference §1.4-1.5).

``L = c_direct·|f(x) − y| + Σ_{Z chosen} c_Z·|g_Z(f(x)) − g_Z(y)|`` where ``g_Z = g_{target→Z}`` is
frozen, the ``c`` come from :func:`consistency.balance.balance_weights` every step, and the chosen set is
refreshed every ``select_every`` training steps by :class:`consistency.winrate.WinRateSelector` (win
rates need the frozen direct networks ``rgb→Z`` and the ground truth of Z in the batch; terms without
them keep the random choice).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import torch
from torch import nn

from consistency.balance import balance_weights, gradient_magnitudes
from consistency.graph import TaskGraph, edge_key
from consistency.losses import per_image_l1, perceptual_l1
from consistency.winrate import WinRateSelector
from robust.losses import valid_mask


class XTC(nn.Module):
    """A trainable ``rgb→target`` model with its frozen perceptual networks and the XTC loss.

    Args:
        model: the trained network (a ``DomainModel`` reading ``rgb`` and predicting ``target``).
        target: the predicted domain (e.g. ``normal``).
        perceptual: ``{Z: g_{target→Z}}`` frozen cross-task networks (``DomainModel``s from ``target`` to Z).
        direct: optional ``{Z: f_{rgb→Z}}`` frozen networks, used only for win rates.
        k: perceptual terms active at a time (default: all).
        random_select: choose terms at random instead of by win rate.
        balance: gradient-magnitude weights (``False``: every term weight 1).
        balance_every: training steps between weight updates (reference: 1, every step); the weights are also
            recomputed when the chosen terms change. Each update costs one backward pass per term.
        select_every: training steps between term selections (the reference's "epoch").
        reduction: ``"all"`` (reference: masked sum / all pixels) or ``"valid"``.
    """

    def __init__(
        self,
        model: nn.Module,
        target: str,
        perceptual: Mapping[str, nn.Module],
        direct: Mapping[str, nn.Module] | None = None,
        k: int | None = None,
        random_select: bool = False,
        balance: bool = True,
        balance_every: int = 1,
        select_every: int = 100,
        reduction: str = "all",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not perceptual:
            raise ValueError("XTC needs at least one perceptual network {Z: g_target->Z}")
        self.model = model
        self.target = target
        self.perceptual = TaskGraph({(target, z): g for z, g in perceptual.items()})
        self.direct = TaskGraph({("rgb", z): f for z, f in (direct or {}).items()})
        self.selector = WinRateSelector(list(perceptual), k or len(perceptual), random_select, seed)
        if balance_every < 1:
            raise ValueError(f"balance_every must be >= 1, got {balance_every}")
        self.balance = balance
        self.balance_every = balance_every
        self.weights: tuple[tuple[str, ...], torch.Tensor] | None = None  # (term names, their weights)
        self.select_every = select_every
        self.reduction = reduction
        self.steps = 0

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.model(batch)

    def term_losses(self, batch: Mapping[str, torch.Tensor], pred: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-image ``(B,)`` losses: ``direct`` and one per chosen perceptual term."""
        y = batch[self.target]
        mask = valid_mask(self.target, y, batch)
        terms = {"direct": perceptual_l1(None, pred, y, mask, self.reduction)}
        for z in self.selector.chosen:
            g = partial(self.perceptual.transfer, self.target, z)
            terms[z] = perceptual_l1(g, pred, y, mask, self.reduction)
        return terms

    @torch.no_grad()
    def _update_win_rates(self, batch: Mapping[str, torch.Tensor], terms: Mapping[str, torch.Tensor]) -> None:
        for z in self.selector.chosen:
            if edge_key("rgb", z) in self.direct.edges and z in batch:
                pred_z = self.direct.transfer("rgb", z, batch["rgb"])
                mask = valid_mask(z, batch[z], batch)
                self.selector.update(z, terms[z], per_image_l1(pred_z, batch[z], mask, self.reduction))

    def loss(
        self, batch: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(weighted loss, logs)``; in training mode also advances the win-rate schedule."""
        terms = self.term_losses(batch, outputs[self.target])
        means = [t.mean() for t in terms.values()]
        weights = self._balanced_weights(tuple(terms), means)
        loss = sum(w.to(m) * m for w, m in zip(weights, means))
        logs = {f"loss/{name}": m.detach() for name, m in zip(terms, means)}
        logs |= {f"weight/{name}": w for name, w in zip(terms, weights)}
        if self.training:
            self._update_win_rates(batch, terms)
            self.steps += 1
            if self.steps % self.select_every == 0:
                self.selector.select()
        return loss, logs

    def _balanced_weights(self, names: tuple[str, ...], means: list[torch.Tensor]) -> torch.Tensor:
        """Gradient-balanced weights ``(n,)``, recomputed every ``balance_every`` steps or when ``names`` change."""
        if not (self.balance and len(means) > 1 and means[0].requires_grad):
            return torch.ones(len(means))
        if self.weights is None or self.weights[0] != names or self.steps % self.balance_every == 0:
            params = [p for p in self.model.parameters() if p.requires_grad]
            self.weights = (names, balance_weights(gradient_magnitudes(means, params)))
        return self.weights[1]

    def get_extra_state(self) -> dict[str, Any]:
        return {"selector": self.selector.state_dict(), "steps": self.steps, "weights": self.weights}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.selector.load_state_dict(state["selector"])
        self.steps = int(state["steps"])
        self.weights = state.get("weights")
