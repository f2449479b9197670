"""Headless rendering of viewer frames to images: Open3D's OffscreenRenderer, with a numpy fallback.

Two renderers with one interface, ``render(geometry, intrinsics, camera_from_world) -> (H, W, 3) uint8``:

- :class:`Open3DRenderer`: ``open3d.visualization.rendering.OffscreenRenderer`` (Filament). Needs no
  display: without X11 Open3D falls back to headless mode and, on a machine without a GPU, renders with
  Mesa's software Vulkan driver (llvmpipe; packages libvulkan1 + mesa-vulkan-drivers) or EGL. Post-
  processing (tone mapping, anti-aliasing) is switched off, so colours and the background come out exact.
- :class:`SoftwareRenderer`: projects points and line samples with the pinhole model and splats them with
  a painter's z-order in numpy. Used when Open3D cannot start a renderer (``--renderer auto``), or asked
  for (``--renderer software``). Same camera model, so the two agree on where things are (tested).

Both use OpenCV cameras: pixel (u, v) = K @ (x/z, y/z, 1) in the camera frame, pixel centres at integers.
"""

from __future__ import annotations

import logging

import numpy as np

from synthseq.errors import SynthseqError, UsageError
from synthseq.geometry import project_points, transform_points
from synthseq.pipelines.view_geometry import FrameGeometry, LineArrays

log = logging.getLogger(__name__)

BACKGROUND = (255, 255, 255)
NEAR_M = 0.01
FAR_M = 1000.0


class Open3DRenderer:
    """Renders FrameGeometry with Open3D's OffscreenRenderer (one Filament scene, reused across frames).

    Args:
        width, height: image size in pixels.
        point_size: point diameter in pixels; line_width: line width in pixels.
        show_overlays: draw object axes, camera frustums and trajectories.

    Raises:
        RuntimeError: Open3D could not start a rendering backend.
    """

    def __init__(self, width: int, height: int, point_size: float = 3.0, line_width: float = 2.0,
                 show_overlays: bool = True, background=BACKGROUND):
        from synthseq.progress import quiet_open3d, stdout_to_stderr

        o3d = quiet_open3d()
        self._o3d = o3d
        rendering = o3d.visualization.rendering
        self.width, self.height = int(width), int(height)
        self.show_overlays = show_overlays
        with stdout_to_stderr(discard=True):  # Filament prints its engine banner (7 lines) on stdout
            self._renderer = rendering.OffscreenRenderer(self.width, self.height)
        scene = self._renderer.scene
        scene.set_background([c / 255.0 for c in background] + [1.0])
        # Tone mapping and FXAA would shift label colours and blur the background edge.
        scene.view.set_post_processing(False)
        self._point_material = rendering.MaterialRecord()
        self._point_material.shader = "defaultUnlit"
        self._point_material.point_size = float(point_size)
        self._line_material = rendering.MaterialRecord()
        self._line_material.shader = "unlitLine"
        self._line_material.line_width = float(line_width)
        self._names: list[str] = []

    def _set_geometry(self, geom: FrameGeometry) -> None:
        o3d = self._o3d
        scene = self._renderer.scene
        for name in self._names:
            scene.remove_geometry(name)
        self._names = []
        if len(geom.points):
            pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(geom.points, np.float64)))
            pcd.colors = o3d.utility.Vector3dVector(np.asarray(geom.colors, np.float64))
            scene.add_geometry("points", pcd, self._point_material)
            self._names.append("points")
        if self.show_overlays:
            for name, lines in (("objects", geom.objects), ("cameras", geom.cameras), ("estimate", geom.estimate)):
                if len(lines.lines):
                    scene.add_geometry(name, to_open3d_lineset(lines), self._line_material)
                    self._names.append(name)

    def render(self, geom: FrameGeometry, intrinsics: np.ndarray, camera_from_world: np.ndarray) -> np.ndarray:
        """Render one frame seen by a pinhole camera.

        Args:
            intrinsics: (3, 3) for this renderer's width x height. camera_from_world: (4, 4), OpenCV axes.

        Returns:
            (H, W, 3) uint8 RGB.
        """
        self._set_geometry(geom)
        # Filament puts pixel centres at +0.5 (pixel x covers [x, x + 1)); OpenCV at integers. Shifting the
        # principal point by half a pixel makes u = 80.6 land in pixel 81, as in the OpenCV model.
        K = np.array(intrinsics, np.float64)
        K[0, 2] += 0.5
        K[1, 2] += 0.5
        self._renderer.setup_camera(K, np.asarray(camera_from_world, np.float64), self.width, self.height)
        return np.array(self._renderer.render_to_image())[..., :3]


