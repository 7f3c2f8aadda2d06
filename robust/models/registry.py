"""A timm-style model registry for dense predictors: ``create_model(name, in_domains, out_domains, **kw)``.

Channels come from the domain registry (:mod:`robust.tasks`): the input is the concatenation of the
in-domains, the output is split back into one tensor per out-domain. ``segment_semantic`` outputs
``num_classes`` logits (keyword ``num_classes``, required); every other domain outputs its canonical
channel count. With ``uncertainty=True`` every regression domain also outputs a per-pixel log-scale
``log b`` under :func:`uncertainty_key` (Laplace heads, as in XDE).

>>> from robust.models import create_model, list_models
>>> model = create_model("unet_tiny", ["rgb"], ["depth_euclidean", "normal"])
>>> out = model({"rgb": rgb})  # {"depth_euclidean": (B,1,H,W), "normal": (B,3,H,W)}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from robust.tasks import get_domain

_MODELS: dict[str, Callable[..., nn.Module]] = {}
NOT_PREDICTABLE = ("mask_valid", "intrinsics")


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering ``fn(in_domains, out_domains, **kw) -> nn.Module`` under ``name``."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = fn
        return fn

    return deco


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_MODELS)


def uncertainty_key(domain: str) -> str:
    """Output key of the per-pixel Laplace log-scale ``log b`` for ``domain``."""
    return f"{domain}_log_b"


def input_channels(in_domains: Sequence[str]) -> list[int]:
    """Channels per input domain (``mask_valid`` counts as one float channel)."""
    if not in_domains:
        raise ValueError("in_domains is empty: give at least one input domain (e.g. ['rgb'])")
    chans = []
    for name in in_domains:
        d = get_domain(name)
        if d.name in ("segment_semantic", "intrinsics"):
            raise ValueError(f"in_domains: {d.name!r} cannot be a dense model input")
        chans.append(d.channels)
    return chans


def output_channels(out_domains: Sequence[str], num_classes: int | None = None) -> list[int]:
    """Channels per output domain; ``segment_semantic`` needs ``num_classes``."""
    if not out_domains:
        raise ValueError("out_domains is empty: give at least one output domain (e.g. ['normal'])")
    chans = []
    for name in out_domains:
        d = get_domain(name)
        if d.name in NOT_PREDICTABLE:
            raise ValueError(f"out_domains: {d.name!r} is not a prediction target")
        if d.name == "segment_semantic":
            if not num_classes or num_classes < 2:
                raise ValueError(f"out_domains has 'segment_semantic': pass num_classes >= 2, got {num_classes!r}")
            chans.append(int(num_classes))
        else:
            chans.append(d.channels)
    return chans


def create_model(
    name: str, in_domains: Sequence[str] = ("rgb",), out_domains: Sequence[str] = ("normal",), **kw
) -> nn.Module:
    """Build registered model ``name`` mapping ``in_domains`` to ``out_domains``; extra ``kw`` go to its builder.

    Unknown names raise ``KeyError`` listing the registered ones; unknown domains raise ``KeyError``
    from :func:`robust.tasks.get_domain`.
    """
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    in_domains = [get_domain(d).name for d in in_domains]
    out_domains = [get_domain(d).name for d in out_domains]
    return _MODELS[name](in_domains, out_domains, **kw)
