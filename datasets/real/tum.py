"""TUM RGB-D benchmark folders (Sturm et al. 2012): depth.txt + depth/*.png (value / 5000 = m) + groundtruth.txt.

Conventions (TUM's file-format page; ../shared/data/real/tum_fr1_rpy/PROVENANCE.md):
- ``depth.txt``: ``timestamp filename`` per line, ``#`` comments; filenames relative to the folder.
- Depth PNG: 640x480 uint16, metres = value / 5000, 0 = no measurement; z-depth, registered to the
  colour camera, OpenCV axes.
- ``groundtruth.txt``: ``timestamp tx ty tz qx qy qz qw`` (scalar-last quaternion) = world_from_camera
  of the colour camera's optical centre, 100 Hz mocap, not synchronised with depth: each depth frame takes
  the pose with the nearest timestamp within ``max_time_difference`` (default 0.02 s).
- Intrinsics (``tum_intrinsics``; the depth images are registered to the colour camera, so its calibration
  applies), first match wins: the ``intrinsics=`` argument; an ``intrinsics.txt`` in the folder (one line
  ``fx fy cx cy``); the camera named by the folder name (``rgbd_dataset_freiburg3_...``, ``tum_fr1_...``) or
  else by depth.txt's header (``# file: 'rgbd_dataset_freiburg1_xyz.bag'``), with the calibrated colour
  intrinsics the TUM RGB-D website publishes: freiburg1 (517.3, 516.5, 318.6, 255.3), freiburg2 (520.9,
  521.0, 325.1, 249.7), freiburg3 (535.4, 539.2, 320.1, 247.6); otherwise the ROS default (525, 525, 319.5,
  239.5), with a warning. Images are not undistorted (fr1 distortion is small; fr3 images are undistorted
  already).
- Frames without a ground-truth pose within ``max_time_difference`` (mocap gaps, e.g. two frames of
  tum_fr1_xyz_a): dropped with a warning by default, kept with NaN poses (``missing_pose='nan'``: training
  and evaluation keep the frame sequence intact and skip the pairs that touch them) or an error.
"""

from __future__ import annotations

import logging
import re
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
from synthseq.datasets.trajectory import associate_timestamps, parse_floats, read_text_lines, read_tum_trajectory
from synthseq.errors import DataError
from synthseq.types import PointSequence

log = logging.getLogger(__name__)

def _K(fx, fy, cx, cy) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


# Calibrated colour-camera intrinsics published on the TUM RGB-D website ("File Formats" > "Intrinsic Camera
# Calibration of the Kinect"); depth is registered to the colour camera.
TUM_CAMERAS = {
    "freiburg1": _K(517.3, 516.5, 318.6, 255.3),
    "freiburg2": _K(520.9, 521.0, 325.1, 249.7),
    "freiburg3": _K(535.4, 539.2, 320.1, 247.6),
}
FR1_INTRINSICS = TUM_CAMERAS["freiburg1"]
ROS_DEFAULT_INTRINSICS = _K(525.0, 525.0, 319.5, 239.5)
TUM_DEPTH_SCALE = 5000.0
INTRINSICS_FILE = "intrinsics.txt"
_CAMERA_NAME = re.compile(r"(?<![a-z0-9])(?:freiburg|fr)([123])(?![0-9])", re.IGNORECASE)


def _camera_in(text: str) -> str | None:
    m = _CAMERA_NAME.search(text)
    return f"freiburg{m.group(1)}" if m else None


def read_intrinsics_txt(path) -> np.ndarray:
    """(3, 3) K from an ``intrinsics.txt``: one line ``fx fy cx cy`` (``#`` comments).

    Raises:
        DataError: not exactly one line of four finite numbers with positive focal lengths (names the file).
    """
    path = Path(path)
    rows = [parse_floats(path, lineno, text, 4, "'fx fy cx cy'") for lineno, text in read_text_lines(path)]
    if len(rows) != 1:
        raise DataError(f"{path}: expected one line 'fx fy cx cy', got {len(rows)} lines")
    try:
        return check_intrinsics(np.asarray(rows[0]), FR1_INTRINSICS)
    except ValueError as e:
        raise DataError(f"{path}: {e}") from None


