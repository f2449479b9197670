"""Config of the generate stage: the typed ``generate:`` section (objects, room, trajectories, cameras, sensor).

Read with ``synthseq.config.from_dict(GenerateConfig, data, "generate")``; every error names the full key
path (``generate.cameras.width: expected a value > 0, got 0``). Relative mesh paths (``objects.mesh_dir``,
``objects.mesh_files``) are resolved against the directory of the config file that holds them when the config
is loaded through :func:`load_generate_config` or :func:`resolve_paths` (what users of a YAML file expect);
paths left relative resolve against the current directory when :func:`~synthseq.generator.sequence.make_spec`
first uses them.

World axes: z up, the floor at z = 0, the scene centred on the z axis. Units metres, seconds, degrees where a
key ends in ``_deg``.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from synthseq.config import bounded, check_bounds
from synthseq.errors import ConfigError

PrimitiveKind = Literal["box", "sphere", "cylinder", "capsule", "cone", "torus"]
PRIMITIVE_KINDS: tuple[str, ...] = ("box", "sphere", "cylinder", "capsule", "cone", "torus")
MESH_SUFFIXES: tuple[str, ...] = (".obj", ".stl", ".ply", ".off", ".glb", ".gltf")


def _range(value, path: str, *, positive: bool = True, integer: bool = False) -> tuple:
    """Normalise a scalar-or-[lo, hi] value to a (lo, hi) tuple and check it (lo <= hi, > 0)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        lo = hi = value
    else:
        lo, hi = value
    if lo > hi:
        raise ConfigError(f"{path}: expected [low, high] with low <= high, got {list(value)}")
    if positive and lo <= 0:
        raise ConfigError(f"{path}: expected a positive {'int' if integer else 'value'}, got {lo}")
    return (lo, hi)


@dataclass
class ObjectsConfig:
    """The K moving objects of a scene: primitives and/or mesh files, each scaled to a target size.

    Args:
        count: K, or a [low, high] range drawn per sequence (inclusive).
        primitives: primitive kinds to draw from (trimesh.creation): box, sphere, cylinder, capsule, cone, torus.
        mesh_dir: a folder of mesh files (OBJ/STL/PLY/OFF/GLB/GLTF, not recursive), or null.
        mesh_files: individual mesh files (added to those of ``mesh_dir``).
        mesh_ratio: probability that an object is a mesh file rather than a primitive (when meshes are given).
        mesh_detail: simplification of mesh-file objects (``scene: objects``): 0 = the file's full geometry;
            n >= 8 = vertex clustering with quadric placement on a grid of n cells along the object's largest
            extent (``ObjectSpec.detail``, ``simplify="quadric"``). The simplified mesh *is* the object
            (rendered and stored under ``/meshes``: ground truth stays exact). At a few dozen pixels per object a
            16k-face scan costs the rasteriser far more than its image needs; default.yaml uses 32
            (docs/generator.md: depth changes against the full meshes, measured).
        static_ratio: probability that an object is static, resting on the floor (z = 0) in its canonical
            orientation turned by a random yaw, like furniture and clutter in a real capture; the others fly.
        size: [low, high] target size in metres: the largest bounding-box extent of each object.
        region: (x, y, z) extents in metres of the box the objects move in: x, y centred on 0, z from 0 up.
        separate: keep objects apart: an object's trajectory is redrawn (up to ``placement_tries`` times) while
            its bounding sphere meets an earlier object's at any frame; after the last try the trajectory with
            the largest clearance is kept (best effort: dense scenes may still touch). There is no physics.
        placement_tries: trajectories drawn per object when ``separate`` is on.
    """

    count: Union[int, tuple[int, int]] = 3
    primitives: list[PrimitiveKind] = field(default_factory=lambda: list(PRIMITIVE_KINDS))
    mesh_dir: str | None = None
    mesh_files: list[str] = field(default_factory=list)
    mesh_ratio: float = bounded(0.5, ge=0.0, le=1.0)
    mesh_detail: int = bounded(0, ge=0, le=4096)
    static_ratio: float = bounded(0.0, ge=0.0, le=1.0)
    size: Union[float, tuple[float, float]] = (0.2, 0.5)
    region: tuple[float, float, float] = bounded((2.0, 2.0, 1.5), gt=0)
    separate: bool = True
    placement_tries: int = bounded(10, ge=1)

    def __post_init__(self):
        self.count = _range(self.count, "generate.objects.count", integer=True)
        self.size = _range(self.size, "generate.objects.size")
        if self.count[1] > 1000:
            raise ConfigError(f"generate.objects.count: expected at most 1000 objects, got {self.count[1]}")
        if not self.primitives and not self.mesh_dir and not self.mesh_files:
            raise ConfigError("generate.objects: no object sources: give primitives, mesh_dir or mesh_files")
        self.region = tuple(float(x) for x in self.region)
        check_bounds(self, "generate.objects")
        if 0 < self.mesh_detail < 8:
            raise ConfigError(f"generate.objects.mesh_detail: expected 0 (full geometry) or at least 8 cells, "
                              f"got {self.mesh_detail}")


