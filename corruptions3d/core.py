"""The corruption registry and the argument checks every corruption shares.

A corruption is a pure function ``fn(rgb, *geometry, severity=None, params=None, generator=None) -> rgb``
on ``(B,3,H,W)`` float tensors in [0,1], registered once with its name, family, the domains it needs,
its severity table (1-5, the published values) and its continuous parameter ranges (for training-time
augmentation).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from corruptions3d import memory
from corruptions3d.random import Seeds, as_seeds

FAMILIES = ("3dcc", "imagenet_c")
CPU_CHUNK_PIXELS = 4 * 512 * 512
"""On the CPU a batch is corrupted in chunks of this many pixels (4 images of 512²); results are unchanged."""


@dataclass(frozen=True)
class Corruption:
    """One registered corruption.

    Attributes:
        name: registry name (also the output folder name).
        fn: the functional op.
        family: ``3dcc`` or ``imagenet_c``.
        requires: batch domains the op takes after ``rgb``, in argument order (``depth_euclidean``,
            ``reshading``, ``relighting``, ``intrinsics`` ...).
        severities: parameter name -> 5 values, severity 1..5.
        ranges: parameter name -> (low, high) for continuous sampling in training.
        stochastic: whether the output depends on the seed.
        video: needs a video codec (kept out of the fast suite).
    """

    name: str
    fn: Callable[..., torch.Tensor]
    family: str
    requires: tuple[str, ...] = ()
    severities: Mapping[str, tuple] = field(default_factory=dict)
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    stochastic: bool = False
    video: bool = False
    derivable: tuple[str, ...] = ()
    """Required domains that ``corruptions3d.geometry.derive`` can compute from depth + intrinsics."""
    optional: tuple[str, ...] = ()
    """Batch domains passed as keyword arguments when present (e.g. ``intrinsics``)."""
    all_severities: Callable[..., torch.Tensor] | None = None
    """Optional ``fn(rgb, *requires, severities=(...), generator=None, **optional) -> (B,S,3,H,W)``: several
    severities from one shared computation, column ``j`` identical to ``fn(..., severity=severities[j])``."""
    cpu_chunks: bool = True
    """Run CPU batches in chunks of :data:`CPU_CHUNK_PIXELS` (off for ops that already work image by image)."""

    def _inputs(self, batch: Mapping[str, torch.Tensor]) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        missing = [d for d in self.requires if d not in batch]
        if missing:
            raise ValueError(f"corruption {self.name!r} needs domain(s) {missing} in the batch (has {sorted(batch)})")
        return [batch[d] for d in self.requires], {d: batch[d] for d in self.optional if d in batch}

    def __call__(
        self,
        batch: Mapping[str, torch.Tensor],
        severity: int | None = None,
        params: Mapping[str, Any] | None = None,
        generator: Seeds = None,
    ) -> torch.Tensor:
        def run(sub: Mapping[str, Any], sub_params: Mapping[str, Any] | None, gen: Seeds) -> torch.Tensor:
            args, extra = self._inputs(sub)
            return self.fn(sub["rgb"], *args, severity=severity, params=sub_params, generator=gen, **extra)

        return self._in_chunks(run, batch, params, generator)

    def apply_severities(
        self, batch: Mapping[str, torch.Tensor], severities: Sequence[int], generator: Seeds = None
    ) -> torch.Tensor:
        """``(B,S,3,H,W)``: every one of ``severities`` with the same ``generator`` (shared work when possible)."""

        def run(sub: Mapping[str, Any], _: None, gen: Seeds) -> torch.Tensor:
            args, extra = self._inputs(sub)
            if self.all_severities is not None:
                return self.all_severities(sub["rgb"], *args, severities=tuple(severities), generator=gen, **extra)
            return torch.stack([self.fn(sub["rgb"], *args, severity=s, generator=gen, **extra) for s in severities], 1)

        return self._in_chunks(run, batch, None, generator)

    def _in_chunks(
        self,
        run: Callable[[Mapping[str, Any], Mapping[str, Any] | None, Seeds], torch.Tensor],
        batch: Mapping[str, Any],
        params: Mapping[str, Any] | None,
        generator: Seeds,
    ) -> torch.Tensor:
        """``run`` on the whole batch, or on the CPU in chunks of about :data:`CPU_CHUNK_PIXELS` pixels.

        Images are independent given their seeds, so the result is the same; on the CPU a few-image working set
        stays cache-resident.
        """
        rgb = batch["rgb"]
        b, n = rgb.shape[0], max(1, CPU_CHUNK_PIXELS // (rgb.shape[-1] * rgb.shape[-2]))
        if rgb.device.type != "cpu" or b <= n or not self.cpu_chunks or "scene" in self.requires or self.video:
            return run(batch, params, generator)
        seeds = as_seeds(generator, b) if self.stochastic else generator  # global positions, as one call draws them

        def part(values: Mapping[str, Any] | None, i: int) -> dict[str, Any] | None:
            per_image = lambda v: isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == b  # noqa: E731
            return None if values is None else {k: v[i : i + n] if per_image(v) else v for k, v in values.items()}

        gen = (lambda i: seeds[i : i + n]) if isinstance(seeds, torch.Tensor) else (lambda i: seeds)
        chunks = [run(part(batch, i), part(params, i), gen(i)) for i in range(0, b, n)]
        if torch.is_grad_enabled() and any(c.requires_grad for c in chunks):
            return torch.cat(chunks)
        return torch.cat(chunks, out=memory.empty((b, *chunks[0].shape[1:]), chunks[0].dtype))  # pooled


_REGISTRY: dict[str, Corruption] = {}


def register_corruption(
    name: str,
    *,
    family: str,
    requires: tuple[str, ...] = (),
    severities: Mapping[str, tuple] | None = None,
    ranges: Mapping[str, tuple[float, float]] | None = None,
    stochastic: bool = False,
    video: bool = False,
    derivable: tuple[str, ...] = (),
    optional: tuple[str, ...] = (),
    all_severities: Callable[..., torch.Tensor] | None = None,
    cpu_chunks: bool = True,
) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Decorator that registers a functional op under ``name`` (returns the op unchanged)."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    for k, v in (severities or {}).items():
        if len(v) != 5:
            raise ValueError(f"{name}: severity table for {k!r} must have 5 entries, has {len(v)}")

    def deco(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        if name in _REGISTRY:
            raise ValueError(f"corruption {name!r} is already registered")
        _REGISTRY[name] = Corruption(
            name,
            fn,
            family,
            tuple(requires),
            dict(severities or {}),
            dict(ranges or {}),
            stochastic,
            video,
            tuple(derivable),
            tuple(optional),
            all_severities,
            cpu_chunks,
        )
        return fn

    return deco


def list_corruptions(family: str | None = None, video: bool | None = None) -> list[str]:
    """Registered names in registration order; filter by ``family`` (``3dcc``/``imagenet_c``) or ``video``."""
    return [
        n
        for n, c in _REGISTRY.items()
        if (family is None or c.family == family) and (video is None or c.video == video)
    ]


def get_corruption(name: str) -> Corruption:
    """The registry entry for ``name``; unknown names raise ``KeyError`` listing what exists."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown corruption {name!r}; known: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def corrupt(
    batch: Mapping[str, torch.Tensor] | torch.Tensor,
    name: str,
    severity: int | None = None,
    params: Mapping[str, Any] | None = None,
    generator: Seeds = None,
) -> torch.Tensor:
    """Apply corruption ``name`` to a batch dict (or a bare ``(B,3,H,W)`` rgb tensor)."""
    if isinstance(batch, torch.Tensor):
        batch = {"rgb": batch}
    return get_corruption(name)(batch, severity=severity, params=params, generator=generator)