def to_open3d_lineset(lines: LineArrays):
    """An ``open3d.geometry.LineSet`` holding ``lines`` (points, segments, per-segment colours)."""
    import open3d as o3d

    ls = o3d.geometry.LineSet(o3d.utility.Vector3dVector(np.asarray(lines.points, np.float64)),
                              o3d.utility.Vector2iVector(np.asarray(lines.lines, np.int32)))
    ls.colors = o3d.utility.Vector3dVector(np.asarray(lines.colors, np.float64))
    return ls


class SoftwareRenderer:
    """Renders FrameGeometry with numpy: pinhole projection, square splats, nearest point wins.

    Same arguments and ``render`` as :class:`Open3DRenderer`; slower and without anti-aliasing, but
    needs no graphics stack at all.
    """

    def __init__(self, width: int, height: int, point_size: float = 3.0, line_width: float = 2.0,
                 show_overlays: bool = True, background=BACKGROUND):
        self.width, self.height = int(width), int(height)
        self.point_size, self.line_width = max(int(round(point_size)), 1), max(int(round(line_width)), 1)
        self.show_overlays = show_overlays
        self.background = np.asarray(background, np.uint8)

    def render(self, geom: FrameGeometry, intrinsics: np.ndarray, camera_from_world: np.ndarray) -> np.ndarray:
        """Render one frame; see :meth:`Open3DRenderer.render`. Returns (H, W, 3) uint8 RGB."""
        parts = [(np.asarray(geom.points, np.float64), np.asarray(geom.colors, np.float64), self.point_size)]
        if self.show_overlays:
            for lines in (geom.objects, geom.cameras, geom.estimate):
                if len(lines.lines):
                    parts.append(sample_lines(lines, camera_from_world, intrinsics) + (self.line_width,))
        rows, cols, depth, colors = [], [], [], []
        for points, cols_in, size in parts:
            r, c, z, col = _splat(points, cols_in, size, intrinsics, camera_from_world, self.width, self.height)
            rows.append(r), cols.append(c), depth.append(z), colors.append(col)
        image = np.tile(self.background, (self.height, self.width, 1))
        if rows:
            r, c, z, col = (np.concatenate(a) for a in (rows, cols, depth, colors))
            order = np.argsort(-z, kind="stable")  # far to near: the nearest write lands last and wins
            image[r[order], c[order]] = np.clip(np.round(col[order] * 255.0), 0, 255).astype(np.uint8)
        return image


