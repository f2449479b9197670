"""Shared pieces of the real-capture readers: 16-bit depth images, frame selection, depth -> fixed-N clouds."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from synthseq.errors import DataError
from synthseq.geometry import backproject
from synthseq.types import PointSequence, sample_fixed

log = logging.getLogger(__name__)

DEFAULT_NUM_POINTS = 1024


def read_depth_png(path) -> np.ndarray:
    """Read a 16-bit single-channel depth image (PNG, or TIFF) as raw uint16.

    Args:
        path: image file.

    Returns:
        (H, W) uint16 raw values (scale them with the dataset's depth factor).

    Raises:
        FileNotFoundError: no such file.
        DataError: not an image, truncated, or not 16-bit greyscale (names the file and the mode found).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: depth image not found")
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode not in ("I;16", "I;16L", "I;16B", "I"):
                bits = {"1": 1, "L": 8, "P": 8, "LA": 8, "RGB": 8, "RGBA": 8, "F": 32}.get(mode, "?")
                raise DataError(f"{path}: expected a 16-bit greyscale depth image (mode I;16), got mode "
                                f"{mode} ({bits}-bit{'' if mode in ('L', 'I', 'F', '1') else ', colour'})")
            im.load()
            arr = np.asarray(im)
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image file (expected a 16-bit greyscale PNG)") from None
    except (OSError, SyntaxError, ValueError) as e:  # PIL raises OSError for truncated / corrupt data
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path}: unreadable or truncated image ({msg})") from None
    if arr.dtype != np.uint16:
        if arr.dtype.kind in "iu" and arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise DataError(f"{path}: expected 16-bit depth values, found values outside 0..65535")
        arr = arr.astype(np.uint16)
    if arr.ndim != 2:
        raise DataError(f"{path}: expected a single-channel depth image, got shape {arr.shape}")
    return arr


def select_frames(count: int, start: int = 0, stride: int = 1, max_frames: int | None = None,
                  frame_range: tuple[int, int | None] | None = None, source="capture") -> np.ndarray:
    """Indices of the frames to read, out of ``count``: the frame range ``[range_start, range_stop)``
    (``PATH@START:STOP``; None: all frames), then ``start, start + stride, ...`` within it (``start`` counts
    from the range's first frame), at most ``max_frames`` of them.

    Raises:
        ValueError: negative start, stride < 1, max_frames < 1.
        DataError: a frame range outside the capture's ``count`` frames, or empty (names ``source``).
    """
    if int(start) < 0 or int(stride) < 1 or (max_frames is not None and int(max_frames) < 1):
        raise ValueError(f"frame selection: expected start >= 0, stride >= 1, max_frames >= 1 or None; got "
                         f"start={start}, stride={stride}, max_frames={max_frames}")
    lo, hi = 0, count
    if frame_range is not None:
        lo = int(frame_range[0])
        hi = count if frame_range[1] is None else int(frame_range[1])
        text = f"{lo}:{'' if frame_range[1] is None else hi}"
        if lo < 0 or (hi <= lo and lo < count):
            raise DataError(f"{source}: empty frame range {text}")
        if hi > count or lo >= count:
            raise DataError(f"{source}: frame range {text} is out of bounds: the capture has {count} frames "
                            f"(valid ranges lie within 0:{count})")
    idx = np.arange(lo + int(start), hi, int(stride))
    return idx if max_frames is None else idx[: int(max_frames)]


def check_intrinsics(intrinsics, default: np.ndarray) -> np.ndarray:
    """A (3, 3) float64 K from None (``default``), a (3, 3) array or (fx, fy, cx, cy)."""
    if intrinsics is None:
        return np.asarray(default, dtype=np.float64).copy()
    K = np.asarray(intrinsics, dtype=np.float64)
    if K.shape == (4,):
        fx, fy, cx, cy = K
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"intrinsics: expected a (3, 3) K or (fx, fy, cx, cy) with positive focal lengths, "
                         f"got {np.asarray(intrinsics).tolist()}")
    return K


def voxel_downsample(points: np.ndarray, voxel_size_m: float) -> np.ndarray:
    """(M, 3) -> (M', 3) float32: the mean of the points in each occupied voxel of edge ``voxel_size_m``
    (Open3D's ``voxel_down_sample`` without Open3D). Output order: sorted voxel keys (deterministic)."""
    if len(points) == 0:
        return points.astype(np.float32)
    keys = np.floor(points / voxel_size_m).astype(np.int64)
    _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    sums = np.zeros((len(counts), 3))
    np.add.at(sums, inverse, points.astype(np.float64))
    return (sums / counts[:, None]).astype(np.float32)


