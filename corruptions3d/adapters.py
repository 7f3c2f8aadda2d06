"""Adapter for numpy pipelines: any registered corruption as an albumentations transform.

>>> import albumentations as A
>>> t = A.Compose([Corrupt("fog_3d", severity=3)], additional_targets={"depth": "mask"})
>>> out = t(image=rgb_uint8_hwc, depth=depth_metres_hw)["image"]

Geometry comes in as extra targets named like the domains' short names (``depth`` for Euclidean depth
in metres, ``reshading``, ``relighting`` as ``(H,W,K)``), declared as ``mask`` targets so spatial
transforms move them with the image.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import numpy as np
import torch

from corruptions3d.core import get_corruption

_TARGETS = {"depth": "depth_euclidean", "reshading": "reshading", "relighting": "relighting"}


def _to_chw(a: np.ndarray) -> torch.Tensor:
    a = a[..., None] if a.ndim == 2 else a
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float()


class Corrupt(A.ImageOnlyTransform):
    """Apply corruption ``name`` to a uint8 ``(H,W,3)`` image; ``severity`` is an int or an inclusive range.

    ``seed`` makes every call reproducible (the same image and seed give the same output); ``None`` draws
    a fresh seed per call from numpy's global generator, as albumentations transforms usually do.
    """

    def __init__(self, name: str, severity: int | tuple[int, int] = (1, 5), seed: int | None = None, p: float = 1.0):
        super().__init__(p=p)
        self.corruption = get_corruption(name)
        self.severity = (severity, severity) if isinstance(severity, int) else tuple(severity)
        if not 1 <= self.severity[0] <= self.severity[1] <= 5:
            raise ValueError(f"severity must be in 1..5 (or a range within it), got {severity}")
        self.seed = seed

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        rng = np.random.default_rng(self.seed)
        geometry = {domain: data[t] for t, domain in _TARGETS.items() if t in data}
        return {
            "severity": int(rng.integers(self.severity[0], self.severity[1] + 1)),
            "seed": int(rng.integers(0, 2**62)),
            "geometry": geometry,
        }

    def apply(self, img: np.ndarray, severity: int = 1, seed: int = 0, geometry=None, **params) -> np.ndarray:
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] != 3:
            raise ValueError(f"Corrupt expects a uint8 (H,W,3) image, got {img.dtype} {img.shape}")
        batch = {"rgb": _to_chw(img) / 255.0}
        for domain, a in (geometry or {}).items():
            batch[domain] = _to_chw(np.asarray(a, dtype=np.float32))
        missing = [d for d in self.corruption.requires if d not in batch]
        if missing:
            raise ValueError(
                f"{self.corruption.name} needs {missing}: pass them as extra targets "
                f"({', '.join(t for t, d in _TARGETS.items() if d in missing)}) declared with additional_targets"
            )
        out = self.corruption(batch, severity=severity, generator=torch.tensor([seed]))
        return (out[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("severity", "seed")
