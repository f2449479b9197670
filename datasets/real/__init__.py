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

**Frame ranges**: any capture can be given as ``PATH@START:STOP`` (frames START..STOP-1, STOP exclusive, in
the capture's own frame order: depth.txt entries for TUM, frame numbers for 7-Scenes, file names for point
clouds) or ``PATH@START:`` (to the end), so one folder can be split into a training and a validation part
(``tum_fr1_rpy@0:50`` / ``tum_fr1_rpy@50:100``). ``parse_capture_spec`` is the one place this is parsed;
``load_capture`` accepts such specs wherever a capture path is accepted (``train.real``, ``--real``,
``synthseq info``/``view``). A frame keeps its points whatever range it is read in (sampling depends on
(seed, frame index) only). A path that exists as written (even with an ``@`` in it) is a plain path.

Every reader returns points (T, 1, N, 3) float32 in the OpenCV camera frame, num_valid (T, 1),
camera_poses (T, 1, 4, 4) world_from_camera or None, intrinsics (1, 3, 3), image_size (1, 2) as (W, H),
timestamps (T,). Common options (keyword-only): ``num_points`` (N, default 1024), ``start``, ``stride``,
``max_frames`` (frame selection, applied before reading any image), ``min_depth_m``/``max_depth_m``,
``voxel_size_m`` (voxel-grid downsampling before sampling N), ``seed`` (sampling), ``keep_depth``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from synthseq.errors import DataError
from synthseq.types import PointSequence

__all__ = ["load_capture", "detect_format", "parse_capture_spec", "CaptureSpec", "capture_intrinsics",
           "describe_capture"]

FORMATS = ("tum", "7scenes", "pointclouds")
_RANGE = re.compile(r"^(\d*):(\d*)$")


@dataclass(frozen=True)
class CaptureSpec:
    """A capture path with an optional frame range ``[start, stop)`` (``stop`` None: to the end).

    Attributes:
        text: the spec as given (``../data/tum_fr1_rpy@0:50``).
        path: the capture folder or file.
        start, stop: the frame range; ``start`` 0 and ``stop`` None when no range was given.
        has_range: whether a range was given.
    """

    text: str
    path: Path
    start: int = 0
    stop: int | None = None
    has_range: bool = False

    @property
    def frame_range(self) -> tuple[int, int | None] | None:
        return (self.start, self.stop) if self.has_range else None

    @property
    def range_text(self) -> str:
        """``"50:100"``, ``"50:"``, or ``""`` without a range."""
        if not self.has_range:
            return ""
        return f"{self.start}:{'' if self.stop is None else self.stop}"

    @property
    def display_name(self) -> str:
        """The folder name plus the range: ``tum_fr1_rpy@50:100``."""
        name = self.path.name or str(self.path)
        return f"{name}@{self.range_text}" if self.has_range else name

    def resolved(self) -> Path:
        """The capture path made absolute with symlinks resolved (to compare captures)."""
        return self.path.resolve()

    def overlaps(self, other: "CaptureSpec", num_frames: int | None = None) -> tuple[int, int] | None:
        """The frame range both specs cover when they name the same capture (resolved path), else None.

        ``num_frames`` closes open ranges (``start:``); without it an open range reaches to infinity.
        """
        if self.resolved() != other.resolved():
            return None
        end = float("inf") if num_frames is None else int(num_frames)
        a0, a1 = self.start, end if self.stop is None else self.stop
        b0, b1 = other.start, end if other.stop is None else other.stop
        lo, hi = max(a0, b0), min(a1, b1)
        if lo >= hi:
            return None
        return int(lo), (None if hi == float("inf") else int(hi))


def parse_capture_spec(spec) -> CaptureSpec:
    """Split ``PATH@START:STOP`` / ``PATH@START:`` into the path and the frame range (STOP exclusive).

    A path that exists as written is taken as it is (a folder may have an ``@`` in its name). This is the
    only place the syntax is parsed; it does not read the capture (bounds are checked by the readers).

    Raises:
        DataError: a malformed range (``PATH@5``, ``PATH@a:b``, ``PATH@-1:3``) or an empty one
            (``PATH@5:5``, ``PATH@9:3``); the message names the spec.
    """
    if isinstance(spec, CaptureSpec):
        return spec
    text = str(spec)
    if "@" not in text or Path(text).exists():
        return CaptureSpec(text, Path(text))
    base, _, rng = text.rpartition("@")
    m = _RANGE.match(rng.strip())
    if not base or m is None:
        raise DataError(f"{text}: malformed frame range {rng!r}; expected PATH@START:STOP (STOP exclusive) or "
                        "PATH@START:, with non-negative frame numbers, e.g. tum_fr1_rpy@0:50")
    start = int(m.group(1)) if m.group(1) else 0
    stop = int(m.group(2)) if m.group(2) else None
    if stop is not None and stop <= start:
        raise DataError(f"{text}: empty frame range {start}:{stop} (STOP is exclusive and must be > START)")
    return CaptureSpec(text, Path(base), start, stop, True)


def detect_format(path) -> str:
    """The capture format of ``path`` (a frame range ``@START:STOP`` is ignored): ``'tum'``, ``'7scenes'`` or
    ``'pointclouds'``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataError: a folder in none of the formats (the message says what each format needs).
    """
    from synthseq.datasets.real.pointcloud_folder import CLOUD_SUFFIXES

    path = parse_capture_spec(path).path
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


