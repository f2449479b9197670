"""Trajectories on disk (TUM format).

TUM trajectory files (``groundtruth.txt``, evo's ``*.txt``) hold one pose per line::

    timestamp tx ty tz qx qy qz qw

with ``#`` comment lines. (tx, ty, tz) is the camera's optical centre in the world frame (metres) and
(qx, qy, qz, qw) its orientation as a unit Hamilton quaternion, **scalar last** - together
``world_from_camera``. Relative motion from frame i to frame j is ``inv(world_from_i) @ world_from_j``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from synthseq.errors import DataError
from synthseq.geometry import matrix_to_quaternion, quaternion_to_matrix

# A TUM row whose quaternion norm is further than this from 1 is rejected: a norm that far off means the
# columns are not what we think they are (TUM's own files are within 1e-4).
QUATERNION_NORM_TOLERANCE = 1e-2


def pose_from_tum(row: np.ndarray) -> np.ndarray:
    """(..., 7) ``tx ty tz qx qy qz qw`` -> (..., 4, 4) float64 world_from_camera."""
    row = np.asarray(row, dtype=np.float64)
    out = np.zeros(row.shape[:-1] + (4, 4))
    out[..., :3, :3] = quaternion_to_matrix(row[..., 3:7])
    out[..., :3, 3] = row[..., :3]
    out[..., 3, 3] = 1.0
    return out


def pose_to_tum(world_from_camera: np.ndarray) -> np.ndarray:
    """(..., 4, 4) world_from_camera -> (..., 7) float64 ``tx ty tz qx qy qz qw``."""
    T = np.asarray(world_from_camera, dtype=np.float64)
    return np.concatenate([T[..., :3, 3], matrix_to_quaternion(T[..., :3, :3])], axis=-1)


def read_text_lines(path) -> list[tuple[int, str]]:
    """(1-based line number, stripped text) of every non-blank, non-``#`` line of a text file.

    Raises:
        FileNotFoundError: no such file.
        DataError: not a UTF-8 text file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    out = []
    for i, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if s and not s.startswith("#"):
            out.append((i, s))
    return out


def parse_floats(path, lineno: int, text: str, count: int, what: str) -> list[float]:
    """Split a line on whitespace (or commas) into exactly ``count`` finite floats, else DataError
    naming ``path``, the line number and what was expected."""
    fields = text.replace(",", " ").split()
    if len(fields) != count:
        raise DataError(f"{path}:{lineno}: expected {count} numbers ({what}), got {len(fields)}: {text[:80]!r}")
    try:
        values = [float(f) for f in fields]
    except ValueError:
        raise DataError(f"{path}:{lineno}: expected {count} numbers ({what}), got {text[:80]!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise DataError(f"{path}:{lineno}: non-finite number in {text[:80]!r}")
    return values


def read_tum_trajectory(path) -> tuple[np.ndarray, np.ndarray]:
    """Read a TUM trajectory file (``timestamp tx ty tz qx qy qz qw`` per line, ``#`` comments).

    Args:
        path: the text file (e.g. TUM ``groundtruth.txt`` or an evo/TUM estimate).

    Returns:
        timestamps: (T,) float64 seconds, strictly increasing.
        world_from_camera: (T, 4, 4) float64.

    Raises:
        FileNotFoundError: no such file.
        DataError: a malformed row (wrong field count, not a number, non-finite, quaternion norm not ~1),
            timestamps not strictly increasing, or no pose at all; names the file and line.
    """
    path = Path(path)
    stamps, rows = [], []
    prev = -math.inf
    for lineno, text in read_text_lines(path):
        v = parse_floats(path, lineno, text, 8, "timestamp tx ty tz qx qy qz qw")
        norm = math.sqrt(sum(c * c for c in v[4:8]))
        if abs(norm - 1.0) > QUATERNION_NORM_TOLERANCE:
            raise DataError(f"{path}:{lineno}: quaternion (qx qy qz qw) has norm {norm:.6g}, expected 1")
        if v[0] <= prev:
            raise DataError(f"{path}:{lineno}: timestamp {v[0]!r} not after the previous one {prev!r}")
        prev = v[0]
        stamps.append(v[0])
        rows.append(v[1:])
    if not rows:
        raise DataError(f"{path}: no poses (expected lines 'timestamp tx ty tz qx qy qz qw')")
    return np.asarray(stamps, dtype=np.float64), pose_from_tum(np.asarray(rows))


def write_tum_trajectory(path, timestamps: np.ndarray, world_from_camera: np.ndarray,
                         header: str | None = None) -> None:
    """Write a TUM trajectory file that ``evo`` and ``read_tum_trajectory`` read back.

    Numbers are written with ``repr`` (shortest exact round-trip), so reading back gives the same
    timestamps and translations bit for bit and rotations to ~1e-15.

    Args:
        path: output text file (parent folders are created).
        timestamps: (T,) float seconds.
        world_from_camera: (T, 4, 4) float rigid transforms.
        header: optional comment text, written after ``# `` on the first lines.

    Raises:
        ValueError: shapes disagree or values are not finite.
    """
    ts = np.asarray(timestamps, dtype=np.float64)
    poses = np.asarray(world_from_camera, dtype=np.float64)
    if ts.ndim != 1 or poses.shape != (ts.shape[0], 4, 4):
        raise ValueError(f"expected timestamps (T,) and world_from_camera (T, 4, 4), got {ts.shape} and {poses.shape}")
    if not (np.all(np.isfinite(ts)) and np.all(np.isfinite(poses))):
        raise ValueError("write_tum_trajectory: timestamps and poses must be finite")
    rows = pose_to_tum(poses)
    lines = []
    if header:
        lines += ["# " + h for h in header.splitlines()]
    lines.append("# timestamp tx ty tz qx qy qz qw")
    for t, r in zip(ts, rows):
        lines.append(" ".join(repr(float(x)) for x in (t, *r)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def associate_timestamps(query: np.ndarray, reference: np.ndarray, max_difference: float) -> np.ndarray:
    """For each query time, the index of the nearest reference time, or -1 when none is within
    ``max_difference`` seconds (TUM's ``associate.py`` without its one-to-one constraint).

    Args:
        query: (Q,) float seconds.
        reference: (R,) float seconds, sorted ascending.
        max_difference: seconds.

    Returns:
        (Q,) int64 indices into ``reference`` (-1 = no match).
    """
    q = np.asarray(query, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if ref.size == 0:
        return np.full(q.shape, -1, dtype=np.int64)
    hi = np.clip(np.searchsorted(ref, q), 1, max(ref.size - 1, 1))
    lo = hi - 1
    if ref.size == 1:
        best = np.zeros(q.shape, dtype=np.int64)
    else:
        best = np.where(np.abs(ref[hi] - q) < np.abs(q - ref[lo]), hi, lo)
    best = best.astype(np.int64)
    best[np.abs(ref[best] - q) > max_difference] = -1
    return best
