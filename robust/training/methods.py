"""Method plug-ins for ``python -m robust.train --method NAME``.

A method turns the training config into what the trainer optimises::

    from robust.training.methods import Method, register_method

    @register_method("xtc")
    def build_xtc(cfg) -> Method:          # cfg: robust.train.TrainConfig
        model = create_model(cfg.model, cfg.in_domains, cfg.out_domains, **cfg.model_kwargs())
        frozen = ...                       # perceptual nets: keep them OUT of ``model`` or set requires_grad=False
        def loss_fn(batch, outputs):       # batch: dict of device tensors; outputs = model(batch)
            loss, logs = ...               # scalar tensor, {"name": float | 0-dim tensor}
            return loss, logs
        return Method(model, loss_fn)

- ``model`` is the one ``nn.Module`` the trainer owns: it is moved to the device, wrapped in DDP /
  ``torch.compile``, checkpointed and given to AdamW (only parameters with ``requires_grad``). Several
  networks go in an ``nn.ModuleDict`` whose ``forward`` returns the outputs dict.
- ``loss_fn(batch, outputs) -> (loss, logs)`` runs under the trainer's autocast.
- ``predict(model, batch) -> {domain: tensor}`` (optional) gives the outputs that validation metrics
  read; default ``model(batch)``.
- ``cfg.method_kwargs()`` holds ``--method-args key=value ...``.

The foundation never imports method packages; the CLI imports ``consistency`` / ``ensembles`` lazily
(``robust.train.METHOD_PROVIDERS``) so that they register themselves on import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robust.losses import multi_domain_loss
from robust.models import create_model

LossFn = Callable[[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]], tuple[torch.Tensor, dict[str, Any]]]


@dataclass
class Method:
    """What a method gives the trainer: the trained module, its loss and (optionally) its prediction."""

    model: nn.Module
    loss_fn: LossFn
    predict: Callable[[nn.Module, Mapping[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None

    def outputs(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Validation outputs of ``model`` (the possibly DDP/compile-wrapped ``self.model``)."""
        return self.predict(model, batch) if self.predict is not None else model(batch)


_METHODS: dict[str, Callable[[Any], Method]] = {}


def register_method(name: str) -> Callable[[Callable[[Any], Method]], Callable[[Any], Method]]:
    """Decorator registering ``build_fn(cfg) -> Method`` under ``name``."""

    def deco(fn: Callable[[Any], Method]) -> Callable[[Any], Method]:
        if name in _METHODS:
            raise ValueError(f"method {name!r} is already registered")
        _METHODS[name] = fn
        return fn

    return deco


def list_methods() -> list[str]:
    return sorted(_METHODS)


def get_method(name: str) -> Callable[[Any], Method]:
    if name not in _METHODS:
        raise KeyError(f"unknown method {name!r}; registered: {', '.join(list_methods())}")
    return _METHODS[name]


@register_method("baseline")
def build_baseline(cfg: Any) -> Method:
    """One model ``in_domains -> out_domains`` with each domain's masked default loss, summed."""
    model = create_model(cfg.model, cfg.in_domains, cfg.out_domains, **cfg.model_kwargs())

    def loss_fn(batch, outputs):
        return multi_domain_loss(outputs, batch, cfg.out_domains, normal_loss=cfg.normal_loss)

    return Method(model, loss_fn)