@dataclass
class RoomConfig:
    """An indoor-capture-like background: a floor and four walls (and optionally a ceiling), label -1.

    Args:
        enabled: add the room.
        size: (x, y, z) interior extents in metres, centred on the z axis, floor at z = 0.
        ceiling: close the room at the top.
        margin: clearance in metres kept between every object's bounding sphere and the room, every frame.
    """

    enabled: bool = True
    size: tuple[float, float, float] = bounded((6.0, 6.0, 3.0), gt=0)
    ceiling: bool = False
    margin: float = bounded(0.05, ge=0)


@dataclass
class TrajectoryConfig:
    """How objects move: smooth SE(3) trajectories.

    Args:
        kind: ``spline`` (keyframes joined by a natural cubic spline in position and in a rotation vector,
            C2-smooth, passing through every keyframe) or ``constant_velocity`` (constant linear and body-frame
            angular velocity).
        num_keyframes: keyframes of a spline trajectory, spread evenly over the sequence.
        speed: [low, high] linear speed in m/s (per object; between spline keyframes on average).
        angular_speed_deg: [low, high] angular speed in deg/s.
    """

    kind: Literal["spline", "constant_velocity"] = "spline"
    num_keyframes: int = bounded(4, ge=2)
    speed: Union[float, tuple[float, float]] = (0.05, 0.4)
    angular_speed_deg: Union[float, tuple[float, float]] = (10.0, 60.0)

    def __post_init__(self):
        self.speed = _range(self.speed, "generate.trajectories.speed", positive=False)
        self.angular_speed_deg = _range(self.angular_speed_deg, "generate.trajectories.angular_speed_deg",
                                        positive=False)
        if self.speed[0] < 0 or self.angular_speed_deg[0] < 0:
            raise ConfigError("generate.trajectories: speeds must be >= 0")
        check_bounds(self, "generate.trajectories")


@dataclass
class RigConfig:
    """A static rig of ``num_views`` cameras evenly spaced on a circle around the scene, looking at its centre.

    Args:
        num_views: V static cameras (0 = none).
        radius: horizontal distance in metres from the z axis.
        height: camera height in metres above the floor.
        look_at: (x, y, z) point every camera looks at.
        azimuth_jitter_deg: random per-sequence rotation of the whole rig about z (0 = rig at azimuth 0).
        radius_jitter: +- random change of each camera's radius, metres.
        height_jitter: +- random change of each camera's height, metres.
    """

    num_views: int = bounded(2, ge=0)
    radius: float = bounded(2.5, gt=0)
    height: float = 1.5
    look_at: tuple[float, float, float] = (0.0, 0.0, 0.6)
    azimuth_jitter_deg: float = bounded(180.0, ge=0)
    radius_jitter: float = bounded(0.2, ge=0)
    height_jitter: float = bounded(0.2, ge=0)