def capture_intrinsics(path, intrinsics=None) -> tuple:
    """The intrinsics a capture is read with and where they come from, without reading any image.

    Returns:
        (K (3, 3) float64, source str): e.g. ``"folder name (freiburg1)"``, ``"intrinsics.txt"``,
        ``"camera-intrinsics.txt"``; for point-cloud folders the nominal camera (they carry none).
    """
    spec = parse_capture_spec(path)
    fmt = detect_format(spec.path)
    if fmt == "tum":
        from synthseq.datasets.real.tum import tum_intrinsics

        return tum_intrinsics(spec.path, intrinsics, warn=False)  # the reader warns
    if fmt == "7scenes":
        from synthseq.datasets.real.sevenscenes import sevenscenes_intrinsics

        return sevenscenes_intrinsics(spec.path, intrinsics)
    from synthseq.datasets.real.depth import check_intrinsics
    from synthseq.datasets.real.pointcloud_folder import NOMINAL_INTRINSICS

    if intrinsics is not None:
        return check_intrinsics(intrinsics, NOMINAL_INTRINSICS), "argument"
    return NOMINAL_INTRINSICS.copy(), "nominal (point clouds carry no camera)"


def describe_capture(path, num_points: int = 1024) -> str:
    """A few lines about a capture for ``synthseq info``: format, frames, range, image size, intrinsics and
    their source, ground truth (and frames without a pose). Reads every frame of the range (N points each)."""
    import numpy as np

    spec = parse_capture_spec(path)
    fmt = detect_format(spec.path)
    K, source = capture_intrinsics(spec)
    opts = {"num_points": num_points}
    if fmt == "tum":
        opts["missing_pose"] = "nan"
    seq = load_capture(spec, **opts)
    W, H = (int(x) for x in seq.image_size[0])
    lines = [f"capture {spec.text}: {fmt}, {seq.num_frames} frames"
             + (f" (range {spec.range_text})" if spec.has_range else "")
             + (f", {seq.fps:.1f} fps" if seq.num_frames > 1 else ""),
             f"  intrinsics: fx {K[0, 0]:g}, fy {K[1, 1]:g}, cx {K[0, 2]:g}, cy {K[1, 2]:g} "
             f"(from {source}); image {W}x{H}"]
    if seq.camera_poses is None:
        lines.append("  ground truth: none (usable for training and realism, not for pose evaluation)")
    else:
        ok = np.all(np.isfinite(seq.camera_poses[:, 0]), axis=(1, 2))
        extra = "" if ok.all() else (f"; {int((~ok).sum())} frame(s) without a pose within tolerance "
                                     f"(frames {[spec.start + int(i) for i in np.nonzero(~ok)[0]][:10]}): "
                                     "evaluation skips pairs that touch them")
        lines.append(f"  ground truth: camera poses for {int(ok.sum())} of {seq.num_frames} frames{extra}")
    nv = seq.num_valid[:, 0]
    lines.append(f"  valid points per frame: median {int(np.median(nv))}, min {int(nv.min())}")
    return "\n".join(lines)


def load_capture(path, *, format: str | None = None, **options) -> PointSequence:
    """Read a real capture folder (TUM RGB-D, 7-Scenes, or point clouds) as a PointSequence with V = 1.

    Args:
        path: capture folder (or one point-cloud file), optionally with a frame range ``PATH@START:STOP``
            (see ``parse_capture_spec``).
        format: force ``'tum'``, ``'7scenes'`` or ``'pointclouds'`` instead of detecting it.
        **options: reader options; see the module docstring and each reader (``read_tum``,
            ``read_7scenes``, ``read_pointcloud_folder``). Unknown options raise TypeError.

    Returns:
        PointSequence: points (T, 1, N, 3) float32 camera frame, num_valid (T, 1) int32, camera_poses
        (T, 1, 4, 4) float64 world_from_camera or None, intrinsics (1, 3, 3), image_size (1, 2), timestamps
        (T,); ``name`` is the folder path (the spec as given, range included, when it has a range).

    Raises:
        FileNotFoundError: missing folder or required file (depth.txt, a listed PNG, a pose file).
        DataError: malformed content (names the file and, for text files, the line); a malformed, empty
            or out-of-bounds frame range (names the spec and the capture's frame count).
    """
    spec = parse_capture_spec(path)
    path = spec.path
    if spec.has_range:
        options = dict(options, frame_range=spec.frame_range)
    fmt = format or detect_format(path)
    if fmt == "tum":
        from synthseq.datasets.real.tum import read_tum

        seq = read_tum(path, **options)
    elif fmt == "7scenes":
        from synthseq.datasets.real.sevenscenes import read_7scenes

        seq = read_7scenes(path, **options)
    elif fmt == "pointclouds":
        from synthseq.datasets.real.pointcloud_folder import read_pointcloud_folder

        seq = read_pointcloud_folder(path, **options)
    else:
        raise ValueError(f"load_capture: format must be one of {FORMATS}, got {format!r}")
    return seq.replace(name=spec.text) if spec.has_range else seq
