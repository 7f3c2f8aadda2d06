"""Functional corruption ops on ``(B,3,H,W)`` tensors in [0,1], any device.

Each op: ``name(rgb, *geometry, severity=None, params=None, generator=None) -> (B,3,H,W)``.

Import order is registration order, i.e. the order of ``list_corruptions()``: the 3D Common Corruptions
in the reference's generation order (depth of field, motion, fog, sensor, lighting, video), then the
view and scene changes, then ImageNet-C in the ``imagecorruptions`` order.
"""
# ruff: noqa: I001

from corruptions3d.functional.defocus import *  # noqa: F403
from corruptions3d.functional.motion import *  # noqa: F403
from corruptions3d.functional.fog import *  # noqa: F403
from corruptions3d.functional.sensor import *  # noqa: F403
from corruptions3d.functional.lighting import *  # noqa: F403
from corruptions3d.functional.video import *  # noqa: F403
from corruptions3d.functional.camera import *  # noqa: F403
from corruptions3d.functional.scene import *  # noqa: F403
from corruptions3d.functional.imagenet_c import *  # noqa: F403
from corruptions3d.functional.noise import *  # noqa: F403
from corruptions3d.functional.blur import *  # noqa: F403
from corruptions3d.functional.weather import *  # noqa: F403
from corruptions3d.functional.digital import *  # noqa: F403
