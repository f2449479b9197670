"""Microsoft 7-Scenes folders (Shotton et al. 2013): frame-XXXXXX.depth.png (mm) + frame-XXXXXX.pose.txt (4x4).

Conventions (../shared/data/real/7scenes_redkitchen/PROVENANCE.md):
- Depth PNG: 640x480 uint16 millimetres; 0 and 65535 are invalid.
- ``frame-XXXXXX.pose.txt``: 4 rows of 4 numbers, camera-to-world (world_from_camera), metres. The
  rotation blocks are slightly non-orthonormal (|R R^T - I| ~ 1e-4); they are projected onto SO(3) here.
- Intrinsics: ``camera-intrinsics.txt`` (3x3) when the folder has one, else the usual approximation
  fx = fy = 585, cx = 320, cy = 240. Frames are 30 Hz; timestamps are frame number / 30 s.
- Colour and depth come from different cameras and are not registered; only depth is read.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from synthseq.datasets.real.depth import (
    DEFAULT_NUM_POINTS,
    check_intrinsics,
    check_num_points,
    depth_to_fixed,
    frame_rng,
    make_sequence,
    read_depth_png,
    select_frames,
)
from synthseq.datasets.trajectory import parse_floats, read_text_lines
from synthseq.errors import DataError
from synthseq.types import PointSequence

log = logging.getLogger(__name__)

SEVENSCENES_INTRINSICS = np.array([[585.0, 0.0, 320.0], [0.0, 585.0, 240.0], [0.0, 0.0, 1.0]])
SEVENSCENES_FPS = 30.0
_FRAME = re.compile(r"^frame-(\d+)\.depth\.png$")
# A pose whose rotation is further than this from orthonormal is not a rotation (wrong file, transposed
# 3x4, ...); 7-Scenes' own poses are within 1.4e-4.
_ORTHONORMAL_TOLERANCE = 1e-2


def read_pose_matrix(path) -> np.ndarray:
    """Read a 4x4 pose text file (4 rows of 4 numbers; ``#`` comments) as (4, 4) float64, with its
    rotation projected onto SO(3).

    Raises:
        FileNotFoundError: no such file.
        DataError: not 4 rows of 4 finite numbers, last row not [0 0 0 1], or the 3x3 block not a rotation
            (names the file, and the line where it applies).
    """
    path = Path(path)
    rows = [parse_floats(path, lineno, text, 4, "a row of a 4x4 pose") for lineno, text in read_text_lines(path)]
    if len(rows) != 4:
        raise DataError(f"{path}: expected 4 rows of a 4x4 pose matrix, got {len(rows)}")
    M = np.asarray(rows, dtype=np.float64)
    if not np.allclose(M[3], [0.0, 0.0, 0.0, 1.0], atol=1e-6):
        raise DataError(f"{path}: last row of the pose must be 0 0 0 1, got {M[3].tolist()}")
    R = M[:3, :3]
    if np.max(np.abs(R @ R.T - np.eye(3))) > _ORTHONORMAL_TOLERANCE or np.linalg.det(R) <= 0:
        raise DataError(f"{path}: the 3x3 block is not a rotation (|R R^T - I| = "
                        f"{np.max(np.abs(R @ R.T - np.eye(3))):.3g}, det {np.linalg.det(R):.3g})")
    M[:3, :3] = Rotation.from_matrix(R).as_matrix()  # the nearest rotation
    return M


def read_intrinsics_file(path) -> np.ndarray:
    """A 3x3 K from a text file of 3 rows of 3 numbers (7-Scenes ``camera-intrinsics.txt``)."""
    path = Path(path)
    rows = [parse_floats(path, lineno, text, 3, "a row of a 3x3 K") for lineno, text in read_text_lines(path)]
    if len(rows) != 3:
        raise DataError(f"{path}: expected 3 rows of a 3x3 intrinsics matrix, got {len(rows)}")
    try:
        return check_intrinsics(np.asarray(rows), SEVENSCENES_INTRINSICS)
    except ValueError as e:
        raise DataError(f"{path}: {e}") from None


def sevenscenes_intrinsics(root, intrinsics=None) -> tuple[np.ndarray, str]:
    """(K (3, 3), source): the ``intrinsics`` argument, else ``camera-intrinsics.txt``, else 7-Scenes' usual
    approximation (585, 585, 320, 240)."""
    root = Path(root)
    if intrinsics is not None:
        return check_intrinsics(intrinsics, SEVENSCENES_INTRINSICS), "argument"
    if (root / "camera-intrinsics.txt").is_file():
        return read_intrinsics_file(root / "camera-intrinsics.txt"), "camera-intrinsics.txt"
    return SEVENSCENES_INTRINSICS.copy(), "7-Scenes default (585, 585, 320, 240)"


def list_frames(root) -> list[tuple[int, Path]]:
    """(frame number, depth PNG) of every ``frame-XXXXXX.depth.png`` in ``root``, by frame number."""
    frames = []
    for p in Path(root).iterdir():
        m = _FRAME.match(p.name)
        if m:
            frames.append((int(m.group(1)), p))
    return sorted(frames)


def read_7scenes(path, *, num_points: int = DEFAULT_NUM_POINTS, start: int = 0, stride: int = 1,
                 max_frames: int | None = None, min_depth_m: float = 0.0, max_depth_m: float | None = None,
                 voxel_size_m: float | None = None, seed: int = 0, intrinsics=None, poses: bool = True,
                 keep_depth: bool = False,
                 frame_range: tuple[int, int | None] | None = None) -> PointSequence:
    """Read a 7-Scenes sequence folder as a PointSequence (V = 1).

    Args:
        path: folder with ``frame-XXXXXX.depth.png`` and ``frame-XXXXXX.pose.txt``.
        num_points, start, stride, max_frames, min_depth_m, max_depth_m, voxel_size_m, seed, keep_depth,
            frame_range: as ``read_tum`` (frame indices count the depth PNGs in frame-number order).
        intrinsics: override K ((3, 3) or (fx, fy, cx, cy)); default ``camera-intrinsics.txt`` if present,
            else fx = fy = 585, cx = 320, cy = 240.
        poses: read the pose files (each selected frame must have one); False gives camera_poses None.

    Returns:
        PointSequence: points (T, 1, N, 3) float32 camera frame, camera_poses (T, 1, 4, 4)
        world_from_camera, timestamps = frame number / 30 s.

    Raises:
        FileNotFoundError: no depth frames, or a selected frame's pose file missing.
        DataError: malformed pose file, PNG not 16-bit or truncated, images of different sizes.
    """
    root = Path(path)
    num_points = check_num_points(num_points)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: 7-Scenes folder not found")
    frames = list_frames(root)
    if not frames:
        raise FileNotFoundError(f"{root}: no frame-XXXXXX.depth.png files (not a 7-Scenes sequence folder)")
    K, _ = sevenscenes_intrinsics(root, intrinsics)
    sel = select_frames(len(frames), start, stride, max_frames, frame_range, root)
    points, num_valid, depths, world_from_camera = [], [], [], []
    size = None
    for i in sel:
        number, png = frames[i]
        if poses:
            pose_path = root / f"frame-{png.name[len('frame-'):-len('.depth.png')]}.pose.txt"
            if not pose_path.is_file():
                raise FileNotFoundError(f"{pose_path}: pose file missing for {png.name} "
                                        "(pass poses=False to read depth only)")
            world_from_camera.append(read_pose_matrix(pose_path))
        raw = read_depth_png(png)
        if size is None:
            size = raw.shape
        elif raw.shape != size:
            raise DataError(f"{png}: image size {raw.shape[::-1]} differs from the first frame's {size[::-1]}")
        depth_m = raw.astype(np.float32) / np.float32(1000.0)
        depth_m[raw == 65535] = 0.0
        p, n = depth_to_fixed(depth_m, K, num_points, frame_rng(seed, number), min_depth_m, max_depth_m,
                              voxel_size_m)
        points.append(p)
        num_valid.append(n)
        if keep_depth:
            depths.append(np.where(raw == 65535, 0, raw).astype(np.uint16))
    H, W = size
    stamps = np.asarray([frames[i][0] for i in sel], dtype=np.float64) / SEVENSCENES_FPS
    return make_sequence(points, num_valid, K, (W, H), stamps,
                         np.stack(world_from_camera) if poses else None, str(root),
                         depth_mm=depths if keep_depth else None, fps=SEVENSCENES_FPS)
