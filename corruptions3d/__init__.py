"""corruptions3d: 3D Common Corruptions and ImageNet-C as batched torch ops (torch only; no other part of robust).

>>> import corruptions3d
>>> corruptions3d.list_corruptions("3dcc")
>>> out = corruptions3d.corrupt({"rgb": rgb, "depth_euclidean": depth}, "fog_3d", severity=3, generator=0)
"""

from corruptions3d import functional
from corruptions3d.core import (
    Corruption,
    corrupt,
    get_corruption,
    list_corruptions,
    register_corruption,
)

__all__ = ["Corruption", "corrupt", "functional", "get_corruption", "list_corruptions", "register_corruption"]
