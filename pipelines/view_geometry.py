"""What the viewer draws for one frame, as plain numpy arrays: clouds, colours, object axes, camera frustums.

Pure functions only (no Open3D, no window): the interactive window (pipelines/view.py) and the headless
renderers (pipelines/render_headless.py) both turn a :class:`FrameGeometry` into pixels, and the tests
check these arrays against the camera model directly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from synthseq.errors import DataError, UsageError
from synthseq.geometry import backproject, invert_pose, look_at, transform_points
from synthseq.types import BACKGROUND_LABEL, Camera, PointSequence

# tab10 followed by tab10's lighter pair colours (matplotlib "tab20" order), in [0, 1]: object k gets
# PALETTE[k % 20]; background/room points get BACKGROUND_COLOR.
PALETTE = np.array([
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120),
    (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148), (247, 182, 210), (199, 199, 199),
    (219, 219, 141), (158, 218, 229)], dtype=np.float64) / 255.0
BACKGROUND_COLOR = np.array([0.55, 0.55, 0.55])
# Anchor colours of a perceptually ordered ramp (viridis at 0, 1/4, 1/2, 3/4, 1) for depth colouring.
_RAMP = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], dtype=np.float64) / 255.0
GT_CAMERA_COLOR = np.array([0.1, 0.1, 0.1])
ESTIMATE_COLOR = np.array([1.0, 0.45, 0.0])
AXIS_COLORS = np.eye(3)  # x red, y green, z blue

COLOR_MODES = ("label", "depth")

HELP = """keys:
  space        play / pause
  left, right  previous / next frame
  + / -        faster / slower playback
  v            next view (leaves fused mode)
  f            fused: all views in the world frame
  l            colour by object label / by depth
  c            move the viewpoint to the current sensor
  h            this help
  q, esc       quit"""


@dataclass(frozen=True)
class ViewState:
    """What the viewer shows: frame ``frame`` of view ``view`` (or all views with ``fused``)."""

    frame: int = 0
    view: int = 0
    fused: bool = False
    color_by: str = "label"
    playing: bool = False
    speed: float = 1.0

    def replace(self, **changes) -> "ViewState":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class LineArrays:
    """A set of coloured line segments: points (P, 3) float64, lines (L, 2) int32 indices, colors (L, 3)."""

    points: np.ndarray
    lines: np.ndarray
    colors: np.ndarray

    @staticmethod
    def empty() -> "LineArrays":
        return LineArrays(np.zeros((0, 3)), np.zeros((0, 2), np.int32), np.zeros((0, 3)))

    @staticmethod
    def concat(parts: list["LineArrays"]) -> "LineArrays":
        """One LineArrays holding all of ``parts`` (line indices shifted)."""
        parts = [p for p in parts if len(p.lines)]
        if not parts:
            return LineArrays.empty()
        offsets = np.cumsum([0] + [len(p.points) for p in parts[:-1]])
        return LineArrays(np.concatenate([p.points for p in parts]),
                          np.concatenate([p.lines + o for p, o in zip(parts, offsets)]).astype(np.int32),
                          np.concatenate([p.colors for p in parts]))


@dataclass(frozen=True)
class Legend:
    """What the colours of a frame mean, drawn in the window and on headless images.

    Args:
        items: (text, rgb) rows, rgb in [0, 1]: one per object (label colouring), the background, and the
            line overlays (ground-truth cameras, estimate) when drawn.
        ramp: (near_m, far_m) of the depth colour ramp when colouring by depth, else None.
    """

    items: tuple = ()
    ramp: tuple | None = None


MAX_LEGEND_OBJECTS = 12


def make_legend(seq: PointSequence, state: ViewState, near_far: tuple[float, float], world: bool,
                estimate=None) -> Legend:
    """The legend of ``state``: object colours (label colouring) or the depth range, and the overlays."""
    items = []
    ramp = None
    if state.color_by == "label" and seq.labels is not None:
        names = list(seq.object_names)
        for k, name in enumerate(names[:MAX_LEGEND_OBJECTS]):
            items.append((f"{k} {name}", tuple(PALETTE[k % len(PALETTE)])))
        if len(names) > MAX_LEGEND_OBJECTS:
            items.append((f"... {len(names) - MAX_LEGEND_OBJECTS} more objects", tuple(PALETTE[7])))
        items.append(("room / background", tuple(BACKGROUND_COLOR)))
    else:
        ramp = (float(near_far[0]), float(near_far[1]))
    if world:
        items.append(("cameras (ground truth)", tuple(GT_CAMERA_COLOR)))
    if world and estimate is not None:
        items.append(("estimated camera", tuple(ESTIMATE_COLOR)))
    return Legend(tuple(items), ramp)


def ramp_colors(n: int) -> np.ndarray:
    """(n, 3) colours of the depth ramp from near to far."""
    return depth_colors(np.linspace(0.0, 1.0, n), 0.0, 1.0)


@dataclass(frozen=True)
class FrameGeometry:
    """Everything drawn for one frame, in the display frame (world when the sequence has camera poses,
    else the camera frame of the shown view).

    Args:
        points: (M, 3) float64 the shown points (valid rows only, all views when fused).
        colors: (M, 3) float64 in [0, 1].
        labels: (M,) int16 object index per point (-1 background), or None.
        views: (M,) int16 the view each point came from.
        objects: coordinate axes at every object pose (x red, y green, z blue).
        cameras: ground-truth camera frustums at the frame, plus the camera paths.
        estimate: estimated frustum at the frame and the estimated path (empty without an estimate).
        world: True when the display frame is the world frame.
        caption: "frame t/T  t=... s  view v" for a title bar or an overlay.
        legend: what the colours mean (see :class:`Legend`).
    """

    points: np.ndarray
    colors: np.ndarray
    labels: np.ndarray | None
    views: np.ndarray
    objects: LineArrays
    cameras: LineArrays
    estimate: LineArrays
    world: bool
    caption: str
    legend: Legend = Legend()


# ------------------------------------------------------------------------------------------- key handling

def apply_key(state: ViewState, key: str, num_frames: int, num_views: int) -> ViewState:
    """The state after pressing ``key`` (one of: space, left, right, +, -, v, f, l); others change nothing.

    Stepping wraps around the sequence; speed stays within [1/16, 16].
    """
    if key == "space":
        return state.replace(playing=not state.playing)
    if key == "right":
        return state.replace(frame=(state.frame + 1) % num_frames)
    if key == "left":
        return state.replace(frame=(state.frame - 1) % num_frames)
    if key == "+":
        return state.replace(speed=min(state.speed * 2.0, 16.0))
    if key == "-":
        return state.replace(speed=max(state.speed / 2.0, 1.0 / 16.0))
    if key == "v":
        nxt = state.view if state.fused else (state.view + 1) % num_views
        return state.replace(view=nxt, fused=False)
    if key == "f":
        return state.replace(fused=not state.fused)
    if key == "l":
        i = COLOR_MODES.index(state.color_by)
        return state.replace(color_by=COLOR_MODES[(i + 1) % len(COLOR_MODES)])
    return state


def check_frame_view(seq: PointSequence, frame: int, view: int) -> None:
    """Raise UsageError naming the valid range when ``frame`` or ``view`` is outside the sequence."""
    T, V = seq.num_frames, seq.num_views
    if not 0 <= frame < T:
        raise UsageError(f"--frame {frame} out of range: sequence {seq.name or ''} has {T} frames (0..{T - 1})")
    if not 0 <= view < V:
        raise UsageError(f"--view {view} out of range: sequence {seq.name or ''} has {V} views (0..{V - 1})")


# ------------------------------------------------------------------------------------------------ colours

def label_colors(labels: np.ndarray) -> np.ndarray:
    """(M,) int object labels -> (M, 3) float64 colours: PALETTE[k % 20], grey for -1 (background)."""
    labels = np.asarray(labels)
    out = PALETTE[np.mod(labels, len(PALETTE))]
    out[labels == BACKGROUND_LABEL] = BACKGROUND_COLOR
    return out


def depth_colors(depth_m: np.ndarray, near_m: float, far_m: float) -> np.ndarray:
    """(M,) z-depth in metres -> (M, 3) float64 colours on a viridis-like ramp from ``near_m`` to ``far_m``."""
    s = np.clip((np.asarray(depth_m, np.float64) - near_m) / max(far_m - near_m, 1e-9), 0.0, 1.0)
    x = s * (len(_RAMP) - 1)
    i = np.minimum(x.astype(np.int64), len(_RAMP) - 2)
    w = (x - i)[:, None]
    return _RAMP[i] * (1.0 - w) + _RAMP[i + 1] * w


def depth_range(seq: PointSequence, max_frames: int = 16) -> tuple[float, float]:
    """(near, far) metres: 2nd and 98th percentile of valid z over up to ``max_frames`` evenly spread
    frames, so depth colours stay fixed while the sequence plays."""
    frames = np.unique(np.linspace(0, seq.num_frames - 1, min(max_frames, seq.num_frames)).astype(int))
    z = [seq.points[t, v, :n, 2] for t in frames for v in range(seq.num_views)
         for n in [int(min(seq.num_valid[t, v], seq.num_points))] if n > 0]
    if not z:
        return 0.0, 1.0
    z = np.concatenate(z)
    near, far = np.percentile(z, [2.0, 98.0])
    return float(near), float(max(far, near + 1e-3))


# ------------------------------------------------------------------------------------------------ clouds

def view_points(seq: PointSequence, frame: int, view: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The valid points of one (frame, view), camera frame: (M, 3) float32 and labels (M,) int16 or None.

    Rows past ``num_valid`` are resampled copies of valid points (see PointSequence), so they are dropped.
    """
    n = int(min(seq.num_valid[frame, view], seq.num_points))
    labels = None if seq.labels is None else seq.labels[frame, view, :n]
    return seq.points[frame, view, :n], labels


