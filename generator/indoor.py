"""Indoor scenes like real captures: a furnished, cluttered room, handheld cameras inside it, a few moving objects.

``make_indoor_spec`` draws, from the sequence's seed only:

1. a room (``indoor.room_x`` x ``room_y`` x ``room_height``);
2. furniture built from boxes and cylinders (and real chair meshes): tables and chairs stand free, desks,
   shelves, cabinets and kitchen counters (with wall cabinets above) stand against the walls;
3. clutter resting on the furniture's support surfaces (table/desk/cabinet/counter tops, shelf boards),
   ``clutter_per_m2`` per square metre, 3-30 cm by default, plus larger objects on the floor;
4. each handheld view: a motion regime (TUM fr1/rpy-like rotation, fr1/xyz-like translation, 7-Scenes-like
   walking; ``cameras.handheld.motions``), a point of interest on the furniture or its clutter, and a camera
   ``distance_m`` from it at ``camera_height_m``, accepted only if the whole path keeps ``camera_clearance_m``
   from every static part and the room and the point is in sight (no furniture box across the line of sight);
5. the moving objects of ``generate.objects`` flying in a box between a view's camera and its point of interest
   (in view at least half the time when a drawn trajectory allows it), kept off every camera.

Furniture, clutter and the room are static background (label -1), stored in the spec as
:class:`~synthseq.generator.scene.StaticPart` (an ObjectSpec and a world pose: names and numbers only). Every
collision test uses axis-aligned boxes around the parts (conservative, cheap: ``make_spec`` runs in the build's
driver for every sequence, before any geometry is built).
"""

from __future__ import annotations

import logging
import math

import numpy as np

from synthseq.errors import ConfigError
from synthseq.generator.assets import ObjectSpec, mesh_radius, primitive_radius, safe_name, sample_primitive
from synthseq.generator.cameras import CameraSpec, choose_motion, draw_shake, walk_velocity
from synthseq.generator.trajectories import sample_trajectory
from synthseq.geometry import look_at, matmul, transform_points

logger = logging.getLogger(__name__)

WALL_KINDS = ("desk", "shelf", "cabinet", "counter")
# Vertex-clustering grids of mesh files (ObjectSpec.detail): clutter spans < 100 px of a 320x240 image, a chair
# a few hundred; full-resolution scans would put 100k-400k triangles in a room for no visible difference.
CLUTTER_DETAIL = 24
CHAIR_DETAIL = 64
_MAX_LAYOUTS = 20


# ------------------------------------------------------------------------------------------ small geometry

def _pose(x=0.0, y=0.0, z=0.0, yaw=0.0, R=None) -> np.ndarray:
    """4x4 [R_z(yaw) @ R | (x, y, z)]."""
    c, s = math.cos(yaw), math.sin(yaw)
    out = np.eye(4)
    out[:3, :3] = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    if R is not None:
        out[:3, :3] = matmul(out[:3, :3], np.asarray(R, dtype=np.float64))
    out[:3, 3] = (x, y, z)
    return out


def half_extents(obj: ObjectSpec) -> np.ndarray:
    """(3,) half extents of an object's canonical axis-aligned bounding box (centred on its origin), metres."""
    from synthseq.generator.assets import unit_mesh

    if obj.is_mesh_file:
        v, _ = unit_mesh(obj.path, obj.detail, obj.simplify)
        return 0.5 * (v.max(axis=0) - v.min(axis=0)) * obj.size
    p = obj.params
    if obj.shape == "box":
        return 0.5 * np.asarray(p, dtype=np.float64)
    if obj.shape == "sphere":
        return np.full(3, p[0])
    if obj.shape in ("cylinder", "cone"):
        return np.array([p[0], p[0], 0.5 * p[1]])
    if obj.shape == "capsule":
        return np.array([p[0], p[0], 0.5 * p[1] + p[0]])
    if obj.shape == "torus":
        return np.array([p[0] + p[1], p[0] + p[1], p[1]])
    raise ValueError(f"unknown primitive kind {obj.shape!r}")