@dataclass
class MotionConfig:
    """One handheld motion regime (``generate.cameras.handheld.motions.<name>``), drawn per view by weight.

    A regime shakes the base pose like :class:`HandheldConfig` does (roll/pitch/yaw and x/y/z sinusoids) and can
    also walk: the base moves at a constant horizontal speed, roughly sideways to the view, while it keeps
    looking at its target (the parallax then turns the camera, as a person filming an object while walking
    past it does). Measured on the real captures (median relative motion at frame gaps 1/5/10, 30 fps):
    TUM fr1/rpy 2.1/10.8/22.1 deg, 0.3/1.5/2.9 cm; fr1/xyz 0.4-0.6/1.6-2.6/2.6-4.5 deg, 1.0-1.2/5.2-6.3/
    10.3-12.2 cm; 7-Scenes redkitchen 0.3/1.2/2.0 deg, 0.5/2.5/5.1 cm.

    Args:
        weight: relative probability of this regime (0 = never).
        rpy_amplitude_deg: (roll, pitch, yaw) shake amplitudes, degrees.
        xyz_amplitude_m: (x, y, z) shake amplitudes in the camera frame, metres.
        frequency_hz: [low, high] frequency of each sinusoid, drawn per axis.
        walk_speed_m_s: [low, high] speed of the base's straight horizontal walk, m/s (0 = standing).
        distance_m: [low, high] distance from the camera to the point it looks at (indoor scenes), metres.
    """

    weight: float = bounded(1.0, ge=0)
    rpy_amplitude_deg: tuple[float, float, float] = bounded((12.0, 12.0, 12.0), ge=0, le=90)
    xyz_amplitude_m: tuple[float, float, float] = bounded((0.02, 0.02, 0.02), ge=0)
    frequency_hz: Union[float, tuple[float, float]] = (0.25, 0.5)
    walk_speed_m_s: Union[float, tuple[float, float]] = (0.0, 0.0)
    distance_m: Union[float, tuple[float, float]] = (0.8, 2.0)

    def normalise(self, path: str) -> None:
        """Turn scalar-or-[lo, hi] values into (lo, hi) tuples and check them; ``path`` names the regime
        (the dataclass cannot know its own key in the ``motions`` mapping)."""
        self.frequency_hz = _range(self.frequency_hz, f"{path}.frequency_hz", positive=False)
        self.walk_speed_m_s = _range(self.walk_speed_m_s, f"{path}.walk_speed_m_s", positive=False)
        self.distance_m = _range(self.distance_m, f"{path}.distance_m")
        for key in ("frequency_hz", "walk_speed_m_s"):
            if getattr(self, key)[0] < 0:
                raise ConfigError(f"{path}.{key}: expected values >= 0, got {list(getattr(self, key))}")
        check_bounds(self, path)


@dataclass
class HandheldConfig:
    """A moving handheld-like camera (TUM RGB-D fr1/rpy, fr1/xyz-like): a base pose looking at the scene centre,
    shaken by roll/pitch/yaw and x/y/z sinusoids with random phases.

    The peak angular rate about each axis is ``2 pi f A``; the defaults (A = 12 deg, f in 0.25..0.5 Hz) give
    19..38 deg/s per axis, like fr1/rpy (about 40 deg/s on average).

    Args:
        enabled: add the handheld camera(s) as the last view(s).
        num_views: how many handheld cameras (each with its own base azimuth and shake).
        radius, height: base position (azimuth drawn per sequence).
        look_at: point the base pose looks at.
        rpy_amplitude_deg: (roll, pitch, yaw) amplitudes: about the optical axis z, the x axis, the y axis.
        xyz_amplitude_m: (x, y, z) amplitudes in the camera frame, metres.
        frequency_hz: [low, high] frequency of each sinusoid, drawn per axis.
        motions: named :class:`MotionConfig` regimes; when given, each handheld view draws one by weight and
            uses its amplitudes, frequencies, walk and (indoor scenes) viewing distance instead of
            ``rpy_amplitude_deg``, ``xyz_amplitude_m`` and ``frequency_hz``. Empty: the single regime above.
    """

    enabled: bool = False
    num_views: int = bounded(1, ge=1)
    radius: float = bounded(2.5, gt=0)
    height: float = 1.5
    look_at: tuple[float, float, float] = (0.0, 0.0, 0.6)
    rpy_amplitude_deg: tuple[float, float, float] = bounded((12.0, 12.0, 12.0), ge=0, le=90)
    xyz_amplitude_m: tuple[float, float, float] = bounded((0.1, 0.1, 0.1), ge=0)
    frequency_hz: Union[float, tuple[float, float]] = (0.25, 0.5)
    motions: dict[str, MotionConfig] = field(default_factory=dict)

    def __post_init__(self):
        self.frequency_hz = _range(self.frequency_hz, "generate.cameras.handheld.frequency_hz", positive=False)
        if self.frequency_hz[0] < 0:
            raise ConfigError(f"generate.cameras.handheld.frequency_hz: expected values >= 0, got {list(self.frequency_hz)}")
        check_bounds(self, "generate.cameras.handheld")
        for name, motion in self.motions.items():
            motion.normalise(f"generate.cameras.handheld.motions.{name}")
        if self.motions and sum(m.weight for m in self.motions.values()) <= 0:
            raise ConfigError("generate.cameras.handheld.motions: expected at least one motion with weight > 0")


