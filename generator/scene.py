"""Scene descriptions: the plain-data ``SceneSpec`` of one sequence, drawn by ``make_spec``, and its poses.

A SceneSpec holds names and numbers only (mesh file paths, primitive dimensions, trajectory keyframes, camera
parameters, the sensor config, the seed), never trimesh objects: a build task draws it from (config, seed) and passes it on (kubric's split:
the scene is data, the renderer a view of it). Everything random about a sequence is drawn here, from
``np.random.default_rng(seed)``; ``generate_sequence`` only adds the sensor noise and point sampling, from a
second stream of the same seed.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from synthseq.generator.assets import (ObjectSpec, check_mesh_file, list_mesh_files, mesh_radius, primitive_radius,
                                       resting_height, safe_name, sample_primitive)
from synthseq.generator.cameras import CameraSpec, sample_camera_spec
from synthseq.generator.config import GenerateConfig
from synthseq.generator.trajectories import Trajectory, sample_trajectory

logger = logging.getLogger(__name__)


def sequence_seed(root_seed: int, index: int) -> int:
    """The seed of sequence ``index`` of a build with root seed ``root_seed``: a stable hash, in [0, 2**63).

    SHA-256 of ``"synthseq-sequence:{root_seed}:{index}"``, so it is the same on every machine, Python version
    and worker (Python's ``hash()`` is salted per process).
    """
    digest = hashlib.sha256(f"synthseq-sequence:{int(root_seed)}:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@dataclass(frozen=True)
class StaticPart:
    """A static piece of an indoor scene (furniture part or clutter) as plain data: background, label -1.

    Args:
        obj: its :class:`~synthseq.generator.assets.ObjectSpec` (a primitive or a mesh file).
        world_from_object: 16 floats, row-major 4x4.
    """

    obj: ObjectSpec
    world_from_object: tuple

    def pose(self) -> np.ndarray:
        """(4, 4) float64 world_from_object."""
        return np.asarray(self.world_from_object, dtype=np.float64).reshape(4, 4)


@dataclass(frozen=True)
class SceneSpec:
    """Everything needed to generate one sequence, as plain data (small, picklable, hashable).

    Args:
        name: the sequence name (``"{index:06d}"``).
        index, root_seed: where it comes from; seed = sequence_seed(root_seed, index).
        seed: the sequence's seed (stored in the output).
        num_frames, fps, num_points: T, frame rate, N.
        objects: K :class:`~synthseq.generator.assets.ObjectSpec`.
        trajectories: K :class:`~synthseq.generator.trajectories.Trajectory` (world_from_object).
        room_size: (x, y, z) interior of the room, or None for no room.
        room_ceiling: whether the room has a ceiling.
        cameras: the :class:`~synthseq.generator.cameras.CameraSpec` (V views).
        renderer: "raycast" or "pyrender".
        sensor: a :class:`~synthseq.generator.sensor.SensorConfig`.
        store_normals, store_depth, store_instance: which optional arrays to return.
        static_parts: :class:`StaticPart` furniture and clutter of an indoor scene (background, label -1).
    """

    name: str
    index: int
    root_seed: int
    seed: int
    num_frames: int
    fps: float
    num_points: int
    objects: tuple
    trajectories: tuple
    room_size: tuple | None
    room_ceiling: bool
    cameras: CameraSpec
    renderer: str
    sensor: Any
    store_normals: bool = True
    store_depth: bool = False
    store_instance: bool = False
    static_parts: tuple = ()

    @property
    def num_views(self) -> int:
        return self.cameras.num_views

    @property
    def num_objects(self) -> int:
        return len(self.objects)

    @property
    def object_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.objects)

    def times(self) -> np.ndarray:
        """(T,) float64 frame timestamps t / fps, seconds."""
        return np.arange(self.num_frames, dtype=np.float64) / float(self.fps)

    def object_poses(self) -> np.ndarray:
        """(T, K, 4, 4) float64 world_from_object of every object at every frame."""
        t = self.times()
        out = np.zeros((len(t), len(self.trajectories), 4, 4))
        for k, traj in enumerate(self.trajectories):
            out[:, k] = traj.poses(t)
        return out

    def camera_poses(self) -> np.ndarray:
        """(T, V, 4, 4) float64 world_from_camera, OpenCV axes."""
        return self.cameras.poses(self.times())

    def static_geometry(self):
        """The static parts merged into one world-frame mesh: (vertices (M, 3) float64, faces (F, 3) int64), or
        None when there are none. The room is not included (see ``room_geometry``)."""
        from synthseq.generator.assets import object_geometry
        from synthseq.geometry import matmul

        if not self.static_parts:
            return None
        vertices, faces, offset = [], [], 0
        for part in self.static_parts:
            v, f = object_geometry(part.obj)
            pose = part.pose()
            vertices.append(matmul(v, pose[:3, :3].T) + pose[:3, 3])
            faces.append(f + offset)
            offset += len(v)
        return np.concatenate(vertices), np.concatenate(faces)

    def static_key(self) -> str:
        """A renderer cache key for :meth:`static_geometry` (a digest of the static parts)."""
        return "static_" + hashlib.sha1(repr(self.static_parts).encode()).hexdigest()[:16]


def static_render_meshes(spec: SceneSpec) -> list:
    """The static furniture and clutter of ``spec`` as render meshes: [] or one world-frame
    :class:`~synthseq.generator.render.base.RenderMesh` with instance -1 and an identity pose."""
    geometry = spec.static_geometry()
    if geometry is None:
        return []
    from synthseq.generator.render.base import RenderMesh
    from synthseq.types import BACKGROUND_LABEL

    return [RenderMesh(geometry[0], geometry[1], np.eye(4), BACKGROUND_LABEL, key=spec.static_key())]


def _mesh_files(cfg: GenerateConfig) -> tuple[str, ...]:
    o = cfg.objects
    files: list[str] = []
    if o.mesh_dir:
        files.extend(list_mesh_files(o.mesh_dir))
    files.extend(check_mesh_file(p, f"generate.objects.mesh_files[{i}]") for i, p in enumerate(o.mesh_files))
    return tuple(files)


def object_bounds(cfg: GenerateConfig, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Box (lo, hi) for the origin of an object of bounding radius ``radius``: inside ``objects.region`` and
    inside the room (with ``room.margin``), above the floor plane z = 0."""
    o, r = cfg.objects, cfg.room
    hx, hy, top = 0.5 * o.region[0], 0.5 * o.region[1], o.region[2]
    margin = 0.0
    if r.enabled:
        hx, hy, top = min(hx, 0.5 * r.size[0]), min(hy, 0.5 * r.size[1]), min(top, r.size[2])
        margin = r.margin
    c = radius + margin
    lo = np.array([-hx + c, -hy + c, c])
    hi = np.array([hx - c, hy - c, top - c])
    # Config validation guarantees lo <= hi for the largest size; guard rounding anyway.
    mid = 0.5 * (lo + hi)
    return np.minimum(lo, mid), np.maximum(hi, mid)


def _clearance(positions: np.ndarray, radius: float, centres: list, radii: list) -> float:
    """Smallest gap in metres, over frames and earlier objects, between bounding spheres (negative = overlap).

    Args:
        positions: (T, 3) the new object's origin. centres: earlier objects' (T, 3). radii: their radii.
    """
    others = np.stack(centres)  # (J, T, 3)
    gaps = np.sqrt(((others - positions[None]) ** 2).sum(-1)) - (np.asarray(radii)[:, None] + radius)
    return float(gaps.min())


def resting_trajectory(lo, hi, height: float, rng: np.random.Generator) -> Trajectory:
    """A static pose on the floor: origin at a random (x, y) in [lo, hi], z = ``height``, random yaw."""
    x, y = rng.uniform(np.asarray(lo)[:2], np.asarray(hi)[:2])
    yaw = float(rng.uniform(-np.pi, np.pi))
    return Trajectory(times=(0.0,), positions=((float(x), float(y), float(height)),), rotvecs=((0.0, 0.0, 0.0),),
                      base_rotvec=(0.0, 0.0, yaw), kind="static")


def make_spec(cfg: GenerateConfig, root_seed: int, index: int) -> SceneSpec:
    """Draw the scene of sequence ``index``: objects, their trajectories, the cameras. Cheap and deterministic.

    ``generate.scene: indoor`` draws a furnished room instead (:func:`synthseq.generator.indoor.make_indoor_spec`).

    Mesh files are listed (sorted by name) and loaded through the per-process cache (to validate them and
    measure their bounding radius), so a missing or broken mesh fails here, before any rendering.

    Args:
        cfg: the ``generate`` config.
        root_seed: the build's root seed.
        index: the sequence index (>= 0).

    Returns:
        A :class:`SceneSpec` with seed ``sequence_seed(root_seed, index)``.

    Raises:
        FileNotFoundError: a mesh folder or file is missing (naming the key and the path).
        DataError: a mesh file is unreadable or has no faces (naming the file).
    """
    if cfg.scene == "indoor":
        from synthseq.generator.indoor import make_indoor_spec

        return make_indoor_spec(cfg, root_seed, index)
    if int(index) < 0:
        raise ValueError(f"make_spec: index must be >= 0, got {index}")
    seed = sequence_seed(root_seed, index)
    rng = np.random.default_rng(seed)
    o = cfg.objects
    files = _mesh_files(cfg)
    K = int(rng.integers(o.count[0], o.count[1] + 1))
    times = np.arange(cfg.num_frames, dtype=np.float64) / cfg.fps
    objects, trajectories = [], []
    centres: list[np.ndarray] = []  # (T, 3) per placed object, for ``objects.separate``
    radii: list[float] = []
    for k in range(K):
        size = float(rng.uniform(o.size[0], o.size[1]))
        use_mesh = bool(files) and (not o.primitives or rng.random() < o.mesh_ratio)
        if use_mesh:
            path = files[int(rng.integers(len(files)))]
            shape = safe_name(path.rsplit("/", 1)[-1].rsplit(".", 1)[0])
            radius = mesh_radius(path, o.mesh_detail, "quadric") * size
            params: tuple = ()
        else:
            shape = o.primitives[int(rng.integers(len(o.primitives)))]
            params = sample_primitive(shape, size, rng)
            radius = primitive_radius(shape, params)
            path = ""
        name = f"s{int(index):06d}_o{k:02d}_{shape}"
        objects.append(ObjectSpec(name=name, shape=shape, params=params, path=path, size=size, radius=radius,
                                  detail=o.mesh_detail if path else 0,
                                  simplify="quadric" if path and o.mesh_detail else "cluster"))
        lo, hi = object_bounds(cfg, radius)
        t = cfg.trajectories
        # Drawn only when used, so that configs without static objects keep their random streams.
        static = o.static_ratio > 0 and bool(rng.random() < o.static_ratio)
        height = resting_height(objects[-1]) if static else 0.0
        best, best_clearance = None, -np.inf
        for _ in range(o.placement_tries if o.separate else 1):
            if static:
                traj = resting_trajectory(lo, hi, height, rng)
            else:
                traj = sample_trajectory(t.kind, lo, hi, times, t.speed, t.angular_speed_deg, t.num_keyframes,
                                         rng)
            if not o.separate or not centres:
                best = traj
                break
            clearance = _clearance(traj.positions_at(times), radius, centres, radii)
            if clearance > best_clearance:
                best, best_clearance = traj, clearance
            if clearance >= 0:
                break
        trajectories.append(best)
        if o.separate:
            centres.append(best.positions_at(times))
            radii.append(radius)
    cameras = sample_camera_spec(cfg.cameras, rng)
    return SceneSpec(
        name=f"{int(index):06d}", index=int(index), root_seed=int(root_seed), seed=seed,
        num_frames=cfg.num_frames, fps=float(cfg.fps), num_points=cfg.num_points,
        objects=tuple(objects), trajectories=tuple(trajectories),
        room_size=tuple(float(x) for x in cfg.room.size) if cfg.room.enabled else None,
        room_ceiling=bool(cfg.room.ceiling), cameras=cameras, renderer=cfg.renderer, sensor=cfg.sensor,
        store_normals=cfg.store.normals, store_depth=cfg.store.depth, store_instance=cfg.store.instance)