def frame_cloud(seq: PointSequence, state: ViewState, near_far: tuple[float, float] | None = None):
    """The points shown in ``state``, in the display frame, with colours.

    Returns:
        points (M, 3) float64, colors (M, 3) float64, labels (M,) int16 or None, views (M,) int16,
        world (bool: True when ``points`` are in the world frame).

    Raises:
        UsageError: fused display of a sequence without camera poses.
    """
    world = seq.camera_poses is not None
    if state.fused and not world:
        raise UsageError("fused display needs camera poses; this sequence has none")
    views = range(seq.num_views) if state.fused else [state.view]
    pts, labs, vids, cols = [], [], [], []
    near, far = near_far or depth_range(seq)
    for v in views:
        p, lab = view_points(seq, state.frame, v)
        if state.color_by == "label" and lab is not None:
            cols.append(label_colors(lab))
        else:
            cols.append(depth_colors(p[:, 2], near, far))
        if world:
            p = transform_points(seq.camera_poses[state.frame, v], p.astype(np.float64))
        pts.append(np.asarray(p, np.float64))
        labs.append(lab)
        vids.append(np.full(len(p), v, np.int16))
    labels = None if seq.labels is None else np.concatenate(labs).astype(np.int16)
    return (np.concatenate(pts), np.concatenate(cols), labels, np.concatenate(vids), world)


