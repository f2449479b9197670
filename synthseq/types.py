"""Core data types shared by the generator, the shard files, the real-capture readers and the trainer
(their geometry: :mod:`synthseq.geometry`).

Conventions (stated once here, tested in tests/test_types.py and tests/test_geometry.py):

- Units are metres and seconds.
- Poses are 4x4 homogeneous matrices acting on column vectors, named ``a_from_b``:
  ``world_from_camera @ p_camera = p_world``.
- Camera axes are OpenCV (x right, y down, z forward) everywhere something is stored. Renderers that use
  OpenGL axes (pyrender: y up, z backward) convert at their boundary with ``OPENCV_FROM_OPENGL``.
- Depth is z-depth (distance along the optical axis), not ray length. Invalid depth is 0 (NaN in float).
- Quaternions, where they appear (TUM files), are (x, y, z, w) on disk, as TUM writes them.
- Dimension letters: T frames, V views, N points per (frame, view), K objects, H x W image size.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

BACKGROUND_LABEL = -1


def _check_array(name: str, value, shape: tuple, dtype=None, allow_none: bool = False):
    """Return ``value`` as an array after checking its shape (None entries are free) and dtype kind."""
    if value is None:
        if allow_none:
            return None
        raise ValueError(f"{name}: expected an array of shape {_fmt_shape(shape)}, got None")
    arr = np.asarray(value)
    if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
        raise ValueError(f"{name}: expected shape {_fmt_shape(shape)}, got {arr.shape}")
    if dtype is not None and arr.dtype != np.dtype(dtype):
        raise ValueError(f"{name}: expected dtype {np.dtype(dtype)}, got {arr.dtype}")
    return arr


def _fmt_shape(shape: tuple) -> str:
    return "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"


@dataclass(frozen=True)
class Camera:
    """A pinhole camera: intrinsics and image size. Pixel (u, v) = K @ (x/z, y/z, 1) in OpenCV axes.

    Args:
        intrinsics: (3, 3) float64, K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], pixels.
        width, height: image size in pixels.
    """

    intrinsics: np.ndarray
    width: int
    height: int

    def __post_init__(self):
        K = _check_array("Camera.intrinsics", np.asarray(self.intrinsics, dtype=np.float64), (3, 3))
        object.__setattr__(self, "intrinsics", K)
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"Camera: image size must be positive, got {self.width}x{self.height}")
        if K[0, 0] <= 0 or K[1, 1] <= 0:
            raise ValueError(f"Camera: focal lengths must be positive, got fx={K[0, 0]}, fy={K[1, 1]}")

    @classmethod
    def from_fov(cls, fov_deg: float, width: int, height: int) -> "Camera":
        """A camera with square pixels, principal point at the image centre and horizontal field of view."""
        focal_px = 0.5 * width / np.tan(0.5 * np.deg2rad(fov_deg))
        return cls.from_focal(focal_px, focal_px, (width - 1) / 2.0, (height - 1) / 2.0, width, height)

    @classmethod
    def from_focal(cls, fx: float, fy: float, cx: float, cy: float, width: int, height: int) -> "Camera":
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        return cls(K, int(width), int(height))

    # focal lengths and principal point, pixels: entries of K
    fx = property(lambda self: float(self.intrinsics[0, 0]))
    fy = property(lambda self: float(self.intrinsics[1, 1]))
    cx = property(lambda self: float(self.intrinsics[0, 2]))
    cy = property(lambda self: float(self.intrinsics[1, 2]))


@dataclass(frozen=True)
class PointSequence:
    """One sequence of T frames seen by V cameras, as fixed-size point clouds with ground truth.

    The same type comes out of the generator (``generate_sequence``), the shard reader and the real-capture
    readers (``load_capture``, V = 1, ``labels``/``object_poses`` None, ``camera_poses`` None when the
    capture has no ground truth).

    Args:
        points: (T, V, N, 3) float32, camera frame (OpenCV), metres. Rows past ``num_valid`` are resampled
            copies of valid points (sampling with replacement), or zeros when no point was valid.
        num_valid: (T, V) int32, valid points before sampling to N.
        intrinsics: (V, 3, 3) float64.
        image_size: (V, 2) int32, (W, H).
        timestamps: (T,) float64, seconds.
        camera_poses: (T, V, 4, 4) float64 world_from_camera, or None (no ground truth).
        labels: (T, V, N) int16 object index into ``object_names``, -1 = background/room; or None.
        object_poses: (T, K, 4, 4) float64 world_from_object, or None.
        normals: (T, V, N, 3) float16 camera frame, or None.
        depth: (T, V, H, W) uint16 millimetres (0 = invalid), or None. Requires all views the same size.
        instance: (T, V, H, W) int16 object index (-1 background), or None.
        object_names: K names; each names an entry of ``meshes`` (canonical geometry, object frame).
        meshes: name -> (vertices (M, 3) float64, faces (F, 3) int64), object frame, metres.
        seed: the seed the sequence was generated from (None for real captures).
        fps: frames per second.
        name: free-form identifier (sequence id, capture folder).
    """

    points: np.ndarray
    num_valid: np.ndarray
    intrinsics: np.ndarray
    image_size: np.ndarray
    timestamps: np.ndarray
    camera_poses: np.ndarray | None = None
    labels: np.ndarray | None = None
    object_poses: np.ndarray | None = None
    normals: np.ndarray | None = None
    depth: np.ndarray | None = None
    instance: np.ndarray | None = None
    object_names: tuple = ()
    meshes: Mapping[str, tuple] = field(default_factory=dict)
    seed: int | None = None
    fps: float = 30.0
    name: str = ""

    def __post_init__(self):
        pts = _check_array("points", self.points, (None, None, None, 3), np.float32)
        T, V, N, _ = pts.shape
        _check_array("num_valid", self.num_valid, (T, V), np.int32)
        _check_array("intrinsics", self.intrinsics, (V, 3, 3), np.float64)
        _check_array("image_size", self.image_size, (V, 2), np.int32)
        _check_array("timestamps", self.timestamps, (T,), np.float64)
        _check_array("camera_poses", self.camera_poses, (T, V, 4, 4), np.float64, allow_none=True)
        _check_array("labels", self.labels, (T, V, N), np.int16, allow_none=True)
        _check_array("normals", self.normals, (T, V, N, 3), np.float16, allow_none=True)
        K = len(self.object_names)
        if self.object_poses is not None:
            _check_array("object_poses", self.object_poses, (T, K, 4, 4), np.float64)
        if self.depth is not None:
            d = _check_array("depth", self.depth, (T, V, None, None), np.uint16)
            W, H = int(self.image_size[0, 0]), int(self.image_size[0, 1])
            if d.shape[2:] != (H, W):
                raise ValueError(f"depth: expected (T, V, H, W) = {(T, V, H, W)}, got {d.shape}")
        if self.instance is not None:
            _check_array("instance", self.instance, (T, V, None, None), np.int16)
            if self.depth is not None and self.instance.shape != self.depth.shape:
                raise ValueError(f"instance: expected shape {self.depth.shape}, got {self.instance.shape}")
        object.__setattr__(self, "object_names", tuple(str(n) for n in self.object_names))
        for n in self.object_names:
            if n not in self.meshes:
                raise ValueError(f"object_names: {n!r} has no entry in meshes")

    @property
    def num_frames(self) -> int:
        return int(self.points.shape[0])

    @property
    def num_views(self) -> int:
        return int(self.points.shape[1])

    @property
    def num_points(self) -> int:
        return int(self.points.shape[2])

    @property
    def num_objects(self) -> int:
        return len(self.object_names)

    def camera(self, view: int) -> Camera:
        """The pinhole camera of view ``view``."""
        W, H = (int(x) for x in self.image_size[view])
        return Camera(self.intrinsics[view], W, H)

    def replace(self, **changes) -> "PointSequence":
        """A copy with some fields replaced (validated again)."""
        return dataclasses.replace(self, **changes)


def sample_fixed(num_points: int, num_valid: int, rng: np.random.Generator) -> np.ndarray:
    """Indices that pick exactly ``num_points`` of ``num_valid`` items, in **random order**: without
    replacement when there are enough, otherwise all of them (shuffled) then random repeats.

    The order matters: callers index row-major pixel lists with these indices, and code downstream takes
    "the first k points" as a random subset (the trainer's alignment subset, the discriminator's patch
    centres). Sorted indices made stored clouds raster-ordered, so the first half of a cloud was the top
    half of the image (issue 9; shards before format_version 2). When ``num_valid < num_points`` the first
    ``num_valid`` rows are still every valid item once (readers rely on that), just shuffled.

    Returns:
        (num_points,) int64 (empty-safe: all zeros when ``num_valid`` is 0, the caller zeroes those rows).
    """
    if num_valid <= 0:
        return np.zeros(num_points, dtype=np.int64)
    if num_valid >= num_points:
        # Generator.choice without replacement returns its sample shuffled (shuffle=True by default).
        return rng.choice(num_valid, size=num_points, replace=False).astype(np.int64, copy=False)
    extra = rng.integers(0, num_valid, size=num_points - num_valid)
    return np.concatenate([rng.permutation(num_valid), extra]).astype(np.int64, copy=False)