@dataclass
class CamerasConfig:
    """Pinhole intrinsics shared by every view, a static rig and an optional moving handheld camera.

    Intrinsics: ``fx``, ``fy`` (and optionally ``cx``, ``cy``, default the image centre ``(W - 1) / 2``,
    ``(H - 1) / 2``) in pixels; or, when ``fx`` is null, ``fov_deg`` (horizontal field of view, square pixels).

    Args:
        width, height: image size in pixels.
        fov_deg: horizontal field of view in degrees (used when ``fx`` is null).
        fx, fy, cx, cy: pinhole intrinsics in pixels, or null.
        rig: the static views.
        handheld: the moving view(s) (the last views when enabled).
    """

    width: int = bounded(80, gt=0, le=8192)   # 8192: a common GL_MAX_TEXTURE_SIZE; larger is a typo
    height: int = bounded(60, gt=0, le=8192)
    fov_deg: float = bounded(60.0, gt=0, lt=180)
    fx: float | None = bounded(None, gt=0)
    fy: float | None = bounded(None, gt=0)
    cx: float | None = None
    cy: float | None = None
    rig: RigConfig = field(default_factory=RigConfig)
    handheld: HandheldConfig = field(default_factory=HandheldConfig)

    def __post_init__(self):
        check_bounds(self, "generate.cameras")
        if self.num_views == 0:
            raise ConfigError("generate.cameras: no views: set rig.num_views > 0 or handheld.enabled: true")
        if (self.fy is not None) and self.fx is None:
            raise ConfigError("generate.cameras.fx: required when fy is given")

    @property
    def num_views(self) -> int:
        return self.rig.num_views + (self.handheld.num_views if self.handheld.enabled else 0)

    def intrinsics(self) -> tuple[float, float, float, float]:
        """(fx, fy, cx, cy) in pixels."""
        import math

        W, H = self.width, self.height
        if self.fx is None:
            fx = 0.5 * W / math.tan(0.5 * math.radians(self.fov_deg))
            fy = fx
        else:
            fx = float(self.fx)
            fy = float(self.fy if self.fy is not None else self.fx)
        cx = (W - 1) / 2.0 if self.cx is None else float(self.cx)
        cy = (H - 1) / 2.0 if self.cy is None else float(self.cy)
        return fx, fy, cx, cy


FURNITURE_KINDS: tuple[str, ...] = ("table", "desk", "shelf", "cabinet", "counter", "chair")


