"""Test-time adaptation methods behind one interface: ``adapt(model, batch, signal, method=...) -> outputs``.

Every method is a class ``Method(model, mode=..., **kw)`` called as ``method(batch, signal)``. Methods
never modify ``model``: they keep the adapted state (weights, statistics, optimiser moments) themselves.
``mode="episodic"`` resets that state to the source model before every batch; ``"continual"`` carries it
from batch to batch (online adaptation along a stream).

- ``none``: the source model.
- ``norm``: normalisation-statistics adaptation. BatchNorm layers normalise with the test batch's
  statistics (continual mode also accumulates running statistics, momentum as configured). GroupNorm
  already normalises every image with its own test-time statistics and has no running statistics, so for
  the GroupNorm UNet this method is the identity: there is nothing to re-estimate.
- ``tent``: TENT, entropy minimisation of the norm layers' affine parameters (Adam, 1 step per batch,
  continual by default), for class logits; give ``objective=`` for other heads.
- ``tto``: test-time optimisation on the signal's loss (sparse L1 or click cross-entropy), of all weights
  or only norm/FiLM parameters; episodic runs per image with ``torch.func.vmap`` (batch-independent).
- ``rna``: Rapid Network Adaptation, one feed-forward pass (``model`` must be an :class:`adaptation.RNA`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call

from adaptation.rna import RNA
from adaptation.signals import Signal
from adaptation.tto import (
    FunctionalOptimizer,
    Objective,
    entropy,
    select_params,
    sparse_objective,
    tto_per_sample,
    tto_shared,
)
from robust.models import DomainModel

MODES = ("episodic", "continual")
Batch = Mapping[str, torch.Tensor] | torch.Tensor


class Method:
    """Base class: holds the model, adapted ``domain`` and ``mode``; subclasses implement ``adapt_batch``."""

    name = "none"

    def __init__(self, model: nn.Module, mode: str = "episodic", domain: str | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not isinstance(model, DomainModel | RNA):
            raise TypeError(f"model must be a robust.models DomainModel or adaptation.RNA, got {type(model).__name__}")
        self.model = model.eval()
        self.mode = mode
        base = model.base if isinstance(model, RNA) else model
        self.domain = domain or (model.domain if isinstance(model, RNA) else base.out_domains[0])
        if self.domain not in base.out_domains:
            raise ValueError(f"domain {self.domain!r} is not an output of the model (outputs: {base.out_domains})")
        self.channels = base.out_splits[base.out_domains.index(self.domain)]
        self.state: dict = {}
        self.reset()

    def reset(self) -> None:
        """Back to the source model's state."""
        self.state = {}

    def check_signal(self, x: torch.Tensor, signal: Signal | None, required: bool) -> None:
        if signal is None:
            if required:
                raise ValueError(f"method {self.name!r} needs a signal (sparse ground truth, clicks or a map)")
            return
        if not isinstance(signal, Signal):
            raise TypeError(f"signal must be an adaptation.Signal, got {type(signal).__name__}")
        signal.check(x, None if signal.kind == "map" else self.channels)

    def __call__(self, batch: Batch, signal: Signal | None = None) -> dict[str, torch.Tensor]:
        if self.mode == "episodic":
            self.reset()
        return self.adapt_batch(batch, signal)

    def adapt_batch(self, batch: Batch, signal: Signal | None) -> dict[str, torch.Tensor]:
        base = self.model.base if isinstance(self.model, RNA) else self.model
        x = base.inputs(batch)
        self.check_signal(x, signal, required=False)
        with torch.no_grad():
            return base(x)


NoAdapt = Method


