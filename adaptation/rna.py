"""Rapid Network Adaptation (RNA): a controller turns a test-time signal into FiLM inputs of a frozen network.

Adaptation is one feed-forward chain, no test-time optimisation::

    pred   = up(f(down_s(x)))                      frozen network, no FiLM, on the image scaled by s
    z      = h([signal, pred at the signal's pixels])   controller (B,E,H/2^d,W/2^d)
    adapted = f(x; FiLM(z))                        same frozen weights, FiLM shifts at every block

Only the controller ``h`` and the FiLM convs train (:func:`train_rna`), with the masked L1 of the
adapted prediction against dense ground truth, on batches corrupted by :mod:`corruptions3d`.

Two configurations (:data:`FAST`, the default, and :data:`TWO_PASS`, the released one):

- ``TWO_PASS``: feedback pass at full resolution (``feedback_scale=1``), controller width 16, FiLM convs at
  each feature map's resolution. Costs two full forwards plus the controller and FiLM (about 3x a forward).
- ``FAST``: the controller reads the prediction only at the sparse pixels, so the feedback pass runs on the
  image area-downsampled by 4 (1/16 of the pixels) and is bilinearly upsampled; the controller has width 8
  and the FiLM convs run at the embedding's resolution where the feature map is finer
  (:class:`adaptation.film.SpatialFiLM` ``lowres``). Training uses the same chain, so train and test match.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import corruptions3d
from adaptation.film import SpatialFiLM, film_sites
from adaptation.signals import RNA_TRAIN_FRACTION, Signal, controller_input, sparse_depth
from corruptions3d.augmentation import RandomCorruption
from robust.losses import masked_l1, valid_mask
from robust.models import DomainModel
from robust.models.unet import ConvBlock, DownBlock


class Controller(nn.Module):
    """The encoder half of the GroupNorm UNet: ``(B,in_channels,H,W) -> z (B,16·2^d,H/2^d,W/2^d)``.

    ``downsample=3, width=16`` gives the released controller (16->32->64->128 channels, 0.93 M parameters for
    2 inputs); ``width`` (a multiple of 8, for GroupNorm(8)) scales every layer, the cost by ~``(width/16)^2``.
    """

    def __init__(self, in_channels: int, downsample: int = 3, width: int = 16) -> None:
        super().__init__()
        if width < 8 or width % 8:
            raise ValueError(f"controller width must be a positive multiple of 8 (GroupNorm(8)), got {width}")
        ch = [width * 2**i for i in range(downsample + 1)]
        self.stem = ConvBlock(in_channels, ch[0])
        self.down = nn.Sequential(*(DownBlock(ch[i], ch[i + 1]) for i in range(downsample)))
        self.mid = ConvBlock(ch[-1], ch[-1])
        self.in_channels = in_channels
        self.out_channels = ch[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mid(self.down(self.stem(x)))


TWO_PASS = {"feedback_scale": 1.0, "controller_width": 16, "film_lowres": False}
"""The released RNA chain: full-resolution feedback pass, width-16 controller, FiLM convs at feature resolution."""
FAST = {"feedback_scale": 0.25, "controller_width": 8, "film_lowres": True}
"""Quarter-resolution feedback pass, width-8 controller, FiLM convs at the embedding's resolution (default)."""