@dataclass
class IndoorConfig:
    """The ``generate.indoor`` section, used when ``generate.scene: indoor``: a furnished, cluttered room that
    the handheld camera moves inside, like the real captures (TUM RGB-D fr1 desks, 7-Scenes kitchen).

    Furniture is built from boxes and cylinders (and real chair meshes), stands free or against a wall, and
    carries clutter on its surfaces (table and desk tops, shelf boards, cabinet and counter tops); larger
    clutter stands on the floor. Furniture, clutter and the room are static background (label -1); the
    ``generate.objects`` section gives the few moving objects (label k, flying in front of a view's target)
    and the pool of primitives and mesh files that clutter is drawn from. ``generate.room`` gives ``ceiling``;
    its ``size`` is replaced by the ranges here. Each handheld view looks at a point on the furniture or its
    clutter from ``cameras.handheld.motions.<regime>.distance_m`` away, from ``camera_height_m`` up, and is
    kept ``camera_clearance_m`` away from every static surface and moving object along its whole path.

    Args:
        room_x, room_y: [low, high] interior extents of the room along x and y, metres (drawn per sequence).
        room_height: [low, high] floor-to-ceiling height, metres.
        furniture_count: [low, high] pieces of furniture per room (fewer when the room is full).
        furniture_kinds: kinds to draw from: table, desk, shelf, cabinet, counter (a kitchen run with wall
            cabinets above), chair.
        furniture_meshes: stems of mesh files of ``objects.mesh_dir`` / ``mesh_files`` that are chairs (the
            longest axis is taken as up; scaled to ``chair_mesh_height``), drawn for a chair with probability
            ``objects.mesh_ratio``; the other mesh files are clutter.
        chair_mesh_height: [low, high] height of a chair mesh, metres.
        clutter_per_m2: [low, high] clutter objects per square metre of support surface (drawn per sequence).
        clutter_size: [low, high] largest extent of clutter on surfaces, metres (log-uniform).
        floor_clutter: [low, high] number of larger objects standing on the floor.
        floor_clutter_size: [low, high] their largest extent, metres.
        camera_height_m: [low, high] height of the handheld camera above the floor, metres.
        camera_clearance_m: smallest distance from the camera to any static surface along its path, metres.
        max_background_m: a view is kept only if, continued past its point of interest, the optical axis meets
            the floor, a wall or the ceiling within this distance (metres): what lies behind is near, as in
            the real captures, not the far side of a large room.
        moving_region_m: half extents (x, y, z) of the box in which a moving object's origin stays, metres,
            centred a third of the way from a view's point of interest to its camera (object k: view k mod V).
        placement_tries: candidate camera placements per view before the room is drawn again.
    """

    room_x: Union[float, tuple[float, float]] = (3.0, 8.0)
    room_y: Union[float, tuple[float, float]] = (3.0, 8.0)
    room_height: Union[float, tuple[float, float]] = (2.5, 3.0)
    furniture_count: Union[int, tuple[int, int]] = (4, 8)
    furniture_kinds: list[str] = field(default_factory=lambda: list(FURNITURE_KINDS))
    furniture_meshes: list[str] = field(default_factory=lambda: ["chair_model"])
    chair_mesh_height: Union[float, tuple[float, float]] = (0.8, 1.0)
    clutter_per_m2: Union[float, tuple[float, float]] = (6.0, 14.0)
    clutter_size: Union[float, tuple[float, float]] = (0.03, 0.3)
    floor_clutter: Union[int, tuple[int, int]] = (1, 4)
    floor_clutter_size: Union[float, tuple[float, float]] = (0.25, 0.6)
    camera_height_m: Union[float, tuple[float, float]] = (1.1, 1.7)
    camera_clearance_m: float = bounded(0.3, ge=0)
    max_background_m: float = bounded(2.0, gt=0)
    moving_region_m: tuple[float, float, float] = bounded((0.6, 0.6, 0.5), gt=0)
    placement_tries: int = bounded(60, ge=1)

    def __post_init__(self):
        p = "generate.indoor"
        for key in ("room_x", "room_y", "room_height", "chair_mesh_height", "clutter_size", "floor_clutter_size",
                    "camera_height_m"):
            setattr(self, key, _range(getattr(self, key), f"{p}.{key}"))
        for key in ("furniture_count", "floor_clutter", "clutter_per_m2"):
            setattr(self, key, _range(getattr(self, key), f"{p}.{key}", positive=False))
            if getattr(self, key)[0] < 0:
                raise ConfigError(f"{p}.{key}: expected values >= 0, got {list(getattr(self, key))}")
        for i, kind in enumerate(self.furniture_kinds):
            if kind not in FURNITURE_KINDS:
                raise ConfigError(f"{p}.furniture_kinds[{i}]: expected one of {', '.join(FURNITURE_KINDS)}, "
                                  f"got {kind!r}")
        if self.furniture_count[1] > 0 and not self.furniture_kinds:
            raise ConfigError(f"{p}.furniture_kinds: empty, but furniture_count is {list(self.furniture_count)}")
        if self.room_x[0] < 2.0 or self.room_y[0] < 2.0 or self.room_height[0] < 2.0:
            raise ConfigError(f"{p}: rooms must be at least 2 m in x, y and height (room_x {list(self.room_x)}, "
                              f"room_y {list(self.room_y)}, room_height {list(self.room_height)})")
        if self.camera_height_m[1] + self.camera_clearance_m >= self.room_height[0]:
            raise ConfigError(f"{p}.camera_height_m: cameras up to {self.camera_height_m[1]} m (+ clearance "
                              f"{self.camera_clearance_m} m) do not fit under a {self.room_height[0]} m ceiling")
        if self.camera_height_m[0] <= self.camera_clearance_m:
            raise ConfigError(f"{p}.camera_height_m: expected heights above camera_clearance_m "
                              f"({self.camera_clearance_m} m), got {list(self.camera_height_m)}")
        check_bounds(self, p)


