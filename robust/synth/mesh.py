"""Triangle meshes of scene primitives and the compiled open3d ray-casting scene (cached per scene)."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import open3d as o3d

from robust.synth.scene import Primitive, Scene, Texture, free_space

SEGMENTS = 48
"""Facets around cylinders and spheres (sphere rings: ``SEGMENTS // 2``)."""


def _box(half: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    verts, norms, tris = [], [], []
    for axis in range(3):
        u, v = (axis + 1) % 3, (axis + 2) % 3
        for sign in (-1.0, 1.0):
            n = np.zeros(3)
            n[axis] = sign
            for cu, cv in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
                p = n * half[axis]
                p[u], p[v] = cu * half[u], cv * half[v]
                verts.append(p)
                norms.append(n)
            b = len(verts) - 4
            tris += [(b, b + 1, b + 2), (b, b + 2, b + 3)]
    return np.array(verts), np.array(norms), np.array(tris)


def _cylinder(r: float, hh: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = np.arange(SEGMENTS) * (2 * math.pi / SEGMENTS)
    ring = np.stack([np.cos(a), np.sin(a), np.zeros_like(a)], axis=1)
    nxt = (np.arange(SEGMENTS) + 1) % SEGMENTS
    i = np.arange(SEGMENTS)
    side_v = np.concatenate([ring * r - [0, 0, hh], ring * r + [0, 0, hh]])
    side_n = np.concatenate([ring, ring])
    side_t = np.concatenate([np.stack([i, nxt, SEGMENTS + nxt], 1), np.stack([i, SEGMENTS + nxt, SEGMENTS + i], 1)])
    verts, norms, tris = [side_v], [side_n], [side_t]
    for z in (-hh, hh):
        base = sum(len(v) for v in verts)
        verts.append(np.concatenate([[[0, 0, z]], ring * r + [0, 0, z]]))
        norms.append(np.tile([0, 0, np.sign(z)], (SEGMENTS + 1, 1)))
        tris.append(np.stack([np.zeros(SEGMENTS, int), 1 + i, 1 + nxt], 1) + base)
    return np.concatenate(verts), np.concatenate(norms), np.concatenate(tris)


def _sphere(r: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rings = SEGMENTS // 2
    th = np.arange(rings + 1) * (math.pi / rings)
    ph = np.arange(SEGMENTS) * (2 * math.pi / SEGMENTS)
    t, p = np.meshgrid(th, ph, indexing="ij")
    n = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], axis=-1).reshape(-1, 3)
    idx = np.arange((rings + 1) * SEGMENTS).reshape(rings + 1, SEGMENTS)
    a, b = idx[:-1], idx[1:]
    a2, b2 = np.roll(a, -1, axis=1), np.roll(b, -1, axis=1)
    tris = np.concatenate([np.stack([a, b, b2], -1).reshape(-1, 3), np.stack([a, b2, a2], -1).reshape(-1, 3)])
    v = n[tris]
    area = np.linalg.norm(np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]), axis=1)
    return n * r, n, tris[area > 1e-12]  # drop the degenerate triangles at the poles


