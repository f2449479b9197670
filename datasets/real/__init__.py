"""Real depth captures as PointSequences: ``load_capture(path, **options)`` detects the format and reads it.

Formats (detected in this order):

- **TUM RGB-D** folder: ``depth.txt`` (``timestamp filename`` list), ``depth/*.png`` (uint16, metres =
  value / 5000), optional ``groundtruth.txt`` (``t tx ty tz qx qy qz qw``, world_from_camera). See
  ``synthseq.datasets.real.tum``.
- **7-Scenes** folder: ``frame-XXXXXX.depth.png`` (uint16 millimetres, 0 and 65535 invalid) with
  ``frame-XXXXXX.pose.txt`` (4x4 camera-to-world). See ``synthseq.datasets.real.sevenscenes``.
- **Point-cloud folder** (or one file): ``*.ply``/``*.pcd`` (Open3D), ``*.npy`` ((M, 3) or (H, W, 3)),
  ``*.xyz``/``*.txt`` (x y z per line), ordered by file name, no poses. See
  ``synthseq.datasets.real.pointcloud_folder``.

Every reader returns points (T, 1, N, 3) float32 in the OpenCV camera frame, num_valid (T, 1),
camera_poses (T, 1, 4, 4) world_from_camera or None, intrinsics (1, 3, 3), image_size (1, 2) as (W, H),
timestamps (T,). Common options (keyword-only): ``num_points`` (N, default 1024), ``start``, ``stride``,
``max_frames`` (frame selection, applied before reading any image), ``min_depth_m``/``max_depth_m``,
``voxel_size_m`` (voxel-grid downsampling before sampling N), ``seed`` (sampling), ``keep_depth``.
"""

from __future__ import annotations

from pathlib import Path

from synthseq.datasets.types import PointSequence
from synthseq.errors import DataError

__all__ = ["load_capture", "detect_format"]

FORMATS = ("tum", "7scenes", "pointclouds")


def detect_format(path) -> str:
    """The capture format of ``path``: ``'tum'``, ``'7scenes'`` or ``'pointclouds'``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataError: a folder in none of the formats (the message says what each format needs).
    """
    from synthseq.datasets.real.pointcloud_folder import CLOUD_SUFFIXES

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: capture not found")
    if path.is_file():
        if path.suffix.lower() in CLOUD_SUFFIXES:
            return "pointclouds"
        raise DataError(f"{path}: not a capture folder or a point-cloud file ({', '.join(CLOUD_SUFFIXES)})")
    if (path / "depth.txt").is_file() or (path / "depth").is_dir():
        return "tum"
    if any(path.glob("frame-*.depth.png")):
        return "7scenes"
    if any(p.suffix.lower() in CLOUD_SUFFIXES for p in path.iterdir() if p.is_file()):
        return "pointclouds"
    raise DataError(
        f"{path}: unknown capture format; expected a TUM RGB-D folder (depth.txt + depth/*.png), a 7-Scenes "
        f"folder (frame-XXXXXX.depth.png + .pose.txt) or a folder of point clouds ({', '.join(CLOUD_SUFFIXES)})")


def load_capture(path, *, format: str | None = None, **options) -> PointSequence:
    """Read a real capture folder (TUM RGB-D, 7-Scenes, or point clouds) as a PointSequence with V = 1.

    Args:
        path: capture folder (or one point-cloud file).
        format: force ``'tum'``, ``'7scenes'`` or ``'pointclouds'`` instead of detecting it.
        **options: reader options; see the module docstring and each reader (``read_tum``,
            ``read_7scenes``, ``read_pointcloud_folder``). Unknown options raise TypeError.

    Returns:
        PointSequence: points (T, 1, N, 3) float32 camera frame, num_valid (T, 1) int32, camera_poses
        (T, 1, 4, 4) float64 world_from_camera or None, intrinsics (1, 3, 3), image_size (1, 2), timestamps
        (T,); ``name`` is the folder path.

    Raises:
        FileNotFoundError: missing folder or required file (depth.txt, a listed PNG, a pose file).
        DataError: malformed content (names the file and, for text files, the line).
    """
    fmt = format or detect_format(path)
    if fmt == "tum":
        from synthseq.datasets.real.tum import read_tum

        return read_tum(path, **options)
    if fmt == "7scenes":
        from synthseq.datasets.real.sevenscenes import read_7scenes

        return read_7scenes(path, **options)
    if fmt == "pointclouds":
        from synthseq.datasets.real.pointcloud_folder import read_pointcloud_folder

        return read_pointcloud_folder(path, **options)
    raise ValueError(f"load_capture: format must be one of {FORMATS}, got {format!r}")