# ------------------------------------------------------------------------------------------ line overlays

def frustum_lines(intrinsics: np.ndarray, image_size, world_from_camera: np.ndarray, depth_m: float,
                  color=GT_CAMERA_COLOR) -> LineArrays:
    """A camera frustum: the optical centre joined to the four image corners back-projected to z = depth_m.

    Args:
        intrinsics: (3, 3). image_size: (W, H) pixels. world_from_camera: (4, 4). depth_m: frustum depth.

    Returns:
        LineArrays with 5 points (centre, then corners (0, 0), (W, 0), (W, H), (0, H)) and 8 lines.
    """
    W, H = float(image_size[0]), float(image_size[1])
    corners = backproject(np.array([0.0, 0.0, H, H]), np.array([0.0, W, W, 0.0]), np.full(4, depth_m), intrinsics)
    pts = transform_points(world_from_camera, np.vstack([np.zeros((1, 3)), corners]))
    lines = np.array([[0, 1], [0, 2], [0, 3], [0, 4], [1, 2], [2, 3], [3, 4], [4, 1]], np.int32)
    return LineArrays(pts, lines, np.tile(np.asarray(color, np.float64), (8, 1)))


def axes_lines(world_from_object: np.ndarray, size_m: float) -> LineArrays:
    """Coordinate axes of one frame: origin to origin + size_m * x (red), y (green), z (blue)."""
    pts = transform_points(world_from_object, np.vstack([np.zeros((1, 3)), np.eye(3) * size_m]))
    return LineArrays(pts, np.array([[0, 1], [0, 2], [0, 3]], np.int32), AXIS_COLORS.copy())