def primitive_mesh(prim: Primitive) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World-space ``(vertices (V,3), smooth vertex normals (V,3), triangles (T,3))``; triangles wound so that
    their normals point out of the solid (into the room for ``inward``)."""
    half = np.asarray(prim.size, np.float64) / 2
    if prim.kind == "box":
        v, n, t = _box(half)
    elif prim.kind == "cylinder":
        v, n, t = _cylinder(half[0], half[2])
    else:
        v, n, t = _sphere(half[0])
    face = np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])
    outward = (face * v[t].mean(1)).sum(1) > 0
    t = np.where(outward[:, None], t, t[:, ::-1])
    if prim.inward:
        t, n = t[:, ::-1], -n
    c, s = math.cos(prim.yaw), math.sin(prim.yaw)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    return v @ rot.T + np.asarray(prim.center), n @ rot.T, t


@dataclass
class RayScene:
    """A scene compiled for ray casting: one triangle soup and per-triangle lookup tables.

    ``primitives`` are the scene's followed by any extra objects; ``tri_primitive`` maps a triangle to its
    index there, ``tri_normal`` ``(T,3)`` is the unit face normal, ``tri_vertex_normals`` ``(T,3,3)`` the
    smooth normals at its corners (world frame).

    ``occluders`` holds only the solids that reach into the room's open interior ``(0,Lx)×(0,Ly)×(0,Lz)``: a
    segment between two points inside the (convex) room cannot cross the room box itself or a solid outside
    the interior (the floor slab), so shadow rays from visible surfaces to lamps in the room are tested
    against it; skipping the room-sized triangles makes those tests cheaper with identical results.
    """

    scene: Scene
    primitives: tuple[Primitive, ...]
    raycaster: o3d.t.geometry.RaycastingScene
    occluders: o3d.t.geometry.RaycastingScene
    tri_primitive: np.ndarray
    tri_normal: np.ndarray
    tri_vertex_normals: np.ndarray

    @property
    def textures(self) -> list[Texture]:
        return [p.texture for p in self.primitives]

    def free(self, points: np.ndarray, margin: float) -> np.ndarray:
        """Bool ``(N,)``: points at least ``margin`` m outside every solid (extra objects included)."""
        return free_space(self.primitives, points, margin)


def _raycaster(verts: list[np.ndarray], tris: list[np.ndarray]) -> o3d.t.geometry.RaycastingScene:
    """Ray-casting scene of the meshes ``verts[i]`` ``(V,3)``, ``tris[i]`` ``(T,3)`` (indices per mesh)."""
    base = np.cumsum([0] + [len(v) for v in verts[:-1]])
    rc = o3d.t.geometry.RaycastingScene()
    rc.add_triangles(
        o3d.core.Tensor(np.concatenate(verts).astype(np.float32)),
        o3d.core.Tensor(np.concatenate([t + b for t, b in zip(tris, base)]).astype(np.uint32)),
    )
    return rc


def _reaches_interior(verts: np.ndarray, room: tuple[float, float, float]) -> bool:
    """Whether a solid with vertices ``(V,3)`` (its bounding box) overlaps the open room interior."""
    return bool(np.all(verts.max(0) > 0) and np.all(verts.min(0) < np.asarray(room)))


@functools.lru_cache(maxsize=8)
def compile_scene(scene: Scene, extra_objects: tuple[Primitive, ...] = ()) -> RayScene:
    """Build (and cache) the ray-casting scene for ``scene`` plus ``extra_objects``."""
    prims = tuple(scene.primitives) + tuple(extra_objects)
    meshes = [primitive_mesh(p) for p in prims]
    verts, vnorm, tris = ([m[k] for m in meshes] for k in range(3))
    base = np.cumsum([0] + [len(v) for v in verts[:-1]])
    owner = np.concatenate([np.full(len(t), i, np.int64) for i, t in enumerate(tris)])
    v, n = np.concatenate(verts), np.concatenate(vnorm)
    t = np.concatenate([t + b for t, b in zip(tris, base)])
    face = np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])
    face /= np.linalg.norm(face, axis=1, keepdims=True)
    inner = [i for i, p in enumerate(prims) if not p.inward and _reaches_interior(verts[i], scene.room)]
    occluders = _raycaster([verts[i] for i in inner], [tris[i] for i in inner])
    rc = _raycaster(verts, tris)
    return RayScene(scene, prims, rc, occluders, owner, face.astype(np.float32), n[t].astype(np.float32))


def compile_for(scene: Scene, extra_objects: Sequence[Primitive] = ()) -> RayScene:
    """:func:`compile_scene` accepting any sequence of extra objects."""
    return compile_scene(scene, tuple(extra_objects))
