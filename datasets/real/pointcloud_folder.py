"""Folders of point clouds (PLY/PCD via Open3D, NPY, XYZ text) read as a pose-less PointSequence.

Each file is one frame, frames ordered by file name. The points are taken as they are stored, in the
file's own frame, which is treated as the camera frame (OpenCV axes for clouds back-projected from depth,
e.g. PCL's organised Kinect clouds). There are no poses (``camera_poses`` None) and no images: the
``intrinsics`` and ``image_size`` of the result are a **nominal** PrimeSense/Kinect camera
(fx = fy = 525, cx = 319.5, cy = 239.5, 640 x 480), there only because PointSequence requires them; do not
project with them unless the clouds really came from such a camera (pass ``intrinsics=`` then).
NaN/inf points (organised clouds' "no return") are dropped; a file with no finite point is an error.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from synthseq.datasets.real.depth import (
    DEFAULT_NUM_POINTS,
    check_intrinsics,
    check_num_points,
    cloud_to_fixed,
    frame_rng,
    make_sequence,
    select_frames,
)
from synthseq.errors import DataError
from synthseq.types import PointSequence

log = logging.getLogger(__name__)

CLOUD_SUFFIXES = (".ply", ".pcd", ".npy", ".xyz")
NOMINAL_INTRINSICS = np.array([[525.0, 0.0, 319.5], [0.0, 525.0, 239.5], [0.0, 0.0, 1.0]])
NOMINAL_IMAGE_SIZE = (640, 480)


def read_cloud_file(path) -> np.ndarray:
    """Read one point-cloud file as (M, 3) float32 finite points.

    PLY/PCD via Open3D (imported here, on first use); NPY arrays of shape (M, >=3) or (H, W, >=3) (first
    three channels); XYZ text with x y z (extra columns ignored) per line, ``#`` comments.

    Raises:
        FileNotFoundError: no such file.
        DataError: unreadable, empty, or no finite point (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: point cloud not found")
    suffix = path.suffix.lower()
    if suffix in (".ply", ".pcd"):
        try:
            import open3d as o3d
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError(f"reading {path.name} needs Open3D: pip install 'synthseq[render]' "
                              "(or open3d-cpu)") from e
        pcd = o3d.io.read_point_cloud(str(path))
        pts = np.asarray(pcd.points, dtype=np.float64)
        if pts.size == 0:
            raise DataError(f"{path}: empty or unreadable point cloud (Open3D read 0 points)")
    elif suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise DataError(f"{path}: not a readable .npy array ({str(e).splitlines()[0] if str(e) else e!r})") from None
        if arr.dtype.kind not in "fiu" or arr.ndim not in (2, 3) or arr.shape[-1] < 3:
            raise DataError(f"{path}: expected a numeric array of shape (M, 3) or (H, W, 3), got "
                            f"{arr.dtype} {arr.shape}")
        pts = arr[..., :3].reshape(-1, 3).astype(np.float64)
    elif suffix == ".xyz":
        pts = _read_xyz(path)
    else:
        raise DataError(f"{path}: unsupported point-cloud file type {suffix!r} (expected {', '.join(CLOUD_SUFFIXES)})")
    if len(pts) == 0:
        raise DataError(f"{path}: empty point cloud")
    finite = np.all(np.isfinite(pts), axis=1)
    if not finite.any():
        raise DataError(f"{path}: no finite point ({len(pts)} points, all NaN/inf)")
    return pts[finite].astype(np.float32)


def _read_xyz(path: Path) -> np.ndarray:
    from synthseq.datasets.trajectory import read_text_lines

    rows = []
    for lineno, text in read_text_lines(path):
        fields = text.replace(",", " ").split()
        try:
            if len(fields) < 3:
                raise ValueError
            rows.append([float(f) for f in fields[:3]])
        except ValueError:
            raise DataError(f"{path}:{lineno}: expected 'x y z', got {text[:80]!r}") from None
    return np.asarray(rows, dtype=np.float64).reshape(-1, 3)


def list_clouds(root) -> list[Path]:
    """Point-cloud files of a folder (suffixes ``CLOUD_SUFFIXES``), sorted by name; or ``[root]`` for a file."""
    root = Path(root)
    if root.is_file():
        return [root]
    return sorted((p for p in root.iterdir() if p.is_file() and p.suffix.lower() in CLOUD_SUFFIXES),
                  key=lambda p: p.name)


def read_pointcloud_folder(path, *, num_points: int = DEFAULT_NUM_POINTS, start: int = 0, stride: int = 1,
                           max_frames: int | None = None, min_depth_m: float = 0.0,
                           max_depth_m: float | None = None, voxel_size_m: float | None = None, seed: int = 0,
                           intrinsics=None, fps: float = 30.0,
                           frame_range: tuple[int, int | None] | None = None) -> PointSequence:
    """Read a folder of point clouds (or a single file) as a PointSequence (V = 1, no poses).

    Args:
        path: folder (files ordered by name) or one file.
        num_points, start, stride, max_frames, voxel_size_m, seed, frame_range: as ``read_tum`` (frame
            indices count the files in name order).
        min_depth_m, max_depth_m: keep points with z in this range (z = the file's third coordinate).
        intrinsics: K to record instead of the nominal one (see the module docstring).
        fps: timestamps are frame index / fps.

    Returns:
        PointSequence with camera_poses None.

    Raises:
        FileNotFoundError: no such path, or a folder with no point-cloud file.
        DataError: a file unreadable, empty or with no finite point.
    """
    root = Path(path)
    num_points = check_num_points(num_points)
    if not root.exists():
        raise FileNotFoundError(f"{root}: not found")
    files = list_clouds(root)
    if not files:
        raise FileNotFoundError(f"{root}: no point-cloud files ({', '.join(CLOUD_SUFFIXES)})")
    K = check_intrinsics(intrinsics, NOMINAL_INTRINSICS)
    sel = select_frames(len(files), start, stride, max_frames, frame_range, root)
    points, num_valid = [], []
    for i in sel:
        cloud = read_cloud_file(files[i])
        p, n = cloud_to_fixed(cloud, num_points, frame_rng(seed, i), min_depth_m, max_depth_m, voxel_size_m)
        if n == 0:
            raise DataError(f"{files[i]}: no point left after the depth range / filters "
                            f"(min_depth_m={min_depth_m}, max_depth_m={max_depth_m})")
        points.append(p)
        num_valid.append(n)
    return make_sequence(points, num_valid, K, NOMINAL_IMAGE_SIZE, sel.astype(np.float64) / float(fps), None,
                         str(root), fps=float(fps))