@dataclass
class StoreConfig:
    """Optional arrays stored with every sequence (points, labels, poses and intrinsics always are).

    Args:
        normals: (T, V, N, 3) float16 camera-frame normals of the sampled points (from the ideal depth image).
        depth: (T, V, H, W) uint16 millimetre depth images (after the sensor model).
        instance: (T, V, H, W) int16 instance images (after the sensor model's dropout).
    """

    normals: bool = True
    depth: bool = False
    instance: bool = False


@dataclass
class GenerateConfig:
    """The ``generate:`` section: what one sequence looks like.

    Args:
        num_frames: T frames per sequence.
        fps: frames per second (timestamps t / fps).
        num_points: N points sampled per (frame, view).
        scene: ``objects`` (objects moving in a room, seen by a rig and/or handheld cameras: the original
            default) or ``indoor`` (the handheld camera inside a furnished, cluttered room with a few moving
            objects, like the real captures; see :class:`IndoorConfig`).
        indoor: the indoor scene's room, furniture, clutter and camera placement (used when scene: indoor).
        objects, room, trajectories, cameras, store: see their classes.
        renderer: ``raycast`` (Open3D/Embree on the CPU; deterministic across machines), ``pyrender`` (OpenGL)
            or ``moderngl`` (batched OpenGL: many frames and views per call; docs/rendering.md).
        sensor: the sensor model: ``ideal``, ``kinect`` or a mapping of
            :class:`synthseq.generator.sensor.SensorConfig` fields (``{model: kinect, ...}``).
    """

    num_frames: int = bounded(8, gt=0, le=100_000)
    fps: float = bounded(30.0, gt=0)
    num_points: int = bounded(256, gt=0, le=1_048_576)
    scene: Literal["objects", "indoor"] = "objects"
    indoor: IndoorConfig = field(default_factory=IndoorConfig)
    objects: ObjectsConfig = field(default_factory=ObjectsConfig)
    room: RoomConfig = field(default_factory=RoomConfig)
    trajectories: TrajectoryConfig = field(default_factory=TrajectoryConfig)
    cameras: CamerasConfig = field(default_factory=CamerasConfig)
    renderer: Literal["raycast", "pyrender", "moderngl"] = "raycast"
    sensor: Any = "kinect"
    store: StoreConfig = field(default_factory=StoreConfig)

    def __post_init__(self):
        check_bounds(self, "generate")
        from synthseq.generator.sensor import sensor_config_from

        self.sensor = sensor_config_from(self.sensor, "generate.sensor")
        _check_geometry(self)