def cloud_to_fixed(points: np.ndarray, num_points: int, rng: np.random.Generator,
                   min_depth_m: float = 0.0, max_depth_m: float | None = None,
                   voxel_size_m: float | None = None) -> tuple[np.ndarray, int]:
    """Filter (finite, z range), optionally voxel-downsample, and sample exactly ``num_points`` points.

    Args:
        points: (M, 3) float, camera frame.

    Returns:
        points: (num_points, 3) float32 (zeros when nothing was valid).
        num_valid: points available before sampling (after filtering and downsampling).
    """
    p = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    keep = np.all(np.isfinite(p), axis=1)
    if min_depth_m:
        keep &= p[:, 2] >= min_depth_m
    if max_depth_m is not None:
        keep &= p[:, 2] <= max_depth_m
    p = p[keep]
    if voxel_size_m:
        p = voxel_downsample(p, float(voxel_size_m))
    n = len(p)
    idx = sample_fixed(num_points, n, rng)
    out = p[idx] if n else np.zeros((num_points, 3), np.float32)
    return np.ascontiguousarray(out, dtype=np.float32), n


def depth_to_fixed(depth_m: np.ndarray, intrinsics: np.ndarray, num_points: int, rng: np.random.Generator,
                   min_depth_m: float = 0.0, max_depth_m: float | None = None,
                   voxel_size_m: float | None = None) -> tuple[np.ndarray, int]:
    """Back-project a z-depth image and sample exactly ``num_points`` camera-frame points.

    Without voxel downsampling only the sampled pixels are back-projected (fast path); with it every valid
    pixel is.

    Args:
        depth_m: (H, W) float metres, 0 or NaN invalid.
        intrinsics: (3, 3).

    Returns:
        points: (num_points, 3) float32, OpenCV camera frame (zeros when no pixel is valid).
        num_valid: valid pixels (or voxels) before sampling.
    """
    valid = np.isfinite(depth_m) & (depth_m > 0)
    if min_depth_m:
        valid &= depth_m >= min_depth_m
    if max_depth_m is not None:
        valid &= depth_m <= max_depth_m
    flat = np.flatnonzero(valid)

    def points(f):
        rows, cols = np.divmod(f, depth_m.shape[1])
        return backproject(rows, cols, depth_m.reshape(-1)[f], intrinsics).astype(np.float32)

    if voxel_size_m:
        return cloud_to_fixed(points(flat), num_points, rng, voxel_size_m=voxel_size_m)
    n = len(flat)
    if n == 0:
        return np.zeros((num_points, 3), np.float32), 0
    return points(flat[sample_fixed(num_points, n, rng)]), n


def frame_rng(seed: int, frame_index: int) -> np.random.Generator:
    """The sampling RNG of one frame: depends on (seed, original frame index) only, so a frame's points do
    not change with start/stride/max_frames."""
    return np.random.default_rng([int(seed), int(frame_index)])


def check_num_points(num_points) -> int:
    if int(num_points) <= 0:
        raise ValueError(f"num_points: expected a positive integer, got {num_points}")
    return int(num_points)


def make_sequence(points: list[np.ndarray], num_valid: list[int], intrinsics: np.ndarray, image_size,
                  timestamps, camera_poses: np.ndarray | None, name: str, depth_mm: list | None = None,
                  fps: float | None = None) -> PointSequence:
    """Assemble a V = 1 PointSequence from per-frame (N, 3) clouds."""
    T = len(points)
    ts = np.asarray(timestamps, dtype=np.float64)
    if fps is None:
        fps = float(1.0 / np.median(np.diff(ts))) if T > 1 and np.all(np.diff(ts) > 0) else 30.0
    return PointSequence(
        points=np.stack(points)[:, None].astype(np.float32),
        num_valid=np.asarray(num_valid, dtype=np.int32).reshape(T, 1),
        intrinsics=np.asarray(intrinsics, dtype=np.float64)[None],
        image_size=np.asarray([image_size], dtype=np.int32),
        timestamps=ts,
        camera_poses=None if camera_poses is None else np.asarray(camera_poses, np.float64)[:, None],
        depth=None if depth_mm is None else np.stack(depth_mm)[:, None],
        fps=float(fps),
        name=name,
    )


def depth_m_to_mm(depth_m: np.ndarray) -> np.ndarray:
    """(H, W) float metres -> uint16 millimetres, 0 = invalid (values above 65.535 m clipped to invalid)."""
    mm = np.round(np.nan_to_num(depth_m, nan=0.0) * 1000.0)
    mm[(mm < 0) | (mm > 65535)] = 0
    return mm.astype(np.uint16)
