"""Procedural indoor scenes: a closed room and furniture built from boxes, cylinders and spheres.

World frame: z up, metres; the room spans ``[0, Lx] × [0, Ly] × [0, Lz]``. A scene is a frozen (hashable)
dataclass, serialised as ``<root>/<building>/scene.json`` and fully determined by its seed.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from robust.io import DataError, atomic_write_text

CLASS_NAMES: tuple[str, ...] = (
    "uncertain",
    "room",
    "table",
    "chair",
    "cabinet",
    "couch",
    "lamp",
    "ball",
    "bin",
    "picture",
    "rug",
)
"""Semantic class names by id (Taskonomy-like: 0 = uncertain, never written for valid pixels; 1 = room
structure (walls, floor, ceiling); 2.. = object classes)."""
CLASS_IDS: dict[str, int] = {n: i for i, n in enumerate(CLASS_NAMES)}
PATTERNS = ("checker", "stripes", "noise")
"""Procedural texture patterns (see :mod:`robust.synth.textures`)."""
KINDS = ("box", "cylinder", "sphere")


@dataclass(frozen=True)
class Texture:
    """Procedural albedo: ``pattern`` mixes ``color_a``/``color_b`` (RGB in [0,1]) at spatial period ``scale`` m."""

    pattern: str
    color_a: tuple[float, float, float]
    color_b: tuple[float, float, float]
    scale: float
    seed: int


@dataclass(frozen=True)
class Primitive:
    """One solid: ``kind`` in :data:`KINDS`, centred at ``center`` (m), full extents ``size`` (m, local x, y, z;
    cylinders and spheres use ``size[0]`` as diameter), rotated by ``yaw`` (rad) about world z.

    ``inward=True`` flips the surface to face inside (the room box). ``object_id`` groups the parts of one
    piece of furniture; ``class_id`` indexes :data:`CLASS_NAMES`.
    """

    kind: str
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    yaw: float
    class_id: int
    object_id: int
    texture: Texture
    inward: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Primitive.kind: unknown kind {self.kind!r}; expected one of {KINDS}")
        if min(self.size) <= 0:
            raise ValueError(f"Primitive.size: extents must be positive, got {self.size}")
        if not 0 < self.class_id < len(CLASS_NAMES):
            raise ValueError(f"Primitive.class_id: {self.class_id} is not in 1..{len(CLASS_NAMES) - 1}")

    def to_local(self, points: np.ndarray) -> np.ndarray:
        """World points ``(N,3)`` -> the primitive's local frame ``(N,3)`` (centred, yaw undone)."""
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        d = np.asarray(points, np.float64) - np.asarray(self.center)
        return np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]], axis=1)

    def contains(self, points: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """Bool ``(N,)``: points inside the solid grown by ``margin`` m (for ``inward``: outside it shrunk by
        ``margin``, i.e. not in the room's free space)."""
        q = self.to_local(points)
        half = np.asarray(self.size) / 2
        if self.inward:
            return np.any(np.abs(q) > half - margin, axis=1)
        if self.kind == "box":
            return np.all(np.abs(q) < half + margin, axis=1)
        if self.kind == "cylinder":
            return (np.hypot(q[:, 0], q[:, 1]) < half[0] + margin) & (np.abs(q[:, 2]) < half[2] + margin)
        return np.linalg.norm(q, axis=1) < half[0] + margin


@dataclass(frozen=True)
class Scene:
    """A room with furniture. ``light`` is the ceiling lamp used for ``rgb`` (world, m)."""

    seed: int
    room: tuple[float, float, float]
    light: tuple[float, float, float]
    primitives: tuple[Primitive, ...] = field(default=())

    def free(self, points: np.ndarray, margin: float) -> np.ndarray:
        """Bool ``(N,)``: points at least ``margin`` m away from every solid, inside the room."""
        return free_space(self.primitives, points, margin)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Scene:
        d = json.loads(text)
        prims = tuple(
            Primitive(
                **{
                    **p,
                    "center": tuple(p["center"]),
                    "size": tuple(p["size"]),
                    "texture": _texture(p["texture"]),
                }
            )
            for p in d["primitives"]
        )
        return cls(int(d["seed"]), tuple(d["room"]), tuple(d["light"]), prims)


def _texture(d: dict) -> Texture:
    return Texture(d["pattern"], tuple(d["color_a"]), tuple(d["color_b"]), float(d["scale"]), int(d["seed"]))


def free_space(primitives: tuple[Primitive, ...], points: np.ndarray, margin: float) -> np.ndarray:
    """Bool ``(N,)``: world points ``(N,3)`` at least ``margin`` m outside every solid (inside inward ones)."""
    points = np.asarray(points, np.float64)
    occupied = np.zeros(len(points), bool)
    for p in primitives:
        occupied |= p.contains(points, margin)
    return ~occupied


SCENE_FILE = "scene.json"


def save_scene(root: str | os.PathLike, building: str, scene: Scene) -> Path:
    """Write ``<root>/<building>/scene.json`` atomically."""
    return atomic_write_text(Path(root) / building / SCENE_FILE, scene.to_json())


def load_scene(root: str | os.PathLike, building: str) -> Scene:
    """Read ``<root>/<building>/scene.json``; :class:`robust.io.DataError` names the file on failure."""
    path = Path(root) / building / SCENE_FILE
    try:
        return Scene.from_json(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: scene file not found (generate the building with robust.synth)") from None
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{path}: invalid scene description ({type(e).__name__}: {e})") from e


def _random_texture(rng: np.random.Generator, pattern: str | None = None, scale: tuple = (0.1, 0.5)) -> Texture:
    a = rng.uniform(0.15, 0.95, 3)
    b = np.clip(a * rng.uniform(0.3, 0.8) + rng.uniform(-0.15, 0.15, 3), 0.02, 1.0)
    return Texture(
        pattern or PATTERNS[rng.integers(len(PATTERNS))],
        tuple(float(v) for v in a),
        tuple(float(v) for v in b),
        float(rng.uniform(*scale)),
        int(rng.integers(2**31)),
    )


def _furniture(
    rng: np.random.Generator, kind: str, xy: np.ndarray, yaw: float, obj: int, tex: Texture
) -> list[Primitive]:
    """Primitives of one piece of furniture standing on the floor at ``xy`` (or on a wall, for pictures)."""
    cid = CLASS_IDS[kind]
    x, y = float(xy[0]), float(xy[1])
    c, s = math.cos(yaw), math.sin(yaw)

    def part(k: str, local: tuple[float, float, float], size: tuple[float, float, float]) -> Primitive:
        lx, ly, lz = local
        return Primitive(k, (x + c * lx - s * ly, y + s * lx + c * ly, lz), size, yaw, cid, obj, tex)

    if kind in ("table", "chair"):
        w, d = (rng.uniform(0.8, 1.6), rng.uniform(0.6, 1.0)) if kind == "table" else (0.45, 0.45)
        h = rng.uniform(0.68, 0.8) if kind == "table" else 0.45
        leg = 0.05
        parts = [part("box", (0, 0, h - 0.025), (w, d, 0.05))]
        parts += [
            part("box", (sx * (w / 2 - leg), sy * (d / 2 - leg), (h - 0.05) / 2), (leg, leg, h - 0.05))
            for sx in (-1, 1)
            for sy in (-1, 1)
        ]
        if kind == "chair":
            parts.append(part("box", (0, d / 2 - 0.025, h + 0.25), (w, 0.05, 0.5)))
        return parts
    if kind == "cabinet":
        w, d, h = rng.uniform(0.5, 1.2), rng.uniform(0.35, 0.6), rng.uniform(0.8, 2.0)
        return [part("box", (0, 0, h / 2), (w, d, h))]
    if kind == "couch":
        w, d = rng.uniform(1.4, 2.2), rng.uniform(0.8, 1.0)
        return [part("box", (0, 0, 0.22), (w, d, 0.44)), part("box", (0, d / 2 - 0.1, 0.6), (w, 0.2, 0.4))]
    if kind == "lamp":
        h = rng.uniform(1.2, 1.7)
        return [part("cylinder", (0, 0, h / 2), (0.05, 0.05, h)), part("sphere", (0, 0, h + 0.15), (0.3, 0.3, 0.3))]
    if kind == "ball":
        r = rng.uniform(0.15, 0.4)
        return [part("sphere", (0, 0, r), (2 * r, 2 * r, 2 * r))]
    if kind == "bin":
        r, h = rng.uniform(0.15, 0.35), rng.uniform(0.3, 1.1)
        return [part("cylinder", (0, 0, h / 2), (2 * r, 2 * r, h))]
    if kind == "rug":
        return [part("box", (0, 0, 0.005), (rng.uniform(1.0, 2.5), rng.uniform(0.8, 1.8), 0.01))]
    raise ValueError(f"unknown furniture kind {kind!r}")


def sample_scene(seed: int, n_objects: tuple[int, int] = (6, 12)) -> Scene:
    """A random room (4–8 × 3.5–7 × 2.5–3.2 m) with ``n_objects`` pieces of furniture; same seed, same scene."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5C3E]))
    lx, ly, lz = rng.uniform(4, 8), rng.uniform(3.5, 7), rng.uniform(2.5, 3.2)
    room = (float(lx), float(ly), float(lz))
    # The room box reaches 5 cm below the floor slab's top (z = 0) so that the floor is never z-fighting.
    walls = Primitive(
        "box",
        (lx / 2, ly / 2, (lz - 0.05) / 2),
        (lx, ly, lz + 0.05),
        0.0,
        1,
        0,
        _random_texture(rng, "stripes", (0.2, 0.6)),
        inward=True,
    )
    floor = Primitive("box", (lx / 2, ly / 2, -0.05), (lx, ly, 0.1), 0.0, 1, 0, _random_texture(rng, "checker"))
    prims = [walls, floor]
    floor_kinds = ("table", "chair", "cabinet", "couch", "lamp", "ball", "bin", "rug")
    for obj in range(1, int(rng.integers(n_objects[0], n_objects[1] + 1)) + 1):
        tex = _random_texture(rng)
        if rng.uniform() < 0.15:  # a picture on a wall
            wall = int(rng.integers(4))
            along = rng.uniform(0.6, (lx if wall < 2 else ly) - 0.6)
            w, h, z = rng.uniform(0.4, 1.2), rng.uniform(0.3, 0.9), rng.uniform(1.2, 1.8)
            xy = [(along, 0.01), (along, ly - 0.01), (0.01, along), (lx - 0.01, along)][wall]
            yaw = 0.0 if wall < 2 else math.pi / 2
            prims.append(Primitive("box", (xy[0], xy[1], z), (w, 0.02, h), yaw, CLASS_IDS["picture"], obj, tex))
            continue
        kind = floor_kinds[int(rng.integers(len(floor_kinds)))]
        xy = rng.uniform([0.6, 0.6], [lx - 0.6, ly - 0.6])
        yaw = float(rng.integers(4) * math.pi / 2 + rng.normal(0, 0.2))
        prims += _furniture(rng, kind, xy, yaw, obj, tex)
    light = (float(rng.uniform(0.3, 0.7) * lx), float(rng.uniform(0.3, 0.7) * ly), float(lz - 0.3))
    return Scene(seed, room, light, tuple(prims))