def _check_geometry(cfg: GenerateConfig) -> None:
    """Cross-field checks: objects fit in their region and in the room, cameras are inside the room (errors);
    cameras outside the objects' reach (a warning: objects could pass through a camera)."""
    import logging

    o, r, c = cfg.objects, cfg.room, cfg.cameras
    if cfg.scene == "indoor":
        _check_indoor(cfg)
        return
    # The largest object's bounding sphere has radius <= sqrt(3)/2 * size (half the diagonal of a cube).
    radius = 0.5 * 3 ** 0.5 * o.size[1]
    margin = r.margin if r.enabled else 0.0
    half = [0.5 * o.region[0], 0.5 * o.region[1]]
    if r.enabled:
        half = [min(half[0], 0.5 * r.size[0]), min(half[1], 0.5 * r.size[1])]
    top = min(o.region[2], r.size[2]) if r.enabled else o.region[2]
    if min(half) < radius + margin or top < 2 * (radius + margin):
        raise ConfigError(
            f"generate.objects.size: objects up to {o.size[1]} m (bounding radius {radius:.3f} m) do not fit in "
            f"generate.objects.region {list(o.region)}" + (" inside generate.room.size" if r.enabled else ""))
    reach = (half[0] ** 2 + half[1] ** 2) ** 0.5 + 0.5 * 3 ** 0.5 * o.size[1]
    closest = []
    if c.rig.num_views:
        closest.append(("rig", c.rig.radius - c.rig.radius_jitter))
    if c.handheld.enabled:
        closest.append(("handheld", c.handheld.radius - max(c.handheld.xyz_amplitude_m)))
    for name, rad in closest:
        if rad <= reach:
            logging.getLogger(__name__).warning(
                "generate.cameras.%s: cameras as close as %.2f m to the z axis may meet objects, which reach "
                "%.2f m from it (generate.objects.region and size)", name, rad, reach)
    if r.enabled:
        half_room = 0.5 * min(r.size[0], r.size[1])
        views = [("rig", c.rig.radius + c.rig.radius_jitter, c.rig.height, c.rig.height_jitter)] if c.rig.num_views else []
        if c.handheld.enabled:
            amp = max(c.handheld.xyz_amplitude_m)
            views.append(("handheld", c.handheld.radius + amp, c.handheld.height, amp))
        for name, rad, height, dz in views:
            if rad >= half_room or height + dz >= r.size[2] or height - dz <= 0:
                raise ConfigError(
                    f"generate.cameras.{name}: cameras (radius up to {rad:g} m, height {height:g} +- {dz:g} m) "
                    f"must stay inside generate.room.size {list(r.size)}")


def _check_indoor(cfg: GenerateConfig) -> None:
    """Cross-field checks of an indoor scene: a room, handheld cameras only, moving objects that fit."""
    ind, o, c = cfg.indoor, cfg.objects, cfg.cameras
    if not cfg.room.enabled:
        raise ConfigError("generate.room.enabled: an indoor scene needs its room (set it true)")
    if c.rig.num_views or not c.handheld.enabled:
        raise ConfigError("generate.cameras: an indoor scene is seen by handheld cameras only: set "
                          "rig.num_views: 0 and handheld.enabled: true")
    if 0.5 * 3 ** 0.5 * o.size[1] > min(ind.moving_region_m):
        raise ConfigError(f"generate.objects.size: moving objects up to {o.size[1]} m do not fit in "
                          f"generate.indoor.moving_region_m {list(ind.moving_region_m)} (half extents)")


def resolve_paths(cfg: GenerateConfig, base_dir) -> GenerateConfig:
    """A copy of ``cfg`` whose relative ``objects.mesh_dir`` / ``objects.mesh_files`` are made absolute against
    ``base_dir`` (the directory of the config file they came from). Absolute paths are kept."""
    base = Path(base_dir)

    def fix(p):
        if p is None:
            return None
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else (base / q).resolve())

    out = copy.copy(cfg)  # not dataclasses.replace: that would run the cross-field checks (and warnings) again
    out.objects = dataclasses.replace(cfg.objects, mesh_dir=fix(cfg.objects.mesh_dir),
                                      mesh_files=[fix(p) for p in cfg.objects.mesh_files])
    return out


def load_generate_config(path, overrides: list[str] | None = None) -> GenerateConfig:
    """Read the ``generate:`` section of a YAML config file, resolving mesh paths relative to the file.

    Args:
        path: a YAML file with a ``generate:`` mapping (other sections are ignored).
        overrides: ``key.path=value`` strings relative to the whole file (``generate.num_frames=4``).

    Raises:
        FileNotFoundError: no such file. ConfigError: bad value, naming the key path and the file.
    """
    from synthseq.config import apply_overrides, from_dict, load_yaml

    p = Path(path)
    data = apply_overrides(load_yaml(p), overrides or [])
    try:
        cfg = from_dict(GenerateConfig, data.get("generate"), "generate")
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None
    return resolve_paths(cfg, p.resolve().parent)
