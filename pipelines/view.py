"""`synthseq view`: play a sequence in an Open3D window, or render a frame (PNG) or the sequence (GIF) headless.

The frame logic (what is drawn where) lives in pipelines/view_geometry.py as pure functions; rendering
without a display in pipelines/render_headless.py. This module loads the sequence, checks the arguments
and runs the thin interactive loop (Open3D's GUI is imported here only, inside the functions).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from synthseq.errors import SynthseqError, UsageError

log = logging.getLogger(__name__)

DEFAULT_POINT_SIZE = 3.0  # library default; the CLI picks a size from the cloud's density (auto_point_size)
VIEW_CAPTURE_POINTS = 30_000  # points per frame `view` reads from a real capture unless --num-points is given


def configure_parser(parser) -> None:
    """Arguments of `synthseq view`."""
    parser.add_argument("path", help="a dataset directory (manifest.json), a shard (.h5) or a real capture folder")
    parser.add_argument("--sequence", metavar="ID",
                        help="sequence id (e.g. 3 or 000003; default: the first one)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--view", type=int, default=0, metavar="V", help="camera view to show (default 0)")
    group.add_argument("--fused", action="store_true", help="all views fused in the world frame")
    parser.add_argument("--frame", type=int, default=0, metavar="T", help="frame to show/start at (default 0)")
    parser.add_argument("--estimate", metavar="TUM_FILE",
                        help="an estimated camera trajectory (TUM: t tx ty tz qx qy qz qw) drawn beside the "
                             "ground truth of the shown view")
    parser.add_argument("--align-first", action="store_true",
                        help="move the estimate rigidly so its first pose is the ground-truth one "
                             "(for estimates starting at the identity)")
    parser.add_argument("--color", choices=("label", "depth"), default="label",
                        help="colour points by object label (default) or by depth")
    parser.add_argument("--screenshot", metavar="OUT.png", help="render frame --frame headless to a PNG and exit")
    parser.add_argument("--gif", metavar="OUT.gif", help="render the whole sequence headless to an animated GIF")
    parser.add_argument("--stride", type=int, default=1, help="--gif: render every STRIDE-th frame (default 1)")
    parser.add_argument("--viewpoint", choices=("sensor", "overview"),
                        help="headless render camera: the shown view's sensor (default for one view) or a "
                             "fixed camera seeing the whole scene (default with --fused)")
    parser.add_argument("--size", metavar="WxH",
                        help="headless image size (default: the view's image size; 640x480 for overview)")
    parser.add_argument("--point-size", type=float, default=None,
                        help="point size in pixels, 0.5..64 (default: from the cloud's density, 1..6)")
    parser.add_argument("--points-only", action="store_true",
                        help="headless: draw only the points (no axes, frustums, trajectories, caption)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --screenshot/--gif file")
    parser.add_argument("--renderer", choices=("auto", "open3d", "software"), default="auto",
                        help="headless renderer: Open3D OffscreenRenderer, the numpy fallback, or the first "
                             "that starts (default)")
    add_capture_arguments(parser)


# ----------------------------------------------------------------------------------------- loading inputs

def match_sequence_id(requested: str, available: list[str]) -> str | None:
    """The stored key for ``requested``: exact match, else the zero-padded key of an integer id."""
    from synthseq.datasets.shards import sequence_key

    if requested in available:
        return requested
    try:
        key = sequence_key(int(requested))
    except ValueError:
        return None
    return key if key in available else None


def _available(ids: list[str], limit: int = 20) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


def list_sequences(path) -> list[tuple[Path, str]]:
    """(shard path, sequence key) for every sequence of a dataset directory or a shard file.

    Raises:
        FileNotFoundError: ``path`` does not exist, or a manifest lists a missing shard.
        DataError / FormatVersionError: not a synthseq shard/manifest, or another format_version.
    """
    from synthseq.datasets.shards import ShardReader, read_manifest

    path = Path(path)
    if path.is_file():
        with ShardReader(path) as reader:
            return [(path, key) for key in reader.sequence_ids]
    manifest = read_manifest(path)
    out = []
    for entry in manifest["shards"]:
        shard = path / entry["file"]
        if not shard.is_file():
            raise FileNotFoundError(f"{shard}: shard listed in {path / 'manifest.json'} is missing")
        out += [(shard, str(key)) for key in entry["sequence_ids"]]
    return out


SHARD_SUFFIXES = (".h5", ".hdf5")


def is_dataset_source(path) -> bool:
    """True for a shard file (.h5/.hdf5) or a directory with a manifest.json (else: a real capture)."""
    from synthseq.datasets.shards import MANIFEST

    path = Path(path)
    if path.is_file():
        return path.suffix.lower() in SHARD_SUFFIXES
    return (path / MANIFEST).is_file()


MAX_POINT_SIZE = 64.0
MAX_CAPTURE_POINTS = 2_000_000   # per frame: a 640x480 depth image has 307,200 pixels


def _check_range(flag: str, value, lo, hi) -> None:
    def fmt(x):
        return f"{x:,}" if isinstance(x, int) else f"{x:g}"

    if value is not None and not lo <= value <= hi:
        raise UsageError(f"{flag}: expected a value between {fmt(lo)} and {fmt(hi)}, got {fmt(value)}")


def capture_options(args) -> dict:
    """load_capture options from the CLI flags --num-points/--max-frames (only those given).

    Raises:
        UsageError: a value outside its limits (--num-points 1..2,000,000, --max-frames >= 1).
    """
    _check_range("--num-points", getattr(args, "num_points", None), 1, MAX_CAPTURE_POINTS)
    _check_range("--max-frames", getattr(args, "max_frames", None), 1, 10_000_000)
    out = {}
    if getattr(args, "num_points", None) is not None:
        out["num_points"] = args.num_points
    if getattr(args, "max_frames", None) is not None:
        out["max_frames"] = args.max_frames
    return out


def add_capture_arguments(parser) -> None:
    """--num-points/--max-frames: how a real capture folder is read (ignored for shards)."""
    parser.add_argument("--num-points", type=int, metavar="N",
                        help="real captures: points per frame (load_capture's default otherwise)")
    parser.add_argument("--max-frames", type=int, metavar="T", help="real captures: read at most T frames")


def load_sequence(path, sequence: str | None = None, require_id: bool = False, capture_options: dict | None = None):
    """Read one sequence from a dataset directory, a shard, or a real capture folder.

    Args:
        path: dataset directory (manifest.json), shard file, or capture folder (``load_capture``).
        sequence: sequence id ("3" or "000003"); None = the first (or the only one, with ``require_id``).
        require_id: refuse to pick the first of several sequences when ``sequence`` is None.
        capture_options: keyword options for ``load_capture`` (num_points, max_frames, ...).

    Returns:
        A PointSequence whose ``name`` is the sequence key (or the capture's name).

    Raises:
        FileNotFoundError: no such file or directory.
        DataError: unknown sequence id (the message lists the available ones), not a shard, a capture
            folder that cannot be read.
        FormatVersionError: a shard or dataset of another format_version.
    """
    from synthseq.datasets.shards import ShardReader
    from synthseq.errors import DataError

    from synthseq.datasets.real import parse_capture_spec  # a capture may carry a range: PATH@START:STOP

    path = Path(path)
    if not parse_capture_spec(path).path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if not is_dataset_source(path):
        return _load_capture(path, sequence, capture_options or {})
    entries = list_sequences(path)
    ids = [key for _, key in entries]
    if not ids:
        raise DataError(f"{path}: holds no sequences")
    if sequence is None:
        if require_id and len(ids) > 1:
            raise DataError(f"{path}: holds {len(ids)} sequences, choose one with --sequence "
                            f"(available: {_available(ids)})")
        key = ids[0]
    else:
        key = match_sequence_id(str(sequence), ids)
        if key is None:
            raise DataError(f"{path}: no sequence {sequence!r} (available: {_available(ids)})")
    shard = entries[ids.index(key)][0]
    with ShardReader(shard) as reader:
        seq = reader.read(key)
    return seq.replace(name=key)


def _load_capture(path: Path, sequence: str | None, options: dict):
    from synthseq.errors import DataError

    try:
        from synthseq.datasets import load_capture
    except ImportError:
        raise DataError(f"{path}: not a dataset directory (no manifest.json) nor a shard, and this build "
                        "cannot read capture folders (synthseq.datasets.load_capture is missing)") from None
    if sequence is not None:
        log.warning("%s is a capture folder (one sequence); --sequence %s ignored", path, sequence)
    seq = load_capture(path, **options)
    return seq if seq.name else seq.replace(name=path.name)


def load_estimate(seq, path, view: int, align_first: bool):
    """Read a TUM trajectory file and match it to the sequence's frames (see ``match_estimate``)."""
    from synthseq.datasets.trajectory import read_tum_trajectory
    from synthseq.pipelines.view_geometry import match_estimate

    if seq.camera_poses is None:
        raise UsageError(f"--estimate {path}: the sequence has no camera poses to show it against")
    timestamps, world_from_camera = read_tum_trajectory(path)
    return match_estimate(seq, timestamps, world_from_camera, view=view, align_first=align_first)


def auto_point_size(seq, fused: bool, width: int, height: int) -> float:
    """A point size (pixels) at which the shown cloud covers the image without gaps: the side of the
    square each point has on average, sqrt(W * H / M) for M points shown, within 1..6 pixels."""
    valid = np.minimum(seq.num_valid, seq.num_points)
    shown = float(valid.sum(axis=1).mean() if fused else valid.mean())
    return float(np.clip(round(np.sqrt(width * height / max(shown, 1.0))), 1.0, 6.0))


def parse_size(text: str) -> tuple[int, int]:
    """'320x240' -> (320, 240)."""
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--size: expected WxH such as 640x480, got {text!r}") from None
    if w <= 0 or h <= 0 or w > 8192 or h > 8192:
        raise UsageError(f"--size: expected positive sizes up to 8192, got {text!r}")
    return w, h


# -------------------------------------------------------------------------------------------- headless

def render_frames(seq, state, frames, estimate=None, viewpoint: str | None = None,
                  size: tuple[int, int] | None = None, point_size: float = DEFAULT_POINT_SIZE,
                  points_only: bool = False, renderer: str = "auto"):
    """Render frames headless; yields (frame index, (H, W, 3) uint8 image).

    Args:
        seq: the PointSequence. state: ViewState (view, fused, colouring); its frame is replaced by each of
            ``frames``. viewpoint: "sensor" (the shown view's camera at each frame) or "overview"
            (one fixed camera seeing the whole sequence); default sensor, overview when fused.
        size: (W, H) image size; default the view's image size (sensor) or 640x480 (overview).
    """
    from synthseq.pipelines.render_headless import draw_caption, make_renderer
    from synthseq.pipelines.view_geometry import (build_frame, depth_range, object_axis_sizes, overview_camera,
                                                  scene_scale, sensor_camera)

    viewpoint = viewpoint or ("overview" if state.fused else "sensor")
    if viewpoint == "sensor" and state.fused:
        raise UsageError("--viewpoint sensor shows one view; use --view V instead of --fused, or overview")
    if size is None:
        size = tuple(int(x) for x in seq.image_size[state.view]) if viewpoint == "sensor" else (640, 480)
    width, height = size
    r = make_renderer(renderer, width, height, point_size=point_size, show_overlays=not points_only)
    near_far, overlay_m = depth_range(seq), scene_scale(seq)
    axis_sizes = object_axis_sizes(seq, overlay_m)
    fixed = overview_camera(seq, width, height) if viewpoint == "overview" else None
    for t in frames:
        s = state.replace(frame=int(t))
        geom = build_frame(seq, s, estimate, overlay_m=overlay_m, near_far=near_far, axis_sizes=axis_sizes)
        K, camera_from_world = fixed if fixed is not None else sensor_camera(seq, s, width, height)
        image = r.render(geom, K, camera_from_world)
        yield int(t), (image if points_only else draw_caption(image, geom.caption, geom.legend))


def check_output_file(path, overwrite: bool) -> None:
    """Refuse to replace an existing file (or a directory) unless ``overwrite``.

    Raises:
        FileExistsError / IsADirectoryError: naming the path and the flag that allows it.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a directory; give a file name")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: exists already; pass --overwrite to replace it, or choose another name")


def write_file_atomic(path, write) -> None:
    """Call ``write(tmp_path)`` and rename the result to ``path``: a failed write leaves neither a partial
    file nor a folder this call created."""
    write_files_atomic({path: write})


def write_files_atomic(writes: dict) -> None:
    """Write several files all or none: ``{path: write}``, each ``write(tmp_path)`` into a temporary file beside its
    path, renamed into place only once every write succeeded. A failure leaves no temporary file, none of the
    paths this call renamed into place, and no folder it created."""
    import tempfile

    paths = [Path(p) for p in writes]
    created = sorted({q for p in paths for q in [p.parent, *p.parent.parents] if not q.exists()},
                     key=lambda q: len(q.parts), reverse=True)  # innermost first
    tmps, done = [], []
    try:
        for path, write in zip(paths, writes.values()):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + path.suffix)
            os.close(fd)
            tmps.append(tmp)
            write(tmp)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        for tmp, path in zip(tmps, paths):
            os.replace(tmp, path)
            done.append(path)
    except BaseException:
        for p in [*tmps, *done]:
            Path(p).unlink(missing_ok=True)
        for p in created:
            try:
                p.rmdir()
            except OSError:
                break
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_png(image: np.ndarray, path) -> None:
    """Write an (H, W, 3) uint8 image as PNG (parent folders created; atomic)."""
    from PIL import Image

    write_file_atomic(path, lambda tmp: Image.fromarray(image).save(tmp, format="PNG"))


def save_gif(images: list[np.ndarray], path, fps: float) -> None:
    """Write (H, W, 3) uint8 images as a looping GIF at ``fps`` frames per second (atomic)."""
    from PIL import Image

    frames = [Image.fromarray(im) for im in images]
    duration_ms = max(int(round(1000.0 / max(fps, 1e-3))), 20)  # most viewers clamp below 20 ms
    write_file_atomic(path, lambda tmp: frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:],
                                                       duration=duration_ms, loop=0, optimize=False, disposal=1))


def has_display() -> bool:
    """True where a window can open: Linux/BSD need DISPLAY or WAYLAND_DISPLAY; other systems always."""
    if sys.platform.startswith(("linux", "freebsd", "openbsd")):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


# ----------------------------------------------------------------------------------------------- the CLI

def run(args) -> int:
    """`synthseq view`: check the inputs, then render headless (--screenshot/--gif) or open the window."""
    from synthseq.pipelines.view_geometry import ViewState, check_frame_view

    for out, suffix in ((args.screenshot, ".png"), (args.gif, ".gif")):
        if out and Path(out).suffix.lower() != suffix:
            raise UsageError(f"{out}: expected a {suffix} file name")
        if out:
            check_output_file(out, args.overwrite)
    if args.stride < 1:
        raise UsageError(f"--stride: expected a positive integer, got {args.stride}")
    _check_range("--point-size", args.point_size, 0.5, MAX_POINT_SIZE)
    size = parse_size(args.size) if args.size else None
    options = capture_options(args)
    options.setdefault("num_points", VIEW_CAPTURE_POINTS)  # dense enough to show a room (ignored for shards)
    seq = load_sequence(args.path, args.sequence, capture_options=options)
    check_frame_view(seq, args.frame, args.view)
    if args.fused and seq.camera_poses is None:
        raise UsageError(f"{args.path}: --fused needs camera poses; this sequence has none")
    color_by = args.color if seq.labels is not None else "depth"
    state = ViewState(frame=args.frame, view=args.view, fused=args.fused, color_by=color_by)
    estimate = load_estimate(seq, args.estimate, args.view, args.align_first) if args.estimate else None
    point_size = args.point_size
    if point_size is None:
        shown_size = size or ((640, 480) if (args.viewpoint or ("overview" if args.fused else "sensor")) == "overview"
                              else tuple(int(x) for x in seq.image_size[args.view]))
        point_size = auto_point_size(seq, args.fused, *shown_size)
    render_kw = dict(estimate=estimate, viewpoint=args.viewpoint, size=size, point_size=point_size,
                     points_only=args.points_only, renderer=args.renderer)

    if args.screenshot or args.gif:
        if args.screenshot:
            (_, image), = render_frames(seq, state, [args.frame], **render_kw)
            save_png(image, args.screenshot)
            print(f"wrote {args.screenshot} (sequence {seq.name}, frame {args.frame})")
        if args.gif:
            from synthseq.progress import progress

            frames = range(0, seq.num_frames, args.stride)
            images = [im for _, im in progress(render_frames(seq, state, frames, **render_kw), total=len(frames),
                                               desc="rendering", unit="frame")]
            save_gif(images, args.gif, seq.fps / args.stride)
            print(f"wrote {args.gif} ({len(images)} frames of sequence {seq.name})")
        return 0
    if not has_display():
        print("synthseq view: no display (DISPLAY is not set): use --screenshot OUT.png or --gif OUT.gif to "
              "render headless, or set DISPLAY (e.g. ssh -X, or xvfb-run)", file=sys.stderr)
        return 2
    play_window(seq, state, estimate, point_size=point_size)
    return 0


# ------------------------------------------------------------------------------------ interactive window

class WindowError(SynthseqError, RuntimeError):
    """The interactive window could not open (no usable display)."""


HUD_DEPTH_M = 0.02  # the head-up display lies this far in front of the viewpoint (z-near is set below it)
HUD_ROW_PX = 18


def _text_mesh(text: str):
    """(vertices (P, 2) pixels, y down from the top of the line, triangles (F, 3)) of ``text``."""
    import open3d as o3d

    mesh = o3d.t.geometry.TriangleMesh.create_text(text, depth=0.0).to_legacy()
    v = np.asarray(mesh.vertices)[:, :2] * 0.9
    if len(v) == 0:
        return np.zeros((0, 2)), np.zeros((0, 3), np.int64)
    v[:, 1] = 14.0 - v[:, 1]  # font units are y-up from the baseline
    return v, np.asarray(mesh.triangles, np.int64)


def hud_layout(caption: str, legend, width: int, height: int):
    """The head-up display in window pixels: the caption at the top-left, the legend at the top-right.

    Returns:
        vertices (P, 3) (u, v, depth factor: 1 for text and swatches, 1.05 for the white panels behind them),
        triangles (F, 3) int, colours (P, 3) in [0, 1].
    """
    from synthseq.pipelines.view_geometry import ramp_colors

    verts, tris, cols = [], [], []

    def add(v2, t, color, depth=1.0, x=0.0, y=0.0):
        base = sum(len(v) for v in verts)
        v2 = np.asarray(v2, np.float64).reshape(-1, 2)
        verts.append(np.column_stack([v2[:, 0] + x, v2[:, 1] + y, np.full(len(v2), depth)]))
        tris.append(np.asarray(t, np.int64).reshape(-1, 3) + base)
        c = np.asarray(color, np.float64)
        cols.append(np.tile(c, (len(v2), 1)) if c.ndim == 1 else c)

    def quad(x0, y0, x1, y1, color, depth=1.0):
        add([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], [(0, 1, 2), (0, 2, 3)], color, depth)

    black, white = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    v, t = _text_mesh(caption)
    if len(v):
        quad(4, 4, 12 + v[:, 0].max(), 8 + HUD_ROW_PX, white, 1.05)
        add(v, t, black, 1.0, x=8, y=8)
    rows = [(text, rgb) for text, rgb in legend.items] if legend is not None else []
    ramp = None if legend is None else legend.ramp
    lines = [(_text_mesh(text), rgb) for text, rgb in rows]
    if ramp is not None:
        lines.append((_text_mesh(f"depth {ramp[0]:.2f} .. {ramp[1]:.2f} m"), None))
    if lines:
        text_w = max((m[0][:, 0].max() if len(m[0]) else 0.0) for m, _ in lines)
        box_w = 8 + 12 + 6 + text_w + 8
        x0 = width - 6 - box_w
        y = 6.0
        box_h = 8 + HUD_ROW_PX * len(lines) + (12 if ramp is not None else 0) + 4
        quad(x0, y, x0 + box_w, y + box_h, white, 1.05)
        y += 6
        for (mv, mt), rgb in lines:
            if rgb is not None:
                quad(x0 + 8, y + 3, x0 + 20, y + 15, rgb)
                add(mv, mt, black, 1.0, x=x0 + 26, y=y + 2)
            else:
                add(mv, mt, black, 1.0, x=x0 + 8, y=y + 2)
            y += HUD_ROW_PX
        if ramp is not None:
            n = 32
            c = ramp_colors(n)
            step = (box_w - 16) / n
            for i in range(n):
                quad(x0 + 8 + i * step, y, x0 + 8 + (i + 1) * step + 0.5, y + 10, c[i])
    if not verts:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros((0, 3))
    return np.concatenate(verts), np.concatenate(tris), np.concatenate(cols)


# GLFW key codes (Open3D's legacy Visualizer passes them through).
KEY_CODES = {"space": [32], "right": [262], "left": [263], "+": [61, 334], "-": [45, 333], "v": [86], "f": [70],
             "l": [76], "c": [67], "h": [72]}


class Player:
    """The interactive viewer: an Open3D VisualizerWithKeyCallback whose geometry is updated in place.

    One PointCloud and three LineSets (object axes, ground-truth cameras, estimate) are added once; each
    frame change rewrites their arrays and calls ``update_geometry`` (no remove/add), which keeps playback
    of a 320x240 x 4-view sequence smooth. The legacy window cannot change its title nor draw 2D text, so
    the caption (sequence, frame index, time, view) and the colour legend are a head-up display: flat text
    and swatch meshes (``TriangleMesh.create_text``) placed just in front of the current viewpoint, at the
    window's top-left and top-right corners, and moved with the viewpoint when the mouse turns it. The
    same caption also goes to one status line on the terminal.

    Args:
        seq: PointSequence. state: the initial ViewState. estimate: Estimate or None.
        visible: False opens an offscreen window (EGL), for tests.
    """

    def __init__(self, seq, state, estimate=None, point_size: float = DEFAULT_POINT_SIZE, visible: bool = True,
                 status_stream=None):
        import open3d as o3d

        from synthseq.pipelines.view_geometry import depth_range, object_axis_sizes, scene_scale

        self._o3d = o3d
        self.seq, self.state, self.estimate = seq, state, estimate
        self.near_far, self.overlay_m = depth_range(seq), scene_scale(seq)
        self.axis_sizes = object_axis_sizes(seq, self.overlay_m)
        self.status_stream = status_stream if status_stream is not None else sys.stdout
        W, H = (int(x) for x in seq.image_size[state.view])
        scale = max(min(960 / W, 720 / H), 1.0)  # the sensor's aspect ratio, about 960 x 720
        self.width, self.height = int(round(W * scale)), int(round(H * scale))
        self.vis = o3d.visualization.VisualizerWithKeyCallback()
        if not self.vis.create_window(window_name=f"synthseq view - {seq.name}", width=self.width,
                                      height=self.height, visible=visible):
            raise WindowError("Open3D could not open a window (is DISPLAY valid?); use --screenshot/--gif instead")
        opt = self.vis.get_render_option()
        opt.point_size = float(point_size)
        opt.background_color = np.ones(3)
        opt.light_on = False  # the head-up display's text and swatches keep their exact colours
        opt.mesh_show_back_face = True
        self.hud = o3d.geometry.TriangleMesh()
        self._hud_px = None  # (vertices in pixels + depth factor, triangles, colours) of the current HUD
        self._hud_pose = None
        self.cloud = o3d.geometry.PointCloud()
        self.lines = {name: o3d.geometry.LineSet() for name in ("objects", "cameras", "estimate")}
        self._added = False
        self._last_step = time.monotonic()
        for name, codes in KEY_CODES.items():
            for code in codes:
                self.vis.register_key_callback(code, self._on_key(name))
        self.vis.register_animation_callback(lambda vis: self.tick(time.monotonic()))
        self.refresh()

    def refresh(self) -> None:
        """Rebuild the frame's arrays and push them into the existing geometries."""
        from synthseq.pipelines.render_headless import to_open3d_lineset
        from synthseq.pipelines.view_geometry import build_frame

        o3d = self._o3d
        geom = build_frame(self.seq, self.state, self.estimate, overlay_m=self.overlay_m, near_far=self.near_far,
                           axis_sizes=self.axis_sizes)
        self.cloud.points = o3d.utility.Vector3dVector(geom.points)
        self.cloud.colors = o3d.utility.Vector3dVector(geom.colors)
        for name, ls in self.lines.items():
            src = to_open3d_lineset(getattr(geom, name))
            ls.points, ls.lines, ls.colors = src.points, src.lines, src.colors
        geometries = (self.cloud, *self.lines.values())
        self._hud_px = hud_layout(geom.caption, geom.legend, self.width, self.height)
        self._hud_pose = None
        if not self._added:
            for g in geometries:
                self.vis.add_geometry(g, reset_bounding_box=True)
            self.vis.add_geometry(self.hud, reset_bounding_box=False)
            self._added = True
            self.to_sensor()
        else:
            for g in geometries:
                self.vis.update_geometry(g)
        self.place_hud()
        s = self.state
        print(f"\r{geom.caption}  speed x{s.speed:g}  {'playing' if s.playing else 'paused '}   ", end="",
              file=self.status_stream, flush=True)

    def place_hud(self) -> bool:
        """Put the head-up display in front of the current viewpoint (True when it moved)."""
        o3d = self._o3d
        view = self.vis.get_view_control()
        params = view.convert_to_pinhole_camera_parameters()
        camera_from_world = np.asarray(params.extrinsic)
        if self._hud_px is None or (self._hud_pose is not None and np.allclose(self._hud_pose, camera_from_world)):
            return False
        K = np.asarray(params.intrinsic.intrinsic_matrix)
        depth = HUD_DEPTH_M
        view.set_constant_z_near(0.5 * depth)
        px, triangles, colors = self._hud_px
        # image window pixels -> the camera frame at HUD depth (panels a little behind their text)
        from synthseq.geometry import backproject, invert_pose, transform_points

        cam = backproject(px[:, 1], px[:, 0], depth * px[:, 2], K)  # px columns: (u, v, depth factor)
        world = transform_points(invert_pose(camera_from_world), cam)
        self.hud.vertices = o3d.utility.Vector3dVector(world)
        self.hud.triangles = o3d.utility.Vector3iVector(triangles)
        self.hud.vertex_colors = o3d.utility.Vector3dVector(colors)
        self.vis.update_geometry(self.hud)
        self._hud_pose = camera_from_world.copy()
        return True

    def to_sensor(self) -> None:
        """Move the viewpoint to the shown view's sensor pose at the current frame."""
        from synthseq.pipelines.view_geometry import sensor_camera

        o3d = self._o3d
        K, camera_from_world = sensor_camera(self.seq, self.state, self.width, self.height)
        params = o3d.camera.PinholeCameraParameters()
        params.intrinsic = o3d.camera.PinholeCameraIntrinsic(self.width, self.height, K)
        params.extrinsic = camera_from_world
        self.vis.get_view_control().convert_from_pinhole_camera_parameters(params, allow_arbitrary=True)
        self.place_hud()

    def press(self, name: str) -> bool:
        """Handle key ``name`` (see view_geometry.HELP); True when the view must be redrawn."""
        from synthseq.pipelines.view_geometry import HELP, apply_key

        if name == "h":
            print("\n" + HELP, file=self.status_stream)
            return False
        if name == "c":
            self.to_sensor()
            return True
        self.state = apply_key(self.state, name, self.seq.num_frames, self.seq.num_views)
        self.refresh()
        return True

    def _on_key(self, name: str):
        return lambda vis: self.press(name)

    def tick(self, now: float) -> bool:
        """Animation callback: advance one frame when playing and 1 / (fps * speed) seconds have passed."""
        s = self.state
        moved = self.place_hud()  # follow the mouse: the HUD stays at the window's corners
        if not s.playing or now - self._last_step < 1.0 / (self.seq.fps * s.speed):
            return moved
        self._last_step = now
        self.state = s.replace(frame=(s.frame + 1) % self.seq.num_frames)
        self.refresh()
        return True

    def capture(self) -> np.ndarray:
        """The window's current image, (H, W, 3) uint8."""
        self.vis.poll_events()
        self.vis.update_renderer()
        return (np.asarray(self.vis.capture_screen_float_buffer(do_render=True)) * 255).round().astype(np.uint8)

    def close(self) -> None:
        self.vis.destroy_window()


def play_window(seq, state, estimate=None, point_size: float = DEFAULT_POINT_SIZE) -> None:  # pragma: no cover
    """Open the interactive window and play until it is closed (q or Esc)."""
    from synthseq.pipelines.view_geometry import HELP

    print(HELP)
    player = Player(seq, state, estimate, point_size=point_size)
    try:
        player.vis.run()
    finally:
        player.close()
        print()
