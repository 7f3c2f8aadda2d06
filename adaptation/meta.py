"""Differentiable inner loops (unrolled SGD) for meta-learned adaptation, on ``torch.func`` or ``higher``.

Both backends take the same user code: ``inner_loss(f)`` and ``outer_loss(f)`` receive the adapted model
as a callable ``f(*args)`` with the same outputs as ``model(*args)``. With ``backend="torch.func"``
(default) ``f`` is ``functional_call`` on unrolled weights ``p <- p - lr·grad(inner)``; with
``backend="higher"`` it is ``higher.innerloop_ctx``'s patched model stepped by its differentiable SGD,
for users porting ``higher`` code. Both give the same meta-gradients (float64: to rounding).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call

Loss = Callable[[Callable[..., object]], torch.Tensor]
BACKENDS = ("torch.func", "higher")


def innerloop(model: nn.Module, inner_loss: Loss, steps: int = 1, lr: float = 0.1, backend: str = "torch.func"):
    """The model after ``steps`` differentiable SGD steps on ``inner_loss``, as a callable ``f(*args)``.

    Gradients of anything computed with ``f`` flow back to ``model``'s parameters (second order).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if backend == "higher":
        import higher

        opt = torch.optim.SGD(model.parameters(), lr=lr)
        with higher.innerloop_ctx(model, opt, copy_initial_weights=False) as (fmodel, diffopt):
            for _ in range(steps):
                diffopt.step(inner_loss(fmodel))
        return fmodel

    def bind(weights: dict[str, torch.Tensor]) -> Callable[..., object]:
        return lambda *a, **k: functional_call(model, weights, a, k)

    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    for _ in range(steps):
        grads = torch.autograd.grad(inner_loss(bind(params)), list(params.values()), create_graph=True)
        params = {n: w - lr * g for (n, w), g in zip(params.items(), grads)}
    return bind(params)


def meta_gradient(
    model: nn.Module,
    inner_loss: Loss,
    outer_loss: Loss,
    steps: int = 1,
    lr: float = 0.1,
    backend: str = "torch.func",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(outer loss, {name: d outer / d initial weight})`` through ``steps`` unrolled inner SGD steps."""
    f = innerloop(model, inner_loss, steps, lr, backend)
    outer = outer_loss(f)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(outer, [p for _, p in named], allow_unused=True)
    return outer.detach(), {n: torch.zeros_like(p) if g is None else g for (n, p), g in zip(named, grads)}
