"""Test-time optimisation with ``torch.func``: per-image (``vmap``) or shared gradient steps on chosen weights.

Per-image TTO gives every image of a batch its own copy of the optimised weights, so the result for an
image does not depend on which other images share its batch. The optimiser (SGD or Adam) is written
functionally on dicts of tensors, so stacked per-image weights update with plain elementwise arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from adaptation.signals import Signal, signal_loss

NORM_TYPES = (nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.InstanceNorm2d)
Objective = Callable[[torch.Tensor, Signal | None], torch.Tensor]
"""``objective(pred (B,C,H,W), signal) -> (B,)`` per-image loss."""


def select_params(
    model: nn.Module, which: str | Callable[[str, nn.Parameter], bool] = "norm"
) -> dict[str, torch.Tensor]:
    """Detached copies of the parameters to optimise: ``"all"``, ``"norm"`` (affine of every norm layer),
    ``"film"`` (names containing ``films.``) or a predicate ``(name, param) -> bool``."""
    if which == "norm":
        names = {
            f"{m_name}.{p_name}" if m_name else p_name
            for m_name, m in model.named_modules()
            if isinstance(m, NORM_TYPES)
            for p_name, _ in m.named_parameters(recurse=False)
        }
        keep = lambda n, p: n in names  # noqa: E731
    elif which == "all":
        keep = lambda n, p: True  # noqa: E731
    elif which == "film":
        keep = lambda n, p: "films." in n  # noqa: E731
    elif callable(which):
        keep = which
    else:
        raise ValueError(f"params must be 'all', 'norm', 'film' or a predicate (name, param) -> bool, got {which!r}")
    params = {n: p.detach().clone() for n, p in model.named_parameters() if keep(n, p)}
    if not params:
        raise ValueError(f"params={which!r} selects no parameter of {type(model).__name__}")
    return params


def entropy(pred: torch.Tensor, signal: Signal | None = None) -> torch.Tensor:
    """Mean per-pixel Shannon entropy (nats) of softmax(``pred`` (B,K,H,W)) per image, ``(B,)`` (TENT)."""
    logp = pred.log_softmax(dim=1)
    return -(logp.exp() * logp).sum(dim=1).flatten(1).mean(dim=1)


def sparse_objective(pred: torch.Tensor, signal: Signal | None) -> torch.Tensor:
    """The signal's own loss (:func:`adaptation.signals.signal_loss`); needs a supervised signal."""
    if signal is None:
        raise ValueError("this objective needs a signal (sparse ground truth or clicks); got signal=None")
    return signal_loss(pred, signal)


class FunctionalOptimizer:
    """SGD or Adam on dicts of tensors, functional (no in-place state on the model), any leading batch dims."""

    def __init__(self, name: str = "adam", lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999)) -> None:
        if name not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {name!r}")
        self.name, self.lr, self.betas = name, lr, betas

    def init(self, params: dict[str, torch.Tensor]) -> dict:
        zeros = {k: torch.zeros_like(v) for k, v in params.items()}
        return {"t": 0, "m": zeros, "v": {k: torch.zeros_like(v) for k, v in params.items()}}

    def step(self, params: dict, grads: dict, state: dict) -> tuple[dict, dict]:
        if self.name == "sgd":
            return {k: p - self.lr * grads[k] for k, p in params.items()}, state
        b1, b2 = self.betas
        t = state["t"] + 1
        m = {k: b1 * state["m"][k] + (1 - b1) * g for k, g in grads.items()}
        v = {k: b2 * state["v"][k] + (1 - b2) * g * g for k, g in grads.items()}
        c1, c2 = 1 - b1**t, 1 - b2**t
        new = {k: p - self.lr * (m[k] / c1) / ((v[k] / c2).sqrt() + 1e-8) for k, p in params.items()}
        return new, {"t": t, "m": m, "v": v}


def _single(model: nn.Module, domain: str, objective: Objective):
    """Loss of one image (no batch dim) under weights ``p``: the function ``vmap(grad(.))`` maps."""

    def loss(p: dict, x: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, kind: str) -> torch.Tensor:
        pred = functional_call(model, p, (x[None],))[domain]
        signal = Signal(values[None], mask[None], kind)
        return objective(pred, signal).sum()

    return loss


def tto_per_sample(
    model: nn.Module,
    x: torch.Tensor,
    signal: Signal,
    params: dict[str, torch.Tensor],
    steps: int,
    optimizer: FunctionalOptimizer,
    domain: str,
    objective: Objective = sparse_objective,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``steps`` optimiser steps per image with its own weights; returns (outputs, per-image weights).

    ``x``: model input (B,C,H,W); ``params``: the starting weights (shared); outputs as ``model(x)``.
    """
    b = x.shape[0]
    p = {k: v.unsqueeze(0).expand(b, *v.shape).clone() for k, v in params.items()}
    state = optimizer.init(p)
    loss = _single(model, domain, objective)
    per_image_grad = vmap(grad(loss), in_dims=(0, 0, 0, 0, None))
    for _ in range(steps):
        grads = per_image_grad(p, x, signal.values, signal.mask, signal.kind)
        p, state = optimizer.step(p, grads, state)
    with torch.no_grad():
        out = vmap(lambda pi, xi: {k: v[0] for k, v in functional_call(model, pi, (xi[None],)).items()})(p, x)
    return out, p


def tto_shared(
    model: nn.Module,
    x: torch.Tensor,
    signal: Signal | None,
    params: dict[str, torch.Tensor],
    steps: int,
    optimizer: FunctionalOptimizer,
    state: dict,
    domain: str,
    objective: Objective = sparse_objective,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    """``steps`` steps on the batch-mean objective with one set of weights (online/continual TTO, TENT).

    Returns (outputs, new weights, new optimiser state).
    """

    def loss(p: dict) -> torch.Tensor:
        return objective(functional_call(model, p, (x,))[domain], signal).mean()

    for _ in range(steps):
        params, state = optimizer.step(params, grad(loss)(params), state)
    with torch.no_grad():
        out = functional_call(model, params, (x,))
    return out, params, state