def world_aabb(obj: ObjectSpec, world_from_object: np.ndarray) -> np.ndarray:
    """(2, 3) [lo, hi] world box around the object's bounding box placed at ``world_from_object``."""
    h = half_extents(obj)
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * h
    w = transform_points(world_from_object, corners)
    return np.stack([w.min(axis=0), w.max(axis=0)])


def point_box_distance(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(P, B) Euclidean distances from points (P, 3) to boxes (B, 2, 3) (0 inside)."""
    lo, hi = boxes[None, :, 0], boxes[None, :, 1]
    p = points[:, None, :]
    d = np.maximum(np.maximum(lo - p, p - hi), 0.0)
    return np.sqrt((d * d).sum(-1))


def segment_hits_boxes(a: np.ndarray, b: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(B,) bool: the segment a -> b (3,) crosses box b (slab test)."""
    if len(boxes) == 0:
        return np.zeros(0, bool)
    d = b - a
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (boxes[:, 0] - a) / d
        t2 = (boxes[:, 1] - a) / d
    # A zero direction component: inside the slab for every t, or never.
    zero = np.abs(d) < 1e-12
    inside = (a >= boxes[:, 0]) & (a <= boxes[:, 1])
    t_lo = np.where(zero, np.where(inside, -np.inf, np.inf), np.minimum(t1, t2))
    t_hi = np.where(zero, np.where(inside, np.inf, -np.inf), np.maximum(t1, t2))
    enter = np.maximum(t_lo.max(axis=1), 0.0)
    leave = np.minimum(t_hi.min(axis=1), 1.0)
    return enter <= leave


def _box(name: str, ex: float, ey: float, ez: float) -> ObjectSpec:
    params = (float(ex), float(ey), float(ez))
    return ObjectSpec(name=name, shape="box", params=params, size=max(params), radius=primitive_radius("box", params))


def _cylinder(name: str, r: float, h: float) -> ObjectSpec:
    params = (float(r), float(h))
    return ObjectSpec(name=name, shape="cylinder", params=params, size=max(2 * r, h),
                      radius=primitive_radius("cylinder", params))


# ------------------------------------------------------------------------------------------ furniture

class _Piece:
    """One piece of furniture in its local frame: origin at the floor centre of its footprint, x along its
    width, y along its depth with the back at +y (against a wall), z up."""

    def __init__(self, kind: str, width: float, depth: float):
        self.kind, self.width, self.depth = kind, float(width), float(depth)
        self.parts: list[tuple[ObjectSpec, np.ndarray]] = []  # (object, local_from_object)
        self.supports: list[tuple[float, float, float, float, float, float]] = []  # x0, x1, y0, y1, z, max_h

    def add(self, obj: ObjectSpec, x: float, y: float, z: float, R=None):
        self.parts.append((obj, _pose(x, y, z, R=R)))


def _build_piece(kind: str, prefix: str, rng: np.random.Generator, room_height: float,
                 chair_mesh: tuple | None) -> _Piece:
    """Draw the dimensions of a piece of furniture and build it from boxes and cylinders (or a chair mesh).

    Args:
        chair_mesh: (path, height) of a chair mesh to use, or None for a primitive chair.
    """
    u = rng.uniform
    if kind in ("table", "desk"):
        w, d = (u(0.8, 1.8), u(0.6, 1.0)) if kind == "table" else (u(1.0, 1.6), u(0.6, 0.8))
        h, top, leg = u(0.70, 0.78), u(0.03, 0.05), u(0.04, 0.07)
        p = _Piece(kind, w, d)
        p.add(_box(f"{prefix}_top", w, d, top), 0.0, 0.0, h - 0.5 * top)
        lx, ly = 0.5 * w - 0.5 * leg - 0.03, 0.5 * d - 0.5 * leg - 0.03
        xs = (-lx, lx) if kind == "table" else (-lx,)
        for i, x in enumerate(xs):
            for j, y in enumerate((-ly, ly)):
                p.add(_box(f"{prefix}_leg{i}{j}", leg, leg, h - top), x, y, 0.5 * (h - top))
        if kind == "desk":  # a drawer pedestal instead of the right legs
            pw = min(0.45, 0.35 * w)
            p.add(_box(f"{prefix}_drawers", pw, d - 0.04, h - top), 0.5 * w - 0.5 * pw - 0.01, 0.0, 0.5 * (h - top))
        p.supports.append((-0.5 * w, 0.5 * w, -0.5 * d, 0.5 * d, h, 0.45))
        return p
    if kind == "shelf":
        w, d, h = u(0.6, 1.2), u(0.28, 0.4), u(1.0, min(2.0, room_height - 0.3))
        t = 0.02
        boards = max(2, int(h / 0.38))
        p = _Piece(kind, w, d)
        for sx in (-1, 1):
            p.add(_box(f"{prefix}_side{sx + 1}", t, d, h), sx * (0.5 * w - 0.5 * t), 0.0, 0.5 * h)
        p.add(_box(f"{prefix}_back", w - 2 * t, t, h), 0.0, 0.5 * d - 0.5 * t, 0.5 * h)
        step = (h - t) / boards
        for i in range(boards + 1):
            z = 0.05 + i * (h - 0.05 - t) / boards
            p.add(_box(f"{prefix}_board{i}", w - 2 * t, d - t, t), 0.0, -0.5 * t, z + 0.5 * t)
            max_h = step - t - 0.03 if i < boards else 0.4
            p.supports.append((-0.5 * w + t, 0.5 * w - t, -0.5 * d, 0.5 * d - t, z + t, max_h))
        return p
    if kind == "cabinet":
        w, d, h = u(0.5, 1.2), u(0.4, 0.6), u(0.6, 1.1)
        p = _Piece(kind, w, d)
        p.add(_box(f"{prefix}_body", w, d, h), 0.0, 0.0, 0.5 * h)
        p.supports.append((-0.5 * w, 0.5 * w, -0.5 * d, 0.5 * d, h, 0.45))
        return p
    if kind == "counter":
        w, d, h = u(1.5, 3.0), u(0.55, 0.65), u(0.86, 0.92)
        p = _Piece(kind, w, d)
        p.add(_box(f"{prefix}_base", w, d - 0.04, h - 0.04), 0.0, 0.02, 0.5 * (h - 0.04))
        p.add(_box(f"{prefix}_top", w, d, 0.04), 0.0, 0.0, h - 0.02)
        above = 0.5
        z0, hu = h + u(0.5, 0.6), u(0.6, 0.75)
        if z0 + hu < room_height - 0.05:  # wall cabinets
            p.add(_box(f"{prefix}_wall", w, 0.35, hu), 0.0, 0.5 * d - 0.175, z0 + 0.5 * hu)
            above = z0 - h - 0.05
        p.supports.append((-0.5 * w, 0.5 * w, -0.5 * d, 0.5 * d, h, above))
        return p
    if kind == "chair":
        if chair_mesh is not None:
            path, height = chair_mesh
            obj = ObjectSpec(name=f"{prefix}_{safe_name(path.rsplit('/', 1)[-1].rsplit('.', 1)[0])}",
                             shape=safe_name(path.rsplit("/", 1)[-1].rsplit(".", 1)[0]), path=path,
                             size=float(height), radius=mesh_radius(path, CHAIR_DETAIL) * float(height),
                             detail=CHAIR_DETAIL)
            R = _up_rotation(obj)
            he = np.abs(R) @ half_extents(obj)
            p = _Piece(kind, 2 * he[0], 2 * he[1])
            p.add(obj, 0.0, 0.0, he[2], R=R)
            return p
        s, hs, hb = u(0.4, 0.5), u(0.43, 0.48), u(0.35, 0.5)
        p = _Piece(kind, s, s)
        p.add(_box(f"{prefix}_seat", s, s, 0.04), 0.0, 0.0, hs - 0.02)
        r = 0.015
        for i, x in enumerate((-1, 1)):
            for j, y in enumerate((-1, 1)):
                p.add(_cylinder(f"{prefix}_leg{i}{j}", r, hs - 0.04), x * (0.5 * s - 0.03), y * (0.5 * s - 0.03),
                      0.5 * (hs - 0.04))
        p.add(_box(f"{prefix}_back", s, 0.04, hb), 0.0, 0.5 * s - 0.02, hs + 0.5 * hb)
        return p
    raise ValueError(f"unknown furniture kind {kind!r}")


def _up_rotation(obj: ObjectSpec) -> np.ndarray:
    """(3, 3) rotation taking a mesh's longest axis (positive direction) to +z: meshes are y-up (OBJ) or z-up."""
    axis = int(np.argmax(half_extents(obj)))
    if axis == 2:
        return np.eye(3)
    if axis == 1:  # y -> z: R_x(+90 deg)
        return np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    return np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # x -> z: R_y(-90 deg)


def _rect_overlap(a: np.ndarray, b: np.ndarray, gap: float) -> bool:
    """2D boxes (2, 2) [lo, hi] closer than ``gap``."""
    return bool(np.all(a[0] - gap < b[1]) and np.all(b[0] - gap < a[1]))


def _place_piece(piece: _Piece, room: tuple, footprints: list, rng: np.random.Generator, tries: int = 30):
    """A world pose (4, 4) for ``piece`` that overlaps no footprint, or None. Wall kinds stand with their back
    against a random wall; the others stand free (yaw a multiple of 90 deg +- 15 deg)."""
    X, Y = room[0], room[1]
    for _ in range(tries):
        if piece.kind in WALL_KINDS:
            wall = int(rng.integers(4))
            length = X if wall in (0, 1) else Y
            if piece.width > length - 0.1:
                continue
            along = float(rng.uniform(-0.5 * length + 0.5 * piece.width + 0.02, 0.5 * length - 0.5 * piece.width - 0.02))
            off = 0.5 * piece.depth + 0.01
            x, y, yaw = {0: (along, 0.5 * Y - off, 0.0), 1: (along, -0.5 * Y + off, math.pi),
                         2: (0.5 * X - off, along, -0.5 * math.pi), 3: (-0.5 * X + off, along, 0.5 * math.pi)}[wall]
            gap = 0.1
        else:
            yaw = 0.5 * math.pi * int(rng.integers(4)) + math.radians(float(rng.uniform(-15.0, 15.0)))
            m = 0.5 * math.hypot(piece.width, piece.depth) + 0.3
            if 2 * m >= min(X, Y):
                continue
            x, y = float(rng.uniform(-0.5 * X + m, 0.5 * X - m)), float(rng.uniform(-0.5 * Y + m, 0.5 * Y - m))
            gap = 0.6 if piece.kind == "table" else 0.3
        pose = _pose(x, y, 0.0, yaw)
        c, s = abs(math.cos(yaw)), abs(math.sin(yaw))
        hx = 0.5 * (c * piece.width + s * piece.depth)
        hy = 0.5 * (s * piece.width + c * piece.depth)
        rect = np.array([[x - hx, y - hy], [x + hx, y + hy]])
        if any(_rect_overlap(rect, f, gap) for f in footprints):
            continue
        return pose, rect
    return None


# ------------------------------------------------------------------------------------------ clutter

def _draw_clutter(prefix: str, size: float, sources: tuple, mesh_ratio: float, rng: np.random.Generator) -> ObjectSpec:
    """One clutter object of largest extent ``size``: a primitive or a mesh file of ``sources``."""
    primitives, files = sources
    if files and (not primitives or rng.random() < mesh_ratio):
        path = files[int(rng.integers(len(files)))]
        shape = safe_name(path.rsplit("/", 1)[-1].rsplit(".", 1)[0])
        return ObjectSpec(name=f"{prefix}_{shape}", shape=shape, path=path, size=float(size),
                          radius=mesh_radius(path, CLUTTER_DETAIL) * float(size), detail=CLUTTER_DETAIL)
    shape = primitives[int(rng.integers(len(primitives)))]
    params = sample_primitive(shape, float(size), rng)
    return ObjectSpec(name=f"{prefix}_{shape}", shape=shape, params=params, size=float(size),
                      radius=primitive_radius(shape, params))


def _scaled(obj: ObjectSpec, factor: float) -> ObjectSpec:
    """The same object scaled by ``factor`` (primitive dimensions are linear in its size)."""
    import dataclasses

    return dataclasses.replace(obj, params=tuple(float(p) * factor for p in obj.params), size=obj.size * factor,
                               radius=obj.radius * factor)


def _clutter_on(rect: tuple, world_from_local: np.ndarray, count: int, size_range: tuple, prefix: str,
                sources: tuple, mesh_ratio: float, rng: np.random.Generator, floor_rects: list | None = None,
                tries: int = 8) -> list:
    """Up to ``count`` objects resting on the support ``rect`` = (x0, x1, y0, y1, z, max_h) of a local frame.

    Returns:
        [(ObjectSpec, world_from_object (4, 4))], footprints kept apart by 1 cm (and from ``floor_rects``,
        world 2D boxes, when given).
    """
    x0, x1, y0, y1, z, max_h = rect
    placed, rects = [], []
    lo, hi = math.log(size_range[0]), math.log(size_range[1])
    for i in range(count):
        for _ in range(tries):
            size = math.exp(float(rng.uniform(lo, hi)))
            obj = _draw_clutter(f"{prefix}{i:02d}", size, sources, mesh_ratio, rng)
            he = half_extents(obj)
            yaw = float(rng.uniform(-math.pi, math.pi))
            c, s = abs(math.cos(yaw)), abs(math.sin(yaw))
            fx, fy = c * he[0] + s * he[1], s * he[0] + c * he[1]
            # Shrink to fit under the next board and inside the surface.
            f = min(1.0, max_h / (2 * he[2]), 0.5 * (x1 - x0) / fx, 0.5 * (y1 - y0) / fy)
            if f < 1.0:
                f *= 0.999  # strictly inside: rounding must not leave an empty placement range
                if size * f < 0.5 * size_range[0]:
                    continue
                obj = _scaled(obj, f)
                he, fx, fy = he * f, fx * f, fy * f
            x = float(rng.uniform(x0 + fx, x1 - fx))
            y = float(rng.uniform(y0 + fy, y1 - fy))
            r = np.array([[x - fx, y - fy], [x + fx, y + fy]])
            if any(_rect_overlap(r, q, 0.01) for q in rects):
                continue
            pose = matmul(world_from_local, _pose(x, y, z + he[2], yaw))
            if floor_rects is not None:
                box = world_aabb(obj, pose)[:, :2]
                if any(_rect_overlap(box, q, 0.05) for q in floor_rects):
                    continue
            placed.append((obj, pose))
            rects.append(r)
            break
    return placed


# ------------------------------------------------------------------------------------------ the scene

class _Layout:
    """A furnished room: static parts with their world boxes, and points of interest to look at."""

    def __init__(self, size: tuple):
        self.size = size
        self.parts: list[tuple[ObjectSpec, np.ndarray]] = []
        self.boxes: list[np.ndarray] = []
        self.pois: list[np.ndarray] = []

    def add(self, obj: ObjectSpec, pose: np.ndarray):
        self.parts.append((obj, pose))
        self.boxes.append(world_aabb(obj, pose))

    def box_array(self) -> np.ndarray:
        return np.stack(self.boxes) if self.boxes else np.zeros((0, 2, 3))


def _furnish(cfg, index: int, sources: tuple, chair_files: tuple, rng: np.random.Generator) -> _Layout:
    """Draw a room, its furniture and its clutter."""
    ind, o = cfg.indoor, cfg.objects
    size = (float(rng.uniform(*ind.room_x)), float(rng.uniform(*ind.room_y)), float(rng.uniform(*ind.room_height)))
    layout = _Layout(size)
    density = float(rng.uniform(*ind.clutter_per_m2))
    footprints: list[np.ndarray] = []
    n = int(rng.integers(ind.furniture_count[0], ind.furniture_count[1] + 1))
    for f in range(n):
        kind = ind.furniture_kinds[int(rng.integers(len(ind.furniture_kinds)))]
        chair_mesh = None
        if kind == "chair" and chair_files and rng.random() < o.mesh_ratio:
            chair_mesh = (chair_files[int(rng.integers(len(chair_files)))],
                          float(rng.uniform(*ind.chair_mesh_height)))
        prefix = f"s{int(index):06d}_f{f:02d}_{kind}"
        piece = _build_piece(kind, prefix, rng, size[2], chair_mesh)
        placed = _place_piece(piece, size, footprints, rng)
        if placed is None:
            continue
        world_from_local, rect = placed
        footprints.append(rect)
        for obj, local in piece.parts:
            layout.add(obj, matmul(world_from_local, local))
        for s_i, sup in enumerate(piece.supports):
            x0, x1, y0, y1, z, _ = sup
            centre = world_from_local @ np.array([0.5 * (x0 + x1), 0.5 * (y0 + y1), z, 1.0])
            layout.pois.append(centre[:3])
            area = (x1 - x0) * (y1 - y0)
            count = int(rng.poisson(density * area))
            for obj, pose in _clutter_on(sup, world_from_local, count, ind.clutter_size, f"{prefix}_c{s_i}_",
                                         sources, o.mesh_ratio, rng):
                layout.add(obj, pose)
                box = layout.boxes[-1]
                layout.pois.append(np.array([0.5 * (box[0, 0] + box[1, 0]), 0.5 * (box[0, 1] + box[1, 1]),
                                             box[1, 2]]))
    # Larger clutter on the floor, off the furniture.
    floor = (-0.5 * size[0] + 0.05, 0.5 * size[0] - 0.05, -0.5 * size[1] + 0.05, 0.5 * size[1] - 0.05, 0.0, 2.0)
    count = int(rng.integers(ind.floor_clutter[0], ind.floor_clutter[1] + 1))
    for obj, pose in _clutter_on(floor, np.eye(4), count, ind.floor_clutter_size, f"s{int(index):06d}_floor",
                                 sources, o.mesh_ratio, rng, floor_rects=footprints):
        layout.add(obj, pose)
        box = layout.boxes[-1]
        layout.pois.append(np.array([0.5 * (box[0, 0] + box[1, 0]), 0.5 * (box[0, 1] + box[1, 1]), box[1, 2]]))
    return layout


def _exit_distance(point: np.ndarray, direction: np.ndarray, size: tuple) -> float:
    """Distance from ``point`` inside the room along the unit ``direction`` to the floor, a wall or the ceiling."""
    X, Y, Z = size
    lo, hi = np.array([-0.5 * X, -0.5 * Y, 0.0]), np.array([0.5 * X, 0.5 * Y, Z])
    with np.errstate(divide="ignore"):
        t = np.where(direction > 0, (hi - point) / direction, np.where(direction < 0, (lo - point) / direction, np.inf))
    return float(t.min())


def _place_camera(cfg, layout: _Layout, times: np.ndarray, rng: np.random.Generator):
    """A handheld motion looking at a point of interest of ``layout``, its path clear of every static part and
    inside the room; (motion, target) or None after ``indoor.placement_tries`` candidates."""
    ind, h = cfg.indoor, cfg.cameras.handheld
    if not layout.pois:
        return None
    X, Y, Z = layout.size
    clear = ind.camera_clearance_m
    boxes = layout.box_array()
    room_lo = np.array([-0.5 * X + clear, -0.5 * Y + clear, clear])
    room_hi = np.array([0.5 * X - clear, 0.5 * Y - clear, Z - clear])
    _, regime = choose_motion(h, rng)
    if regime is None:
        rpy, xyz, freq, walk, dist = h.rpy_amplitude_deg, h.xyz_amplitude_m, h.frequency_hz, (0.0, 0.0), (0.8, 2.0)
    else:
        rpy, xyz, freq = regime.rpy_amplitude_deg, regime.xyz_amplitude_m, regime.frequency_hz
        walk, dist = regime.walk_speed_m_s, regime.distance_m
    for _ in range(ind.placement_tries):
        target = layout.pois[int(rng.integers(len(layout.pois)))]
        d = float(rng.uniform(*dist))
        height = float(rng.uniform(*ind.camera_height_m))
        dz = height - float(target[2])
        if abs(dz) > 0.9 * d:
            continue
        r = math.sqrt(d * d - dz * dz)
        az = float(rng.uniform(0.0, 2.0 * math.pi))
        eye = np.array([target[0] + r * math.cos(az), target[1] + r * math.sin(az), height])
        velocity = walk_velocity(eye, target, walk, rng)
        motion = draw_shake(look_at(eye, target), rpy, xyz, freq, rng, velocity,
                            target if any(velocity) else None)
        path = motion.poses(times)[:, :3, 3]
        if np.any(path < room_lo) or np.any(path > room_hi):
            continue
        # What lies behind the point: the room (floor, a wall) within max_background_m along the view, as in
        # the real captures (a desk against a wall, a kitchen counter), not the far side of a large room.
        if _exit_distance(target, (target - eye) / d, layout.size) > ind.max_background_m:
            continue
        if len(boxes) and point_box_distance(path, boxes).min() < clear:
            continue
        # In sight: no box across the line of sight, from the first and the last eye to 10 cm short of the point.
        blocked = False
        for e in (path[0], path[-1]):
            v = target - e
            n = np.linalg.norm(v)
            if n <= 0.2 or segment_hits_boxes(e, e + v * (1.0 - 0.1 / n), boxes).any():
                blocked = True
                break
        if blocked:
            continue
        return motion, target
    return None


def _in_view(points: np.ndarray, world_from_camera: np.ndarray, K: tuple, size: tuple) -> np.ndarray:
    """(T,) bool: world points (T, 3) project inside a (W, H) image of the camera poses (T, 4, 4), z > 0.3 m."""
    fx, fy, cx, cy = K
    R, t = world_from_camera[:, :3, :3], world_from_camera[:, :3, 3]
    p = np.einsum("tji,tj->ti", R, points - t)  # camera frame: R^T (x - t)
    z = np.maximum(p[:, 2], 1e-9)
    u, v = fx * p[:, 0] / z + cx, fy * p[:, 1] / z + cy
    return (p[:, 2] > 0.3) & (u >= 0) & (u < size[0]) & (v >= 0) & (v < size[1])


def _moving_objects(cfg, index: int, layout: _Layout, placed: list, times: np.ndarray, sources: tuple,
                    rng: np.random.Generator):
    """The moving objects of ``generate.objects``. Object k flies in a box of half extents ``moving_region_m``
    centred between view (k mod V)'s first eye and its point of interest (a third of the way to the eye), so
    that the view sees it; it stays off every camera path, and (best effort) off the furniture and the other
    objects. Among ``objects.placement_tries`` trajectories the first that is clear and in view half the time is
    kept, else the one most in view (then the clearest); an object that cannot be kept off a camera is left
    out."""
    from synthseq.generator.scene import _clearance

    o, t, ind = cfg.objects, cfg.trajectories, cfg.indoor
    X, Y, Z = layout.size
    K = int(rng.integers(o.count[0], o.count[1] + 1))
    half = np.asarray(ind.moving_region_m, dtype=np.float64)
    boxes = layout.box_array()
    poses = np.stack([m.poses(times) for m, _ in placed], axis=1)  # (T, V, 4, 4)
    paths = poses[:, :, :3, 3]
    intrinsics, size = cfg.cameras.intrinsics(), (cfg.cameras.width, cfg.cameras.height)
    objects, trajectories, centres, radii = [], [], [], []
    for k in range(K):
        size_m = float(rng.uniform(o.size[0], o.size[1]))
        obj = _draw_clutter(f"s{int(index):06d}_o{k:02d}", size_m, sources, o.mesh_ratio, rng)
        radius = obj.radius
        v = k % len(placed)
        target = placed[v][1]
        centre = target + (paths[0, v] - target) / 3.0
        m = radius + 0.05
        lo = np.maximum(centre - half, [-0.5 * X + m, -0.5 * Y + m, m])
        hi = np.minimum(centre + half, [0.5 * X - m, 0.5 * Y - m, Z - m])
        if np.any(lo > hi):
            continue
        best, best_key = None, (-np.inf, -np.inf)
        for _ in range(o.placement_tries):
            traj = sample_trajectory(t.kind, lo, hi, times, t.speed, t.angular_speed_deg, t.num_keyframes, rng)
            pos = traj.positions_at(times)  # (T, 3)
            cam = np.sqrt(((paths - pos[:, None]) ** 2).sum(-1)).min() - (radius + ind.camera_clearance_m)
            if cam < 0:
                continue
            others = _clearance(pos, radius, centres, radii) if centres else np.inf
            static = (point_box_distance(pos, boxes).min() - radius) if len(boxes) else np.inf
            seen = float(_in_view(pos, poses[:, v], intrinsics, size).mean())
            clear = min(others, static)
            key = (min(seen, 0.5), clear)
            if key > best_key:
                best, best_key = traj, key
            if seen >= 0.5 and clear >= 0:
                break
        if best is None:  # never through a camera: leave the object out
            continue
        objects.append(obj)
        trajectories.append(best)
        centres.append(best.positions_at(times))
        radii.append(radius)
    return objects, trajectories


def make_indoor_spec(cfg, root_seed: int, index: int):
    """Draw the indoor scene of sequence ``index`` (see the module docstring). Cheap and deterministic.

    Args:
        cfg: the ``generate`` config with ``scene: indoor``.
        root_seed: the build's root seed.
        index: the sequence index (>= 0).

    Returns:
        A :class:`~synthseq.generator.scene.SceneSpec` with ``static_parts`` (furniture and clutter), the
        room, handheld cameras only and the moving objects.

    Raises:
        ConfigError: no camera placement was found in ``_MAX_LAYOUTS`` furnished rooms (the message names the
            config keys to relax).
    """
    from synthseq.generator.scene import SceneSpec, StaticPart, _mesh_files, sequence_seed

    if int(index) < 0:
        raise ValueError(f"make_spec: index must be >= 0, got {index}")
    seed = sequence_seed(root_seed, index)
    rng = np.random.default_rng(seed)
    files = _mesh_files(cfg)
    stems = {f: f.rsplit("/", 1)[-1].rsplit(".", 1)[0] for f in files}
    chair_files = tuple(f for f in files if stems[f] in cfg.indoor.furniture_meshes)
    sources = (tuple(cfg.objects.primitives), tuple(f for f in files if f not in chair_files))
    if not sources[0] and not sources[1]:
        raise ConfigError("generate.objects: indoor clutter needs primitives or mesh files other than "
                         "generate.indoor.furniture_meshes")
    times = np.arange(cfg.num_frames, dtype=np.float64) / cfg.fps
    V = cfg.cameras.handheld.num_views
    for _attempt in range(_MAX_LAYOUTS):
        layout = _furnish(cfg, index, sources, chair_files, rng)
        placed = []
        for _v in range(V):
            cam = _place_camera(cfg, layout, times, rng)
            if cam is None:
                break
            placed.append(cam)
        if len(placed) == V:
            break
    else:
        raise ConfigError(
            f"sequence {index}: no handheld camera placement found in {_MAX_LAYOUTS} rooms: relax "
            "generate.indoor.camera_clearance_m / camera_height_m, the motions' distance_m, or furniture_count")
    motions = tuple(m for m, _ in placed)
    objects, trajectories = _moving_objects(cfg, index, layout, placed, times, sources, rng)
    fx, fy, cx, cy = cfg.cameras.intrinsics()
    cameras = CameraSpec(cfg.cameras.width, cfg.cameras.height, fx, fy, cx, cy, (), motions)
    static = tuple(StaticPart(obj, tuple(float(x) for x in pose.ravel())) for obj, pose in layout.parts)
    return SceneSpec(
        name=f"{int(index):06d}", index=int(index), root_seed=int(root_seed), seed=seed,
        num_frames=cfg.num_frames, fps=float(cfg.fps), num_points=cfg.num_points,
        objects=tuple(objects), trajectories=tuple(trajectories), room_size=layout.size,
        room_ceiling=bool(cfg.room.ceiling), cameras=cameras, renderer=cfg.renderer, sensor=cfg.sensor,
        store_normals=cfg.store.normals, store_depth=cfg.store.depth, store_instance=cfg.store.instance,
        static_parts=static)