def _splat(points, colors, size, intrinsics, camera_from_world, width, height):
    """Pixel squares of side ``size`` around each projected point in front of the camera."""
    pc = transform_points(camera_from_world, points) if len(points) else np.zeros((0, 3))
    keep = (pc[:, 2] > NEAR_M) & (pc[:, 2] < FAR_M)
    pc, colors = pc[keep], colors[keep]
    u, v = project_points(np.asarray(intrinsics, np.float64), pc).T
    cu, cv = np.floor(u + 0.5).astype(np.int64), np.floor(v + 0.5).astype(np.int64)
    offsets = np.arange(-(size // 2), size - size // 2)
    du, dv = np.meshgrid(offsets, offsets)
    cols = (cu[:, None] + du.ravel()[None]).ravel()
    rows = (cv[:, None] + dv.ravel()[None]).ravel()
    z = np.repeat(pc[:, 2], du.size)
    col = np.repeat(colors, du.size, axis=0)
    inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    return rows[inside], cols[inside], z[inside], col[inside]


def sample_lines(lines: LineArrays, camera_from_world: np.ndarray, intrinsics: np.ndarray,
                 step_px: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Points along every segment, about ``step_px`` pixels apart in the image, clipped to z > NEAR_M.

    Returns:
        points (S, 3) float64 world frame, colors (S, 3).
    """
    a_w, b_w = lines.points[lines.lines[:, 0]], lines.points[lines.lines[:, 1]]
    a, b = transform_points(camera_from_world, a_w), transform_points(camera_from_world, b_w)
    pts, cols = [], []
    f = float(np.asarray(intrinsics)[0, 0])
    for i in range(len(a)):
        za, zb = a[i, 2], b[i, 2]
        if za <= NEAR_M and zb <= NEAR_M:
            continue
        s0, s1 = 0.0, 1.0
        if za <= NEAR_M:
            s0 = (NEAR_M - za) / (zb - za)
        elif zb <= NEAR_M:
            s1 = (NEAR_M - za) / (zb - za)
        p0, p1 = a[i] + s0 * (b[i] - a[i]), a[i] + s1 * (b[i] - a[i])
        length_px = f * np.linalg.norm(p0[:2] / p0[2] - p1[:2] / p1[2])
        n = int(min(max(length_px / step_px, 2), 20000))
        s = np.linspace(s0, s1, n)[:, None]
        pts.append(a_w[i] + s * (b_w[i] - a_w[i]))
        cols.append(np.tile(lines.colors[i], (n, 1)))
    if not pts:
        return np.zeros((0, 3)), np.zeros((0, 3))
    return np.concatenate(pts), np.concatenate(cols)


def make_renderer(kind: str, width: int, height: int, point_size: float = 3.0, line_width: float = 2.0,
                  show_overlays: bool = True):
    """An Open3D (``kind="open3d"``), numpy (``"software"``) or the first that starts (``"auto"``) renderer.

    Raises:
        ImportError: ``open3d`` asked for and not installed (names the pip extra).
        SynthseqError: ``open3d`` asked for and its renderer does not start.
    """
    if kind not in ("auto", "open3d", "software"):
        raise UsageError(f"renderer: expected auto, open3d or software, got {kind!r}")
    kw = dict(point_size=point_size, line_width=line_width, show_overlays=show_overlays)
    if kind == "software":
        return SoftwareRenderer(width, height, **kw)
    try:
        return Open3DRenderer(width, height, **kw)
    except ImportError as e:
        if kind == "open3d":
            raise ImportError("rendering needs open3d: pip install 'synthseq[render]'") from e
        log.warning("open3d is not installed; rendering with the software fallback")
    except RuntimeError as e:
        if kind == "open3d":
            raise SynthseqError(f"--renderer open3d: Open3D's offscreen renderer did not start ({e}); "
                                "try --renderer software") from e
        log.warning("Open3D's offscreen renderer did not start (%s); rendering with the software fallback",
                    str(e).splitlines()[0] if str(e) else type(e).__name__)
    return SoftwareRenderer(width, height, **kw)


def draw_caption(image: np.ndarray, text: str, legend=None) -> np.ndarray:
    """``image`` (H, W, 3) uint8 with ``text`` (sequence, frame, time, view) at its top-left corner and,
    where the image has room (at least 240 x 120), the colour ``legend`` at its top-right corner."""
    from PIL import Image, ImageDraw

    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    x0, y0, x1, y1 = draw.textbbox((4, 2), text)
    draw.rectangle((x0 - 2, y0 - 1, x1 + 2, y1 + 1), fill=(255, 255, 255))
    draw.text((4, 2), text, fill=(0, 0, 0))
    if legend is not None and (legend.items or legend.ramp) and pil.width >= 240 and pil.height >= 120:
        _draw_legend(draw, legend, pil.width, pil.height, top=y1 + 4)
    return np.asarray(pil)


def _draw_legend(draw, legend, width: int, height: int, top: int) -> None:
    from synthseq.pipelines.view_geometry import ramp_colors

    row, swatch, pad = 13, 9, 4
    rows = [(text, tuple(int(round(c * 255)) for c in rgb)) for text, rgb in legend.items]
    ramp_text = f"depth {legend.ramp[0]:.2f} .. {legend.ramp[1]:.2f} m" if legend.ramp else None
    texts = [t for t, _ in rows] + ([ramp_text] if ramp_text else [])
    text_w = max(draw.textbbox((0, 0), t)[2] for t in texts)
    box_w = pad + swatch + pad + text_w + pad
    max_rows = max((height - top - 2 * pad) // row - (2 if ramp_text else 0), 0)
    rows = rows[:max_rows]
    box_h = pad + row * len(rows) + (2 * row if ramp_text else 0) + pad
    x = width - box_w - 4
    draw.rectangle((x, top, x + box_w, top + box_h), fill=(255, 255, 255), outline=(200, 200, 200))
    y = top + pad
    for text, rgb in rows:
        draw.rectangle((x + pad, y + 2, x + pad + swatch, y + 2 + swatch), fill=rgb)
        draw.text((x + 2 * pad + swatch, y), text, fill=(0, 0, 0))
        y += row
    if ramp_text:
        draw.text((x + pad, y), ramp_text, fill=(0, 0, 0))
        y += row
        bar_w = box_w - 2 * pad
        for i, c in enumerate(ramp_colors(bar_w)):
            draw.line((x + pad + i, y + 1, x + pad + i, y + row - 3), fill=tuple(int(round(v * 255)) for v in c))