def path_lines(positions: np.ndarray, color) -> LineArrays:
    """A polyline through (P, 3) positions (P - 1 segments)."""
    positions = np.asarray(positions, np.float64).reshape(-1, 3)
    if len(positions) < 2:
        return LineArrays.empty()
    lines = np.stack([np.arange(len(positions) - 1), np.arange(1, len(positions))], -1).astype(np.int32)
    return LineArrays(positions, lines, np.tile(np.asarray(color, np.float64), (len(lines), 1)))


def scene_scale(seq: PointSequence) -> float:
    """Frustum depth for overlays: 1/20 of the diagonal of frame 0's points, within [0.02, 0.3] m."""
    p = np.concatenate([view_points(seq, 0, v)[0] for v in range(seq.num_views)])
    if len(p) == 0:
        return 0.1
    return float(np.clip(0.05 * np.linalg.norm(p.max(0) - p.min(0)), 0.02, 0.3))


def object_axis_sizes(seq: PointSequence, default_m: float) -> np.ndarray:
    """(K,) axis length per object: 0.75 x its mesh's bounding radius (``default_m`` without a mesh)."""
    out = np.full(seq.num_objects, float(default_m))
    for k, name in enumerate(seq.object_names):
        vertices = np.asarray(seq.meshes[name][0], np.float64).reshape(-1, 3)
        if len(vertices):
            out[k] = max(0.75 * float(np.linalg.norm(vertices, axis=1).max()), 1e-3)
    return out


@dataclass(frozen=True)
class Estimate:
    """An estimated camera trajectory matched to the sequence's frames.

    Args:
        world_from_camera: (T, 4, 4) float64, the estimated pose at each sequence frame (NaN where the
            estimate has no pose within the matching tolerance).
    """

    world_from_camera: np.ndarray


def match_estimate(seq: PointSequence, timestamps: np.ndarray, world_from_camera: np.ndarray,
                   view: int = 0, align_first: bool = False) -> Estimate:
    """Match a TUM trajectory (timestamps (E,), poses (E, 4, 4)) to the sequence frames by nearest time
    (within half a frame). With ``align_first`` the estimate is moved rigidly so that its first matched
    pose equals the ground-truth pose of ``view`` there (for estimates that start at the identity).

    Raises:
        DataError: no estimated timestamp is within half a frame of any sequence timestamp.
    """
    from synthseq.datasets.trajectory import associate_timestamps

    idx = associate_timestamps(seq.timestamps, np.asarray(timestamps, np.float64), 0.5 / max(seq.fps, 1e-9))
    if not (idx >= 0).any():
        raise DataError(f"the estimate's timestamps ({timestamps[0]:.3f}..{timestamps[-1]:.3f} s) match no "
                         f"frame of the sequence ({seq.timestamps[0]:.3f}..{seq.timestamps[-1]:.3f} s)")
    out = np.full((seq.num_frames, 4, 4), np.nan)
    out[idx >= 0] = np.asarray(world_from_camera, np.float64)[idx[idx >= 0]]
    if align_first and seq.camera_poses is not None:
        t0 = int(np.flatnonzero(idx >= 0)[0])
        gt_from_est = seq.camera_poses[t0, view] @ invert_pose(out[t0])
        ok = idx >= 0
        out[ok] = gt_from_est @ out[ok]
    return Estimate(out)