class RNA(nn.Module):
    """A frozen :class:`robust.models.DomainModel` with FiLM layers and a controller for one output ``domain``.

    Args:
        base: the network to adapt (UNet or timm dense model); its parameters are frozen here.
        domain: the adapted output domain (default: the model's first).
        signal_channels: channels of the signal (default: the domain's output channels, i.e. sparse GT or
            one-hot clicks; give the map's channels for label-free ``"map"`` signals).
        controller_downsample: controller depth ``d`` (embedding ``width·2^d`` channels at 1/2^d resolution).
        film_mode: ``"shift"`` (released) or ``"scale_shift"``.
        feedback_scale: resolution of the unadapted feedback pass, ``1/k`` for an integer ``k`` (1: released).
        controller_width: channels of the controller's first layer (16: released).
        film_lowres: FiLM convs at the coarser of embedding and feature resolution (False: released).

    ``RNA(base, **TWO_PASS)`` is the released configuration; the defaults are :data:`FAST`.
    """

    def __init__(
        self,
        base: DomainModel,
        domain: str | None = None,
        signal_channels: int | None = None,
        controller_downsample: int = 3,
        film_mode: str = "shift",
        feedback_scale: float = FAST["feedback_scale"],
        controller_width: int = FAST["controller_width"],
        film_lowres: bool = FAST["film_lowres"],
    ) -> None:
        super().__init__()
        k = 1.0 / feedback_scale if feedback_scale > 0 else 0.0
        if not (0 < feedback_scale <= 1 and abs(k - round(k)) < 1e-9):
            raise ValueError(f"feedback_scale must be 1/k for an integer k >= 1, got {feedback_scale}")
        self.feedback_factor = round(k)
        self.base = base.requires_grad_(False)
        self.domain = domain or base.out_domains[0]
        if self.domain not in base.out_domains:
            raise ValueError(f"domain {self.domain!r} is not an output of the model (outputs: {base.out_domains})")
        self.pred_channels = base.out_splits[base.out_domains.index(self.domain)]
        self.signal_channels = signal_channels or self.pred_channels
        sites = film_sites(base)
        self.controller = Controller(self.signal_channels + self.pred_channels, controller_downsample, controller_width)
        self.films = nn.ModuleList(
            SpatialFiLM(self.controller.out_channels, c, film_mode, film_lowres) for _, c in sites
        )
        self.hparams = {
            "domain": self.domain,
            "signal_channels": self.signal_channels,
            "controller_downsample": controller_downsample,
            "film_mode": film_mode,
            "feedback_scale": feedback_scale,
            "controller_width": controller_width,
            "film_lowres": film_lowres,
        }
        self._z: torch.Tensor | None = None
        self._hooks = [m.register_forward_hook(partial(self._modulate, i)) for i, (m, _) in enumerate(sites)]

    def _modulate(self, i: int, module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        return out if self._z is None else self.films[i](out, self._z)

    def adapter_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters: controller and FiLM convs (never the base network's)."""
        return [*self.controller.parameters(), *self.films.parameters()]

    def check_frozen(self) -> None:
        """Raise ``RuntimeError`` if any base parameter requires grad."""
        thawed = [n for n, p in self.base.named_parameters() if p.requires_grad]
        if thawed:
            raise RuntimeError(f"RNA base network must stay frozen; trainable: {thawed[:5]}")

    def embed(self, pred: torch.Tensor, signal: Signal) -> torch.Tensor:
        """Controller embedding ``z`` from the unadapted prediction (B,C,H,W) and the signal."""
        signal.check(pred, self.signal_channels)
        return self.controller(controller_input(pred, signal))

    def conditioned(self, batch: Mapping[str, torch.Tensor] | torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """The base network's outputs with every FiLM layer conditioned on ``z``."""
        self._z = z
        try:
            return self.base(batch)
        finally:
            self._z = None

    def feedback(self, x: torch.Tensor) -> torch.Tensor:
        """Unadapted prediction (B,C,H,W) for the controller: the frozen network on ``x`` (B,C_in,H,W)
        area-downsampled by ``1/feedback_scale``, bilinearly upsampled back (exactly ``f(x)`` at scale 1)."""
        k = self.feedback_factor
        with torch.no_grad():
            if k == 1:
                return self.base(x)[self.domain]
            pred = self.base(F.avg_pool2d(x, k))[self.domain]
            return F.interpolate(pred, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, batch: Mapping[str, torch.Tensor] | torch.Tensor, signal: Signal) -> dict[str, torch.Tensor]:
        """Adapted outputs: frozen feedback forward -> controller -> FiLM-conditioned forward."""
        x = self.base.inputs(batch)
        return self.conditioned(x, self.embed(self.feedback(x), signal))

    def adapter_state_dict(self) -> dict:
        """Controller + FiLM weights and the constructor arguments (the base comes from its own checkpoint)."""
        return {
            "hparams": dict(self.hparams),
            "controller": self.controller.state_dict(),
            "films": self.films.state_dict(),
        }

    def load_adapter(self, state: Mapping) -> RNA:
        hparams = checkpoint_hparams(state)
        if hparams != self.hparams:
            raise ValueError(f"RNA checkpoint hparams {hparams} differ from this model's {self.hparams}")
        self.controller.load_state_dict(state["controller"])
        self.films.load_state_dict(state["films"])
        return self


def checkpoint_hparams(state: Mapping) -> dict:
    """A checkpoint's constructor arguments; checkpoints written before the fast chain existed are :data:`TWO_PASS`."""
    return {**TWO_PASS, **state["hparams"]}


def save_rna(path: str | os.PathLike, rna: RNA) -> Path:
    """Write the controller + FiLM checkpoint (``torch.save``) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(rna.adapter_state_dict(), path)
    return path


def load_rna(path: str | os.PathLike, base: DomainModel) -> RNA:
    """An :class:`RNA` around ``base`` with the controller + FiLM weights of checkpoint ``path``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--rna {path}: no such checkpoint")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not {"hparams", "controller", "films"} <= set(state):
        raise ValueError(f"{path}: not an RNA checkpoint (keys {sorted(state)})")
    return RNA(base, **checkpoint_hparams(state)).load_adapter(state)


def shift_augmentation(names: Sequence[str] | None, p: float = 0.8) -> RandomCorruption | None:
    """Per-sample random corruptions from the registry; names not registered are skipped with a message."""
    registered = corruptions3d.list_corruptions(video=False)
    names = registered if names is None else list(names)
    missing = [n for n in names if n not in registered]
    if missing:
        print(f"adaptation: skipping corruptions not in the registry: {', '.join(missing)}")
    usable = [n for n in names if n in registered]
    return RandomCorruption(usable, p=p) if usable else None


@dataclass
class RNATrainConfig:
    """RNA training over many shifts (reference: Adam 3e-5, wd 2e-6, amsgrad; sparse p ~ U(0, 0.25 %))."""

    steps: int = 1000
    lr: float = 3e-5
    weight_decay: float = 2e-6
    fraction: tuple[float, float] = RNA_TRAIN_FRACTION
    corruptions: list[str] | None = None
    p_corrupt: float = 0.8
    seed: int = 0


def _cycle(loader: Iterable) -> Iterator:
    while True:
        yield from loader


def train_rna(
    rna: RNA,
    loader: Iterable[Mapping[str, torch.Tensor]],
    cfg: RNATrainConfig,
    log: Callable[[int, dict], None] | None = None,
) -> list[float]:
    """Train the controller and FiLM layers of ``rna`` on (corrupted) batches with dense ground truth.

    Each step: corrupt ``rgb`` per sample (:func:`shift_augmentation`), sample sparse ground truth at a
    per-image fraction ``U(*cfg.fraction)`` of valid pixels, adapt, and minimise the masked L1 of the
    adapted prediction against the dense target. Returns the loss per step. The base stays frozen (checked).
    """
    rna.check_frozen()
    params = rna.adapter_parameters()
    base_ids = {id(p) for p in rna.base.parameters()}
    assert not base_ids & {id(p) for p in params}, "RNA optimiser must not hold base-network parameters"
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, amsgrad=True)
    aug = shift_augmentation(cfg.corruptions, cfg.p_corrupt)
    gen = torch.Generator().manual_seed(cfg.seed)
    device = next(rna.parameters()).device
    rna.train()
    rna.base.eval()  # frozen means frozen buffers too (BatchNorm running statistics)
    losses = []
    for step, batch in zip(range(cfg.steps), _cycle(loader)):
        batch = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        target = batch[rna.domain]
        valid = valid_mask(rna.domain, target, batch)
        if aug is not None:
            with torch.no_grad():
                batch = aug(batch, generator=torch.randint(0, 2**62, (target.shape[0],), generator=gen))
        signal = sparse_depth(target, valid, cfg.fraction, gen)
        loss = masked_l1(rna(batch, signal)[rna.domain], target, valid)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if log is not None:
            log(step, {"rna/loss": losses[-1]})
    rna.check_frozen()
    return losses


__all__ = [
    "FAST",
    "RNA",
    "TWO_PASS",
    "Controller",
    "RNATrainConfig",
    "load_rna",
    "save_rna",
    "shift_augmentation",
    "train_rna",
]