class NormAdapt(Method):
    """BatchNorm test-batch statistics (identity for GroupNorm-only models, see module docs)."""

    name = "norm"

    def reset(self) -> None:
        bn = [n for n, m in self.model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        buffers = dict(self.model.named_buffers())
        self.bn = bn
        self.state = {k: v.clone() for k, v in buffers.items() if any(k.startswith(f"{n}.") for n in bn)}

    def adapt_batch(self, batch: Batch, signal: Signal | None) -> dict[str, torch.Tensor]:
        x = self.model.inputs(batch)
        self.check_signal(x, signal, required=False)
        modules = dict(self.model.named_modules())
        for n in self.bn:
            modules[n].train()
        try:
            with torch.no_grad():
                return functional_call(self.model, self.state, (x,))  # updates the copied buffers only
        finally:
            self.model.eval()


class TTO(Method):
    """Test-time optimisation of ``params`` on ``objective`` (default: the signal's sparse loss).

    Args:
        steps: optimiser steps per batch (0 = no adaptation).
        lr, optimizer: ``"adam"`` or ``"sgd"``.
        params: ``"norm"``, ``"all"``, ``"film"`` or a predicate ``(name, param) -> bool``.
        per_sample: episodic per-image weights with ``vmap`` (default in episodic mode; not in continual).
        objective: ``(pred, signal) -> (B,)``, e.g. a label-free energy; default the signal's loss.
    """

    name = "tto"

    def __init__(
        self,
        model: nn.Module,
        mode: str = "episodic",
        domain: str | None = None,
        steps: int = 20,
        lr: float = 1e-3,
        optimizer: str = "adam",
        params: str = "norm",
        per_sample: bool | None = None,
        objective: Objective | None = None,
    ) -> None:
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        self.steps, self.which = steps, params
        self.optimizer = FunctionalOptimizer(optimizer, lr)
        self.per_sample = mode == "episodic" if per_sample is None else per_sample
        if self.per_sample and mode == "continual":
            raise ValueError("per_sample=True gives every image its own weights: use mode='episodic'")
        self.objective = objective or sparse_objective
        super().__init__(model, mode, domain)

    def reset(self) -> None:
        params = select_params(self.model, self.which)
        self.state = {"params": params, "opt": self.optimizer.init(params)}

    def adapt_batch(self, batch: Batch, signal: Signal | None) -> dict[str, torch.Tensor]:
        x = self.model.inputs(batch)
        self.check_signal(x, signal, required=self.objective is sparse_objective)
        if self.per_sample:
            if signal is None:
                raise ValueError("per-sample TTO needs a signal (its tensors are mapped over the batch)")
            out, _ = tto_per_sample(
                self.model, x, signal, self.state["params"], self.steps, self.optimizer, self.domain, self.objective
            )
            return out
        out, self.state["params"], self.state["opt"] = tto_shared(
            self.model, x, signal, self.state["params"], self.steps, self.optimizer, self.state["opt"], self.domain,
            self.objective,
        )  # fmt: skip
        return out


class TENT(TTO):
    """TENT: entropy minimisation of the norm affine parameters, online (continual, 1 Adam step per batch)."""

    name = "tent"

    def __init__(
        self,
        model: nn.Module,
        mode: str = "continual",
        domain: str | None = None,
        steps: int = 1,
        lr: float = 1e-3,
        objective: Objective | None = None,
        **kw,
    ) -> None:
        base = model.base if isinstance(model, RNA) else model
        d = domain or base.out_domains[0]
        if objective is None and d != "segment_semantic":
            raise ValueError(
                f"TENT minimises the entropy of class logits; {d!r} is not a class output: pass objective=..."
            )
        kw.setdefault("per_sample", False)
        super().__init__(model, mode, domain, steps, lr, params="norm", objective=objective or entropy, **kw)


class RNAMethod(Method):
    """Rapid Network Adaptation: frozen forward -> controller -> FiLM-conditioned forward (stateless)."""

    name = "rna"

    def __init__(self, model: nn.Module, mode: str = "episodic", domain: str | None = None) -> None:
        if not isinstance(model, RNA):
            raise TypeError(f"method 'rna' needs an adaptation.RNA model, got {type(model).__name__}")
        super().__init__(model, mode, domain)

    def adapt_batch(self, batch: Batch, signal: Signal | None) -> dict[str, torch.Tensor]:
        x = self.model.base.inputs(batch)
        self.check_signal(x, signal, required=True)
        with torch.no_grad():
            return self.model(x, signal)


METHODS: dict[str, type[Method]] = {"none": NoAdapt, "norm": NormAdapt, "tent": TENT, "tto": TTO, "rna": RNAMethod}


def make_method(name: str, model: nn.Module, **kw) -> Method:
    """Instantiate method ``name`` (see :data:`METHODS`) for ``model``."""
    if name not in METHODS:
        raise ValueError(f"unknown adaptation method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name](model, **kw)


def adapt(model: nn.Module, batch: Batch, signal: Signal | None = None, method: str = "none", **kw) -> dict:
    """Adapt ``model`` to ``batch`` with ``method`` (episodic unless ``mode="continual"``); returns its outputs."""
    return make_method(method, model, **kw)(batch, signal)