def build_frame(seq: PointSequence, state: ViewState, estimate: Estimate | None = None,
                overlay_m: float | None = None, near_far: tuple[float, float] | None = None,
                axis_sizes: np.ndarray | None = None) -> FrameGeometry:
    """Everything the viewer draws for ``state``: the cloud, object axes, camera frustums and paths, and the
    estimated trajectory. Overlays need poses: without camera poses (a real capture without ground
    truth) the cloud is shown in the camera frame and no frustum is drawn.

    Args:
        overlay_m: frustum depth (default: ``scene_scale(seq)``); object axes are sized by their meshes.
        near_far: depth colour range (default: ``depth_range(seq)``).
        axis_sizes: (K,) object axis lengths (default: ``object_axis_sizes(seq, overlay_m)``).
        Pass all three when drawing many frames: they are per-sequence constants.
    """
    check_frame_view(seq, state.frame, state.view)
    points, colors, labels, views, world = frame_cloud(seq, state, near_far)
    size = overlay_m if overlay_m is not None else scene_scale(seq)
    t = state.frame
    objects, cameras, est = LineArrays.empty(), LineArrays.empty(), LineArrays.empty()
    if world and seq.object_poses is not None:
        sizes = axis_sizes if axis_sizes is not None else object_axis_sizes(seq, size)
        objects = LineArrays.concat([axes_lines(seq.object_poses[t, k], sizes[k]) for k in range(seq.num_objects)])
    if world:
        parts = [frustum_lines(seq.intrinsics[v], seq.image_size[v], seq.camera_poses[t, v], size)
                 for v in range(seq.num_views)]
        parts += [path_lines(seq.camera_poses[:, v, :3, 3], GT_CAMERA_COLOR * 0.5 + 0.5) for v in range(seq.num_views)]
        cameras = LineArrays.concat(parts)
    if world and estimate is not None:
        ok = ~np.isnan(estimate.world_from_camera[:, 0, 0])
        parts = [path_lines(estimate.world_from_camera[ok, :3, 3], ESTIMATE_COLOR)]
        if ok[t]:
            parts.append(frustum_lines(seq.intrinsics[state.view], seq.image_size[state.view],
                                       estimate.world_from_camera[t], size, ESTIMATE_COLOR))
        est = LineArrays.concat(parts)
    shown = "fused" if state.fused else f"view {state.view}/{seq.num_views}"
    name = seq.name.rstrip("/").rsplit("/", 1)[-1] or "sequence"  # a capture's name is its folder path
    caption = (f"{name}  frame {t}/{seq.num_frames}  t={seq.timestamps[t]:.3f} s  {shown}  "
               f"{state.color_by}")
    legend = make_legend(seq, state, near_far or depth_range(seq), world, estimate)
    return FrameGeometry(points, colors, labels, views, objects, cameras, est, world, caption, legend)


# ---------------------------------------------------------------------------------------- render cameras

def sensor_camera(seq: PointSequence, state: ViewState, width: int, height: int):
    """The render camera of the shown view's sensor at the frame, scaled to width x height.

    Returns:
        intrinsics (3, 3), camera_from_world (4, 4) (identity when there are no camera poses: the
        points are then in the camera frame already).
    """
    W, H = (int(x) for x in seq.image_size[state.view])
    K = seq.intrinsics[state.view].copy()
    K[0] *= width / W
    K[1] *= height / H
    if seq.camera_poses is None:
        return K, np.eye(4)
    return K, invert_pose(seq.camera_poses[state.frame, state.view])


