"""Pinhole cameras fixated on a point, and their Taskonomy ``point_info`` (``fixatedpose``) JSON.

Frames: world z-up (metres). ``camera_to_world`` is a 4×4 whose rotation columns are the camera's OpenCV axes
(+x right, +y down, +z forward) in world coordinates and whose last column is the camera centre, so
``X_world = camera_to_world @ [X_cam, 1]``. ``camera_rotation_final`` is the Blender-style XYZ Euler angle
(rad) of the same camera in Blender's camera frame (+x right, +y up, looking down -z), as Taskonomy stores it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from robust.io import DataError, intrinsics_from_fov

_CV_TO_BLENDER = np.diag([1.0, -1.0, -1.0])
FOV_RANGE_DEG = (45.0, 90.0)
"""Horizontal field of view of generated views, sampled uniformly (degrees)."""


@dataclass(frozen=True)
class Camera:
    """A camera at ``location`` (m) with OpenCV-frame rotation ``rotation`` (3×3, camera-to-world, row-major
    tuples), horizontal field of view ``fov`` (rad), looking at the fixation ``point`` (m)."""

    location: tuple[float, float, float]
    rotation: tuple[tuple[float, float, float], ...]
    fov: float
    point: tuple[float, float, float]
    point_id: int = 0
    view_id: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.fov < np.pi:
            raise ValueError(f"Camera.fov: field of view must be in (0, π) rad, got {self.fov}")

    @classmethod
    def look_at(cls, location, point, fov: float, point_id: int = 0, view_id: int = 0, roll: float = 0.0) -> Camera:
        """Camera at ``location`` whose optical axis passes through ``point`` with world z up in the image,
        then rolled by ``roll`` rad about the optical axis."""
        loc, pt = np.asarray(location, np.float64), np.asarray(point, np.float64)
        fwd = pt - loc
        if np.linalg.norm(fwd) < 1e-9:
            raise ValueError("Camera.look_at: location and point coincide")
        fwd /= np.linalg.norm(fwd)
        right = np.cross(fwd, [0.0, 0.0, 1.0])
        if np.linalg.norm(right) < 1e-6:
            raise ValueError("Camera.look_at: looking straight up or down leaves the image rotation undefined")
        right /= np.linalg.norm(right)
        down = np.cross(fwd, right)
        c, s = np.cos(roll), np.sin(roll)
        right, down = c * right + s * down, -s * right + c * down
        rot = np.stack([right, down, fwd], axis=1)
        return cls(_tup(loc), tuple(_tup(r) for r in rot), float(fov), _tup(pt), point_id, view_id)

    @property
    def camera_to_world(self) -> np.ndarray:
        """``(4,4)`` float64, OpenCV camera frame -> world."""
        m = np.eye(4)
        m[:3, :3] = np.asarray(self.rotation)
        m[:3, 3] = self.location
        return m

    def intrinsics(self, size: int) -> torch.Tensor:
        """``(3,3)`` pixels for a ``size``×``size`` image (principal point at the centre)."""
        return intrinsics_from_fov(self.fov, size, size)

    def to_point_info(self, size: int, building: str = "") -> dict:
        """Taskonomy ``fixatedpose`` fields plus ``camera_to_world`` (see the module docstring)."""
        euler = Rotation.from_matrix(np.asarray(self.rotation) @ _CV_TO_BLENDER).as_euler("xyz")
        return {
            "building": building,
            "point_id": self.point_id,
            "view_id": self.view_id,
            "field_of_view_rads": self.fov,
            "resolution": size,
            "camera_location": list(self.location),
            "camera_rotation_final": [float(a) for a in euler],
            "point_location": list(self.point),
            "camera_to_world": self.camera_to_world.tolist(),
            "camera_frame": "opencv: +x right, +y down, +z forward; world z up; metres",
        }

    @classmethod
    def from_point_info(cls, info: dict) -> Camera:
        """Inverse of :meth:`to_point_info`; uses ``camera_to_world`` when present, else the Blender Euler."""
        try:
            if "camera_to_world" in info:
                rot = np.asarray(info["camera_to_world"], np.float64)[:3, :3]
            else:
                rot = Rotation.from_euler("xyz", info["camera_rotation_final"]).as_matrix() @ _CV_TO_BLENDER
            return cls(
                _tup(info["camera_location"]),
                tuple(_tup(r) for r in rot),
                float(info["field_of_view_rads"]),
                _tup(info["point_location"]),
                int(info.get("point_id", 0)),
                int(info.get("view_id", 0)),
            )
        except KeyError as e:
            raise DataError(f"point_info lacks field {e.args[0]!r} needed to rebuild the camera") from None


def _tup(v) -> tuple[float, ...]:
    return tuple(float(x) for x in v)