def check_rgb(rgb: torch.Tensor, name: str = "rgb") -> torch.Tensor:
    """Validate a ``(B,3,H,W)`` floating image batch in [0,1] (values are not clamped here)."""
    if not isinstance(rgb, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(rgb).__name__}")
    if rgb.dim() != 4 or rgb.shape[1] != 3:
        raise ValueError(f"{name} must have shape (B,3,H,W), got {tuple(rgb.shape)}")
    if not rgb.is_floating_point():
        raise ValueError(f"{name} must be a float tensor in [0,1], got {rgb.dtype}; divide uint8 by 255")
    return rgb


def check_geometry(rgb: torch.Tensor, t: torch.Tensor | None, name: str, channels: int | None = 1) -> torch.Tensor:
    """Validate a per-pixel geometry tensor ``(B,C,H,W)`` against ``rgb``; ``None`` raises a clear error."""
    if t is None:
        raise ValueError(f"this corruption needs {name!r}; none was given")
    if t.dim() != 4 or t.shape[0] != rgb.shape[0] or t.shape[-2:] != rgb.shape[-2:]:
        raise ValueError(f"{name} must have shape (B,C,H,W) matching rgb {tuple(rgb.shape)}, got {tuple(t.shape)}")
    if channels is not None and t.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channel(s), got {t.shape[1]}")
    return t.to(device=rgb.device, dtype=rgb.dtype) if t.is_floating_point() else t.to(rgb.device)


def check_severity(severity: int | None) -> int | None:
    if severity is None:
        return None
    if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= 5:
        raise ValueError(f"severity must be an integer 1..5, got {severity!r}")
    return severity


def resolve_params(
    table: Mapping[str, tuple],
    severity: int | None,
    params: Mapping[str, Any] | None,
    rgb: torch.Tensor,
) -> dict[str, Any]:
    """Parameters for one call: the severity row of ``table``, overridden by ``params``.

    Numeric values become per-image ``(B,)`` tensors on ``rgb``'s device (scalars are broadcast);
    anything else (tuples, strings) is passed through. At least one of severity/params is required.
    """
    severity = check_severity(severity)
    if severity is None and params is None:
        raise ValueError("give a severity (1..5) or explicit params")
    values: dict[str, Any] = {}
    if severity is not None:
        values = {k: v[severity - 1] for k, v in table.items()}
    if params is not None:
        unknown = set(params) - set(table)
        if unknown:
            raise ValueError(f"unknown parameter(s) {sorted(unknown)}; expected {sorted(table)}")
        values.update(params)
        if missing := set(table) - set(values):
            raise ValueError(f"missing parameter(s) {sorted(missing)} (no severity given)")
    b = rgb.shape[0]
    out: dict[str, Any] = {}
    for k, v in values.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = torch.full((b,), float(v), device=rgb.device, dtype=rgb.dtype)
        elif isinstance(v, torch.Tensor):
            v = v.to(device=rgb.device, dtype=rgb.dtype)
            out[k] = v.expand(b) if v.dim() == 0 else v
            if out[k].shape != (b,):
                raise ValueError(f"parameter {k!r} must be a scalar or a ({b},) tensor, got {tuple(v.shape)}")
        else:
            out[k] = v
    return out


def seeds_for(rgb: torch.Tensor, generator: Seeds) -> torch.Tensor:
    """Per-image int64 seeds for ``rgb``'s batch (see :func:`corruptions3d.random.as_seeds`)."""
    return as_seeds(generator, rgb.shape[0])


def per_image(p: torch.Tensor) -> torch.Tensor:
    """Reshape a ``(B,)`` parameter to ``(B,1,1,1)`` for broadcasting over images."""
    return p.view(-1, 1, 1, 1)