def overview_camera(seq: PointSequence, width: int, height: int, fov_deg: float = 60.0, margin: float = 0.12):
    """A fixed render camera that frames the objects of the whole sequence: it looks from behind and above
    view 0's first camera and is placed so the objects' points (of up to 8 frames spread over the
    sequence, all views; every point when nothing is labelled as an object) fill the image up to
    ``margin`` on the tighter side and are centred on the other.

    Returns:
        intrinsics (3, 3), camera_from_world (4, 4).
    """
    K = Camera.from_fov(fov_deg, width, height).intrinsics
    focus = _overview_points(seq)
    ref = np.eye(4) if seq.camera_poses is None else seq.camera_poses[0, 0]
    forward, down = ref[:3, 2], ref[:3, 1]
    direction = forward - 0.6 * down  # from above the camera, looking down at the scene
    direction /= np.linalg.norm(direction)
    R = look_at(np.zeros(3), direction, -down)[:3, :3]  # world_from_camera rotation
    q = focus @ R  # the points in the render camera's axes (x right, y down, z forward), up to a shift
    # Half-extents of the image as tangents (x/z, y/z), shrunk by the margin; the principal point is central.
    tan_x = (1.0 - margin) * min(K[0, 2], width - 1 - K[0, 2]) / K[0, 0]
    tan_y = (1.0 - margin) * min(K[1, 2], height - 1 - K[1, 2]) / K[1, 1]
    # For one axis, the camera (c, cz) sees every point within +-tan iff cz <= z_i - |u_i - c| / tan. The
    # largest such cz is where the two families of lines meet (a closed form); the nearer axis decides cz.
    depth = min(_fit_axis(q[:, 0], q[:, 2], tan_x)[1], _fit_axis(q[:, 1], q[:, 2], tan_y)[1])
    cx, cy = _centre_axis(q[:, 0], q[:, 2] - depth), _centre_axis(q[:, 1], q[:, 2] - depth)
    world_from_cam = np.eye(4)
    world_from_cam[:3, :3] = R
    world_from_cam[:3, 3] = R @ np.array([cx, cy, depth])
    return K, invert_pose(world_from_cam)


def _overview_points(seq: PointSequence) -> np.ndarray:
    """(M, 3) world points the overview frames: object points when there are any, all points otherwise,
    without the 1% most extreme on each axis (stray points)."""
    frames = np.unique(np.linspace(0, seq.num_frames - 1, min(8, seq.num_frames)).astype(int))
    pts, labs = [], []
    for t in frames:
        for v in range(seq.num_views):
            p, lab = view_points(seq, t, v)
            pts.append(p if seq.camera_poses is None else transform_points(seq.camera_poses[t, v], p.astype(np.float64)))
            labs.append(np.full(len(p), BACKGROUND_LABEL) if lab is None else lab)
    pts = np.concatenate(pts).astype(np.float64) if pts else np.zeros((0, 3))
    labs = np.concatenate(labs) if labs else np.zeros(0, np.int16)
    objects = pts[labs != BACKGROUND_LABEL]
    focus = objects if len(objects) >= 10 else pts
    if len(focus) == 0:
        return np.zeros((1, 3))
    lo, hi = np.percentile(focus, 1, axis=0), np.percentile(focus, 99, axis=0)
    inside = np.all((focus >= lo) & (focus <= hi), axis=1)
    return focus[inside] if inside.any() else focus


def _fit_axis(u: np.ndarray, z: np.ndarray, tan: float) -> tuple[float, float]:
    """(centre, depth) of the farthest-forward camera position on one image axis that sees every (u, z)
    within +-tan: the intersection of cz = min(z - (u - c) / tan) and cz = min(z + (u - c) / tan)."""
    a, b = np.min(z - u / tan), np.min(z + u / tan)
    return tan * (b - a) / 2.0, (a + b) / 2.0


def _centre_axis(u: np.ndarray, dz: np.ndarray) -> float:
    """The shift c that centres points (u, depth dz > 0) in the image: max (u - c)/dz = max (c - u)/dz
    (the difference falls monotonically in c; bisection)."""
    lo, hi = float(u.min()), float(u.max())
    for _ in range(60):
        c = (lo + hi) / 2.0
        if np.max((u - c) / dz) > np.max((c - u) / dz):
            lo = c
        else:
            hi = c
    return (lo + hi) / 2.0
