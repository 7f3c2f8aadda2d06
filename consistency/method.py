"""``python -m robust.train --method xtc``: the XTC objective as a trainer plug-in.

Method arguments (``--method-args key=value ...``):

- ``percep``: frozen ``target→Z`` networks, ``"Z:CKPT,Z2:CKPT"`` or a dict literal; each ``CKPT`` is a
  ``checkpoint.pt`` of this trainer (e.g. ``--method baseline --in-domains normal --out-domains Z``).
- ``direct``: optional frozen ``rgb→Z`` checkpoints, same format, used only for win rates.
- ``init``: optional checkpoint to start the target network from (e.g. the L1 baseline).
- ``k`` (default: all terms), ``random_select`` (False), ``balance`` (True), ``balance_every`` (1: the
  reference's every step), ``select_every`` (100),
  ``reduction`` (``all``, the reference; or ``valid``).

Example::

    python -m robust.train --data-root D --out-dir runs/xtc --out-domains normal --method xtc \\
        --method-args percep=depth_zbuffer:runs/n2d/checkpoint.pt,reshading:runs/n2r/checkpoint.pt k=2
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from consistency.graph import freeze
from consistency.xtc import XTC
from robust.models import create_model
from robust.training.methods import Method, register_method

OPTIONS = ("percep", "direct", "init", "k", "random_select", "balance", "balance_every", "select_every", "reduction")


def load_trained(path: str | os.PathLike) -> nn.Module:
    """The model of a ``robust.train`` checkpoint, rebuilt from its saved config, weights loaded, frozen."""
    from robust.train import TrainConfig, resolve_method

    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not {"model", "config"} <= set(state):
        raise ValueError(f"{path} is not a robust.train checkpoint (needs 'model' and 'config')")
    cfg = TrainConfig(**state["config"])
    model = resolve_method(cfg.method)(cfg).model
    model.load_state_dict(state["model"])
    return freeze(model)


def parse_checkpoints(value: Any, option: str) -> dict[str, str]:
    """``"Z:path,Z2:path"`` or ``{"Z": "path"}`` → ``{Z: path}``."""
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    out = {}
    for item in str(value).split(","):
        z, sep, path = item.partition(":")
        if not sep or not z or not path:
            raise ValueError(f"--method-args {option}: expected 'Z:checkpoint,...', got {item!r}")
        out[z] = path
    return out


@register_method("xtc")
def build_xtc(cfg: Any) -> Method:
    """XTC on the single target ``cfg.out_domains[0]`` with perceptual networks loaded from checkpoints."""
    kw = cfg.method_kwargs()
    unknown = set(kw) - set(OPTIONS)
    if unknown:
        raise ValueError(f"--method-args: unknown xtc option(s) {sorted(unknown)}; known: {', '.join(OPTIONS)}")
    if len(cfg.out_domains) != 1:
        raise ValueError(f"xtc trains one target domain, got --out-domains {cfg.out_domains}")
    if "percep" not in kw:
        raise ValueError("xtc needs --method-args percep=Z:CKPT[,Z2:CKPT] (frozen target->Z networks)")
    target = cfg.out_domains[0]
    model = create_model(cfg.model, cfg.in_domains, cfg.out_domains, **cfg.model_kwargs())
    if "init" in kw:
        model.load_state_dict(load_trained(kw["init"]).state_dict())
    perceptual = {z: load_trained(p) for z, p in parse_checkpoints(kw["percep"], "percep").items()}
    direct = {z: load_trained(p) for z, p in parse_checkpoints(kw.get("direct", {}), "direct").items()}
    xtc = XTC(
        model,
        target,
        perceptual,
        direct,
        k=kw.get("k"),
        random_select=bool(kw.get("random_select", False)),
        balance=bool(kw.get("balance", True)),
        balance_every=int(kw.get("balance_every", 1)),
        select_every=int(kw.get("select_every", 100)),
        reduction=kw.get("reduction", "all"),
        seed=cfg.seed,
    )
    return Method(xtc, xtc.loss)