def tum_intrinsics(path, intrinsics=None, warn: bool = True) -> tuple[np.ndarray, str]:
    """The intrinsics of a TUM folder and where they come from (see the module docstring for the order).

    Returns:
        K: (3, 3) float64.
        source: e.g. ``"intrinsics.txt"``, ``"folder name (freiburg3)"``, ``"depth.txt header (freiburg1)"``,
            ``"ROS default (camera unknown)"`` or ``"argument"``.
    """
    root = Path(path)
    if intrinsics is not None:
        return check_intrinsics(intrinsics, FR1_INTRINSICS), "argument"
    if (root / INTRINSICS_FILE).is_file():
        return read_intrinsics_txt(root / INTRINSICS_FILE), INTRINSICS_FILE
    cam = _camera_in(root.resolve().name)
    if cam:
        return TUM_CAMERAS[cam].copy(), f"folder name ({cam})"
    header = ""
    try:
        with open(root / "depth.txt", errors="replace") as f:
            for line in f:
                if not line.startswith("#"):
                    break
                header += line
    except OSError:
        pass
    cam = _camera_in(header)
    if cam:
        return TUM_CAMERAS[cam].copy(), f"depth.txt header ({cam})"
    if warn:
        log.warning("%s: the folder name names no TUM camera (freiburg1/2/3) and there is no %s; using the ROS "
                    "default intrinsics (525, 525, 319.5, 239.5)", root, INTRINSICS_FILE)
    return ROS_DEFAULT_INTRINSICS.copy(), "ROS default (camera unknown)"


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
             max_time_difference: float = 0.02, missing_pose: str = "drop",
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
        intrinsics: (3, 3) K or (fx, fy, cx, cy); default: ``tum_intrinsics`` (intrinsics.txt, the camera
            the folder name or depth.txt's header names, else the ROS default).
        depth_scale: raw value per metre (5000 for TUM).
        groundtruth: True (``groundtruth.txt`` if present), False (ignore it), or a trajectory file path
            (then it must exist).
        max_time_difference: seconds; the largest depth-to-GT timestamp gap accepted.
        missing_pose: depth frames with no GT pose in tolerance: ``'drop'`` (default: leave them out, with a
            warning), ``'nan'`` (keep them, with NaN poses: the frame sequence stays intact; evaluation skips
            pairs that touch them) or ``'error'`` (DataError naming the GT file and the depth timestamp).
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
    if missing_pose not in ("error", "drop", "nan"):
        raise ValueError(f"missing_pose: expected 'drop', 'nan' or 'error', got {missing_pose!r}")
    if not depth_scale or depth_scale <= 0:
        raise ValueError(f"depth_scale: expected a positive number of raw units per metre, got {depth_scale}")
    K, _ = tum_intrinsics(root, intrinsics)
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
            if len(missing) == len(sel):
                raise DataError(f"{gt_path}: no depth frame has a ground-truth pose within {max_time_difference} s")
            if missing_pose == "drop":
                log.warning("%s: dropping %d depth frame(s) with no ground-truth pose within %s s (frames %s)",
                            gt_path, len(missing), max_time_difference, sel[missing].tolist()[:10])
                keep = match >= 0
                sel, match = sel[keep], match[keep]
            else:
                log.info("%s: %d depth frame(s) with no ground-truth pose within %s s get NaN poses (frames %s)",
                         gt_path, len(missing), max_time_difference, sel[missing].tolist()[:10])
        poses = gt_poses[np.maximum(match, 0)]
        if missing_pose == "nan":
            poses = np.where((match >= 0)[:, None, None], poses, np.nan)
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
