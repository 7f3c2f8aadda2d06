"""``python -m robust.train --method xde``: XDE stages as a trainer plug-in.

One run trains all chosen paths of the ensemble at once (their parameters are disjoint, so the summed
loss gives each path exactly its own gradient). Method arguments (``--method-args key=value ...``):

- ``stage``: ``nll`` (stage 1, Laplace NLL), ``consistency`` (optional stage 2: NLL plus XTC perceptual terms
  on μ, gradient-balanced, NLL weight / 10) or ``sigma`` (stage 3, sigma training on blurred/noised rgb).
- ``middles``: comma-separated middle domains (default: all eight, see :data:`ensembles.MIDDLE_DOMAINS`).
- ``init``: checkpoint of an earlier stage (required for ``consistency`` and ``sigma``; optional for ``nll``).
- ``percep``: stage ``consistency`` only: frozen ``target→Z`` networks, ``"Z:CKPT,Z2:CKPT"`` (as for xtc).
- ``reduction``: ``all`` (reference: masked sum / all pixels) or ``valid``.

The path UNets take their depth from ``--model`` (``unet``: 6, ``unet_small``: 4, ``unet_tiny``: 2, or
``--model-args downsample=N``). Validation metrics read the merged mean.

Example::

    python -m robust.train --data-root D --out-dir runs/xde1 --out-domains normal --method xde \\
        --method-args stage=nll middles=rgb,grey,sobel_edges,wav
    python -m robust.train --data-root D --out-dir runs/xde2 --out-domains normal --method xde \\
        --method-args stage=consistency init=runs/xde1/checkpoint.pt middles=rgb,grey,sobel_edges,wav \\
        percep=depth_zbuffer:runs/n2d/checkpoint.pt
    python -m robust.train --data-root D --out-dir runs/xde3 --out-domains normal --method xde \\
        --method-args stage=sigma init=runs/xde2/checkpoint.pt middles=rgb,grey,sobel_edges,wav
"""

from __future__ import annotations

import os
from typing import Any

import torch

from consistency.method import load_trained, parse_checkpoints
from ensembles.domains import MIDDLE_DOMAINS
from ensembles.xde import (
    ConsistencyTraining,
    SigmaTraining,
    XDEnsemble,
    ensemble_state,
    path_nll,
    perturb,
    sigma_loss,
)
from robust.models import create_model
from robust.training.methods import Method, register_method

OPTIONS = ("stage", "middles", "init", "reduction", "percep")
STAGES = ("nll", "consistency", "sigma")


def _downsample(cfg: Any) -> int:
    net = getattr(create_model(cfg.model, ["rgb"], cfg.out_domains, **cfg.model_kwargs()), "net", None)
    if not hasattr(net, "downsample"):
        raise ValueError(f"xde path networks are UNets: --model must be a unet variant, got {cfg.model!r}")
    return int(net.downsample)


def load_ensemble_state(ensemble: XDEnsemble, path: str | os.PathLike) -> XDEnsemble:
    """Load an ``xde`` checkpoint (either stage) into ``ensemble`` (same target and middles)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"xde checkpoint {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=False)
    ensemble.load_state_dict(ensemble_state(state["model"]))
    return ensemble


@register_method("xde")
def build_xde(cfg: Any) -> Method:
    """XDE stage ``nll`` or ``sigma`` on the single target ``cfg.out_domains[0]``."""
    kw = cfg.method_kwargs()
    unknown = set(kw) - set(OPTIONS)
    if unknown:
        raise ValueError(f"--method-args: unknown xde option(s) {sorted(unknown)}; known: {', '.join(OPTIONS)}")
    stage = kw.get("stage", "nll")
    if stage not in STAGES:
        raise ValueError(f"--method-args stage must be one of {STAGES}, got {stage!r}")
    if len(cfg.out_domains) != 1 or cfg.in_domains != ["rgb"]:
        raise ValueError(f"xde maps rgb to one target, got {cfg.in_domains} -> {cfg.out_domains}")
    target, reduction = cfg.out_domains[0], kw.get("reduction", "all")
    middles = [m for m in str(kw.get("middles", ",".join(MIDDLE_DOMAINS))).split(",") if m]
    ensemble = XDEnsemble.build(target, middles, _downsample(cfg))
    if "init" in kw:
        load_ensemble_state(ensemble, kw["init"])
    elif stage != "nll":
        raise ValueError(f"xde stage={stage} needs --method-args init=STAGE1_CHECKPOINT")
    if ("percep" in kw) != (stage == "consistency"):
        raise ValueError("--method-args percep=Z:CKPT,... is required by, and only used in, xde stage=consistency")

    if stage == "nll":

        def nll_loss(batch, outputs):
            losses = {m: path_nll(_path(outputs, m), batch, target, reduction) for m in middles}
            return sum(losses.values()), {f"loss/nll_{m}": v.detach() for m, v in losses.items()}

        return Method(ensemble, nll_loss)

    if stage == "consistency":
        perceptual = {z: load_trained(p) for z, p in parse_checkpoints(kw["percep"], "percep").items()}
        stage2 = ConsistencyTraining(ensemble, perceptual)

        def consistency_stage_loss(batch, outputs):
            total, logs = 0.0, {}
            for m in middles:
                loss, path_logs = stage2.path_loss(m, _path(outputs, m), batch, reduction)
                total = total + loss
                logs |= {f"{k}_{m}": v for k, v in path_logs.items()}
            return total, logs

        return Method(stage2, consistency_stage_loss)

    model = SigmaTraining(ensemble, cfg.seed)

    def sigma_stage_loss(batch, outputs):
        rgb = perturb(batch["rgb"], model.generator)
        perturbed = model.ensemble.path_outputs(rgb)
        with torch.no_grad():
            frozen = model.frozen.path_outputs(rgb)
        total, logs = 0.0, {}
        for m in middles:
            loss, path_logs = sigma_loss(_path(outputs, m), perturbed[m], frozen[m][target], batch, target,
                                         reduction=reduction)  # fmt: skip
            total = total + loss
            logs |= {f"{k}_{m}": v for k, v in path_logs.items()}
        return total, logs

    return Method(model, sigma_stage_loss)


def _path(outputs: dict, middle: str) -> dict:
    """One path's outputs from the ensemble's flat ``"{middle}/{key}"`` dict."""
    prefix = f"{middle}/"
    return {k.removeprefix(prefix): v for k, v in outputs.items() if k.startswith(prefix)}
