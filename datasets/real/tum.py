"""TUM RGB-D benchmark folders (Sturm et al. 2012): depth.txt + depth/*.png (value / 5000 = m) + groundtruth.txt.

Conventions (TUM's file-format page; ../shared/data/real/tum_fr1_rpy/PROVENANCE.md):
- ``depth.txt``: ``timestamp filename`` per line, ``#`` comments; filenames relative to the folder.
- Depth PNG: 640x480 uint16, metres = value / 5000, 0 = no measurement; z-depth, registered to the
  colour camera, OpenCV axes.
- ``groundtruth.txt``: ``timestamp tx ty tz qx qy qz qw`` (scalar-last quaternion) = world_from_camera
  of the colour camera's optical centre, 100 Hz mocap, not synchronised with depth: each depth frame takes
  the pose with the nearest timestamp within ``max_time_difference`` (default 0.02 s).
- Intrinsics default to freiburg1's calibrated colour camera (fx 517.3, fy 516.5, cx 318.6, cy 255.3).
  Other sequences: fr2 (520.9, 521.0, 325.1, 249.7), fr3 (535.4, 539.2, 320.1, 247.6), or the ROS default
  (525, 525, 319.5, 239.5); pass ``intrinsics=``. Images are not undistorted (fr1 distortion is small).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from synthseq.datasets.real.depth import (
    DEFAULT_NUM_POINTS,
    check_intrinsics,
    check_num_points,
    depth_m_to_mm,
    depth_to_fixed,
    frame_rng,
    make_sequence,
    read_depth_png,
    select_frames,
)
from synthseq.datasets.trajectory import associate_timestamps, read_text_lines, read_tum_trajectory
from synthseq.datasets.types import PointSequence
from synthseq.errors import DataError

log = logging.getLogger(__name__)

FR1_INTRINSICS = np.array([[517.3, 0.0, 318.6], [0.0, 516.5, 255.3], [0.0, 0.0, 1.0]])
TUM_DEPTH_SCALE = 5000.0


def read_tum_list(path) -> tuple[np.ndarray, list[str]]:
    """Read a TUM file list (``depth.txt``/``rgb.txt``): ``timestamp filename`` per line, ``#`` comments.

    Returns:
        timestamps: (T,) float64, strictly increasing.
        filenames: T relative paths as written.

    Raises:
        FileNotFoundError: no such file.
        DataError: a malformed line (names file and line), decreasing timestamps, or an empty list.
    """
    path = Path(path)
    stamps, names = [], []
    prev = -np.inf
    for lineno, text in read_text_lines(path):
        fields = text.split()
        if len(fields) != 2:
            raise DataError(f"{path}:{lineno}: expected 'timestamp filename', got {text[:80]!r}")
        try:
            t = float(fields[0])
        except ValueError:
            raise DataError(f"{path}:{lineno}: timestamp {fields[0][:40]!r} is not a number") from None
        if not np.isfinite(t):
            raise DataError(f"{path}:{lineno}: timestamp {fields[0][:40]!r} is not finite")
        if t <= prev:
            raise DataError(f"{path}:{lineno}: timestamp {t!r} not after the previous one {prev!r}")
        prev = t
        stamps.append(t)
        names.append(fields[1])
    if not names:
        raise DataError(f"{path}: lists no files (expected lines 'timestamp filename')")
    return np.asarray(stamps, dtype=np.float64), names


def read_tum(path, *, num_points: int = DEFAULT_NUM_POINTS, start: int = 0, stride: int = 1,
             max_frames: int | None = None, min_depth_m: float = 0.0, max_depth_m: float | None = None,
             voxel_size_m: float | None = None, seed: int = 0, intrinsics=None,
             depth_scale: float = TUM_DEPTH_SCALE, groundtruth: bool | str = True,
             max_time_difference: float = 0.02, missing_pose: str = "error",
             keep_depth: bool = False,
             frame_range: tuple[int, int | None] | None = None) -> PointSequence:
    """Read a TUM RGB-D folder as a PointSequence (V = 1).

    Args:
        path: folder with ``depth.txt`` and the PNGs it lists (``groundtruth.txt`` optional).
        num_points: N points sampled per frame (without replacement when enough are valid).
        start, stride, max_frames: which entries of depth.txt to read (within ``frame_range``).
        frame_range: (start, stop) or (start, None): only entries [start, stop) of depth.txt, as
            ``PATH@START:STOP`` gives it (``load_capture``); out of bounds is a DataError.
        min_depth_m, max_depth_m: valid depth range; voxel_size_m: voxel downsampling before sampling.
        seed: sampling seed (frame i's points depend only on (seed, i)).
        intrinsics: (3, 3) K or (fx, fy, cx, cy); default freiburg1 (``FR1_INTRINSICS``).
        depth_scale: raw value per metre (5000 for TUM).
        groundtruth: True (``groundtruth.txt`` if present), False (ignore it), or a trajectory file path
            (then it must exist).
        max_time_difference: seconds; the largest depth-to-GT timestamp gap accepted.
        missing_pose: ``'error'`` (DataError naming the GT file and the depth timestamp) or ``'drop'``
            (leave out depth frames with no GT in tolerance).
        keep_depth: also return the depth images (uint16 mm) in ``depth``.

    Returns:
        PointSequence: points (T, 1, N, 3) float32 camera frame, camera_poses (T, 1, 4, 4)
        world_from_camera (or None without GT), timestamps = the depth timestamps.

    Raises:
        FileNotFoundError: no depth.txt, a listed PNG missing, or an explicit groundtruth path missing.
        DataError: malformed list/trajectory, PNG not 16-bit or truncated, frame with no GT in tolerance,
            images of different sizes.
    """
    root = Path(path)
    num_points = check_num_points(num_points)
    if missing_pose not in ("error", "drop"):
        raise ValueError(f"missing_pose: expected 'error' or 'drop', got {missing_pose!r}")
    if not depth_scale or depth_scale <= 0:
        raise ValueError(f"depth_scale: expected a positive number of raw units per metre, got {depth_scale}")
    K = check_intrinsics(intrinsics, FR1_INTRINSICS)
    list_path = root / "depth.txt"
    if not list_path.is_file():
        raise FileNotFoundError(f"{list_path}: not found (a TUM RGB-D folder needs depth.txt listing the depth PNGs)")
    stamps, names = read_tum_list(list_path)
    sel = select_frames(len(names), start, stride, max_frames, frame_range, root)

    poses = None
    gt_path = None if groundtruth is False else (root / "groundtruth.txt" if groundtruth is True else Path(groundtruth))
    if gt_path is not None and (gt_path.is_file() or groundtruth is not True):
        gt_t, gt_poses = read_tum_trajectory(gt_path)
        match = associate_timestamps(stamps[sel], gt_t, max_time_difference)
        missing = np.nonzero(match < 0)[0]
        if len(missing):
            if missing_pose == "error":
                t0 = float(stamps[sel][missing[0]])
                near = float(gt_t[np.argmin(np.abs(gt_t - t0))])
                raise DataError(
                    f"{gt_path}: no ground-truth pose within {max_time_difference} s of depth frame {t0!r} "
                    f"({names[sel[missing[0]]]}; nearest GT at {near!r}, {abs(near - t0):.3f} s away; "
                    f"{len(missing)} frame(s) affected; pass missing_pose='drop' to leave them out)")
            log.info("%s: dropping %d depth frames with no ground truth within %s s", gt_path, len(missing),
                     max_time_difference)
            keep = match >= 0
            sel, match = sel[keep], match[keep]
            if len(sel) == 0:
                raise DataError(f"{gt_path}: no depth frame has a ground-truth pose within {max_time_difference} s")
        poses = gt_poses[match]
    elif gt_path is not None:
        log.info("%s: no groundtruth.txt; camera_poses will be None", root)

    points, num_valid, depths = [], [], []
    size = None
    for i in sel:
        png = root / names[i]
        raw = read_depth_png(png)
        if size is None:
            size = raw.shape
        elif raw.shape != size:
            raise DataError(f"{png}: image size {raw.shape[::-1]} differs from the first frame's {size[::-1]}")
        depth_m = raw.astype(np.float32) / np.float32(depth_scale)
        p, n = depth_to_fixed(depth_m, K, num_points, frame_rng(seed, i), min_depth_m, max_depth_m, voxel_size_m)
        points.append(p)
        num_valid.append(n)
        if keep_depth:
            depths.append(depth_m_to_mm(depth_m))
    H, W = size
    return make_sequence(points, num_valid, K, (W, H), stamps[sel], poses, str(root),
                         depth_mm=depths if keep_depth else None)
