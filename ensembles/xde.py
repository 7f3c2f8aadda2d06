"""Cross-Domain Ensembles (XDE): one Laplace path network per middle domain, sigma training, merging.

A path is ``rgb → middle domain (analytic) → UNet → {target: μ, target_log_b: s}`` wrapped as a
:class:`robust.models.DomainModel`, so it reads a batch dict with ``rgb`` like any other model.

Stages (reference §2.4-2.7):

1. ``nll``: each path trained alone with the masked Laplace NLL.
2. (optional) ``consistency``: the path NLL plus XTC perceptual terms ``|g_Z(μ) − g_Z(y)|`` through frozen
   ``target→Z`` networks, weighted by XTC's gradient-magnitude balancing with the NLL weight divided by 10.
3. ``sigma``: recalibrate b on perturbed inputs against a frozen copy ``f0`` of the stage-1 path::

       L = 0.1·NLL(f(x), y) + 100·|μ_f(x̃) − μ_f0(x̃)| + |b_f(x̃) − |μ_f0(x̃) − y||

   where x̃ is x Gaussian-blurred (σ ~ U(1,10) px) or noised (std ~ U(0.05,0.5)), one of the two per image
   with probability 1/2.
4. merging: per-pixel inverse-variance weights, σ = √2·b (:mod:`ensembles.merging`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

import corruptions3d
from consistency.balance import balance_weights, gradient_magnitudes
from consistency.graph import TaskGraph
from consistency.losses import perceptual_l1
from ensembles.domains import MIDDLE_DOMAINS, middle_domain
from ensembles.merging import merge_laplace
from robust.losses import laplace_nll, masked_l1, valid_mask
from robust.models import DomainModel, UNet, uncertainty_key

BLUR_SIGMA = (1.0, 10.0)
"""Training blur σ range in pixels (reference ``DistTaskDataset``)."""
NOISE_STD = (0.05, 0.5)
"""Training Gaussian-noise standard-deviation range on [0,1] images."""
CONSISTENCY_NLL_SCALE = 0.1
"""Stage 2: factor on the balanced NLL weight (the NLL is on a different scale from the L1 terms)."""


@dataclass(frozen=True)
class SigmaWeights:
    """Loss weights of sigma training (reference ``energy_sig.py``)."""

    clean_nll: float = 0.1
    lwf: float = 100.0
    sigma: float = 1.0


class MiddleDomainLayer(nn.Module):
    """The analytic middle-domain transform as a parameter-free module ``(B,3,H,W) -> (B,C,H,W)``."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.domain = middle_domain(name)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.domain(rgb)

    def extra_repr(self) -> str:
        return self.domain.name


def path_model(middle: str, target: str, downsample: int = 6) -> DomainModel:
    """XDE path network ``rgb → middle → target`` with a Laplace head (``target``, ``target_log_b``)."""
    mid = middle_domain(middle)
    _, cout = DomainModel.channels(["rgb"], [target], None, uncertainty=True)
    net = nn.Sequential(MiddleDomainLayer(mid.name), UNet(mid.channels, cout, downsample))
    return DomainModel(net, ["rgb"], [target], uncertainty=True)


def path_nll(
    outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor], target: str, reduction: str = "all"
) -> torch.Tensor:
    """Stage-1 loss: masked Laplace NLL of a path's ``(μ, log b)`` against ``batch[target]``."""
    y = batch[target]
    mask = valid_mask(target, y, batch)
    return laplace_nll(outputs[target], outputs[uncertainty_key(target)], y, mask, reduction)


def consistency_weights(grad_magnitudes: torch.Tensor, nll_scale: float = CONSISTENCY_NLL_SCALE) -> torch.Tensor:
    """Stage-2 weights ``(n,)`` from gradient magnitudes ``(n,)`` of ``[NLL, percep_1, ...]``: XTC's balanced
    weights (:func:`consistency.balance_weights`, NLL as the direct term) with the NLL weight times ``nll_scale``."""
    weights = balance_weights(grad_magnitudes).clone()
    weights[0] *= nll_scale
    return weights


def consistency_loss(
    outputs: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    target: str,
    perceptual: Mapping[str, Callable[[torch.Tensor], torch.Tensor]],
    params: Sequence[nn.Parameter],
    reduction: str = "all",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Stage-2 loss of one path: ``c_nll·NLL + Σ_Z c_Z·|g_Z(μ) − g_Z(y)|``; ``(loss, logs)``.

    Args:
        outputs: the path's ``{target: μ, target_log_b: s}``.
        perceptual: frozen ``{Z: g_{target→Z}}`` tensor maps ``(B,C,H,W) -> (B,C_Z,H,W)``.
        params: the path's trainable parameters (the weights balance the gradients each term sends into them).
    """
    y = batch[target]
    mask = valid_mask(target, y, batch)
    terms = {"nll": path_nll(outputs, batch, target, reduction)}
    terms |= {z: perceptual_l1(g, outputs[target], y, mask, reduction).mean() for z, g in perceptual.items()}
    weights = consistency_weights(gradient_magnitudes(list(terms.values()), params))
    loss = sum(w.to(t) * t for w, t in zip(weights, terms.values()))
    logs = {f"loss/{k}": t.detach() for k, t in terms.items()} | {f"weight/{k}": w for k, w in zip(terms, weights)}
    return loss, logs


def perturb(rgb: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sigma-training perturbation of ``(B,3,H,W)``: per image, Gaussian blur or Gaussian noise (p = 1/2 each).

    Uses the ``gaussian_blur`` and ``gaussian_noise`` corruptions of :mod:`corruptions3d` with per-image
    parameters drawn from :data:`BLUR_SIGMA` and :data:`NOISE_STD`.
    """
    missing = [n for n in ("gaussian_blur", "gaussian_noise") if n not in corruptions3d.list_corruptions()]
    if missing:
        raise RuntimeError(f"sigma training needs corruptions {missing}, which corruptions3d does not register")
    b = rgb.shape[0]
    u = torch.rand(3, b, generator=generator).to(rgb.device)
    blur_sigma = BLUR_SIGMA[0] + (BLUR_SIGMA[1] - BLUR_SIGMA[0]) * u[0]
    noise_std = NOISE_STD[0] + (NOISE_STD[1] - NOISE_STD[0]) * u[1]
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    blurred = corruptions3d.corrupt(rgb, "gaussian_blur", params={"sigma": blur_sigma})
    noised = corruptions3d.corrupt(rgb, "gaussian_noise", params={"sigma": noise_std}, generator=seed)
    return torch.where((u[2] < 0.5).view(b, 1, 1, 1), blurred, noised)


def sigma_loss(
    clean: Mapping[str, torch.Tensor],
    perturbed: Mapping[str, torch.Tensor],
    frozen_mu: torch.Tensor,
    batch: Mapping[str, torch.Tensor],
    target: str,
    weights: SigmaWeights = SigmaWeights(),
    reduction: str = "all",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Stage-3 loss of one path; ``(loss, logs)``.

    Args:
        clean: the trained path's outputs on the clean batch (``target``, ``target_log_b``).
        perturbed: its outputs on the perturbed rgb.
        frozen_mu: ``μ`` of the frozen stage-1 copy on the perturbed rgb, ``(B,C,H,W)``.
        batch: the clean batch with ``batch[target]``.
    """
    y = batch[target]
    mask = valid_mask(target, y, batch)
    nll = path_nll(clean, batch, target, reduction)
    lwf = masked_l1(perturbed[target], frozen_mu, mask, reduction)
    b = perturbed[uncertainty_key(target)].exp()
    sig = masked_l1(b, (frozen_mu - y).abs().detach(), mask, reduction)
    loss = weights.clean_nll * nll + weights.lwf * lwf + weights.sigma * sig
    return loss, {"loss/nll_clean": nll.detach(), "loss/lwf": lwf.detach(), "loss/sigma": sig.detach()}


def frozen_copy(model: nn.Module) -> nn.Module:
    """A frozen, eval-mode deep copy (the ``f0`` of sigma training)."""
    f0 = copy.deepcopy(model).eval()
    for p in f0.parameters():
        p.requires_grad_(False)
    return f0


class XDEnsemble(nn.Module):
    """An ensemble of XDE paths for one target, merged by inverse-variance weighting.

    >>> ens = XDEnsemble("normal", {m: path_model(m, "normal", 4) for m in ("rgb", "grey", "sobel_edges")})
    >>> mean, sigma = ens.predict(rgb)  # (B,3,H,W) each; sigma is the per-pixel standard deviation
    """

    def __init__(self, target: str, paths: Mapping[str, nn.Module]) -> None:
        super().__init__()
        if not paths:
            raise ValueError("XDEnsemble needs at least one path")
        unknown = set(paths) - set(MIDDLE_DOMAINS)
        if unknown:
            raise KeyError(f"unknown middle domain(s) {sorted(unknown)}; known: {', '.join(MIDDLE_DOMAINS)}")
        self.target = target
        self.paths = nn.ModuleDict(dict(paths))

    @classmethod
    def build(cls, target: str, middles: Sequence[str] = tuple(MIDDLE_DOMAINS), downsample: int = 6) -> XDEnsemble:
        """Fresh path networks for ``middles`` (default: all eight)."""
        return cls(target, {m: path_model(m, target, downsample) for m in middles})

    def path_outputs(self, rgb: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
        """Each path's ``{target: μ, target_log_b: s}``, keyed by middle domain."""
        return {name: path({"rgb": rgb}) for name, path in self.paths.items()}

    def merge(self, outputs: Mapping[str, Mapping[str, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        key = uncertainty_key(self.target)
        mu = torch.stack([o[self.target] for o in outputs.values()])
        log_b = torch.stack([o[key] for o in outputs.values()])
        return merge_laplace(mu, log_b)

    def predict(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Merged mean and standard deviation, each ``(B,C,H,W)`` in the target's units."""
        return self.merge(self.path_outputs(rgb))

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{target: mean, target_sigma: σ}`` plus every path's outputs under ``"{middle}/{key}"``."""
        outputs = self.path_outputs(batch["rgb"])
        mean, sigma = self.merge(outputs)
        per_path = {f"{m}/{k}": v for m, out in outputs.items() for k, v in out.items()}
        return {self.target: mean, sigma_key(self.target): sigma, **per_path}


def sigma_key(target: str) -> str:
    """Output key of the merged per-pixel standard deviation of ``target``."""
    return f"{target}_sigma"


class SigmaTraining(nn.Module):
    """Stage 3: a trainable ensemble, its frozen stage-1 copy (kept in eval mode, never trained) and the
    generator of the perturbations, whose state is saved with the weights (exact resume)."""

    def __init__(self, ensemble: XDEnsemble, seed: int = 0) -> None:
        super().__init__()
        self.ensemble = ensemble
        self.frozen = frozen_copy(ensemble)
        self.generator = torch.Generator().manual_seed(seed)

    def get_extra_state(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])

    def train(self, mode: bool = True) -> SigmaTraining:
        super().train(mode)
        self.frozen.eval()
        return self

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.ensemble(batch)


class ConsistencyTraining(nn.Module):
    """Stage 2: a trainable ensemble and its frozen perceptual networks ``{Z: g_{target→Z}}`` (a
    :class:`consistency.TaskGraph`, moved and saved with the ensemble, never trained)."""

    def __init__(self, ensemble: XDEnsemble, perceptual: Mapping[str, nn.Module]) -> None:
        super().__init__()
        if not perceptual:
            raise ValueError("xde stage consistency needs at least one perceptual network {Z: g_target->Z}")
        self.ensemble = ensemble
        self.perceptual = TaskGraph({(ensemble.target, z): g for z, g in perceptual.items()})
        self.perceptual_domains = list(perceptual)

    def path_loss(
        self,
        middle: str,
        outputs: Mapping[str, torch.Tensor],
        batch: Mapping[str, torch.Tensor],
        reduction: str = "all",
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """:func:`consistency_loss` of path ``middle``, balanced on that path's parameters."""
        target = self.ensemble.target
        g = {z: partial(self.perceptual.transfer, target, z) for z in self.perceptual_domains}
        params = [p for p in self.ensemble.paths[middle].parameters() if p.requires_grad]
        return consistency_loss(outputs, batch, target, g, params, reduction)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.ensemble(batch)


def ensemble_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The :class:`XDEnsemble` part of a stage-1 (``XDEnsemble``), stage-2 (``ConsistencyTraining``) or stage-3
    (``SigmaTraining``) state dict."""
    if any(k.startswith("ensemble.") for k in state):
        return {k.removeprefix("ensemble."): v for k, v in state.items() if k.startswith("ensemble.")}
    return dict(state)
