"""The ``raycast`` backend: depth + instance images by CPU ray casting with Open3D's RaycastingScene (Embree).

One ray per pixel centre: pixel (row, col) looks along ``K^-1 @ (col, row, 1)`` in OpenCV camera axes, the
same convention as :func:`synthseq.datasets.types.backproject_depth` (integer pixel coordinates are pixel
centres). The ray direction has z = 1 in the camera frame, so Embree's ``t_hit`` (measured in units of the
direction's length) *is* the z-depth. Open3D's own ``create_rays_pinhole`` also has z = 1 directions (and so
also returns z-depth, tested in tests/test_render.py) but puts pixel centres at ``col + 0.5``, which would
shift every point by half a pixel against the rest of the project; hence our own rays.

Speed: Open3D's BVH cannot move instances, so a scene state (one frame) is built once from world-space
triangles and shared by every view of that frame (:meth:`RaycastRenderer.render_views`); per-key vertex and
face arrays and per-camera ray directions are cached across frames. ``cast_rays`` costs ~0.1 us of CPU per
ray whatever the scene, so a room around the camera is not ray cast pixel by pixel: the *coarse room path*
(:meth:`RaycastRenderer._coarse_plan`, docs/rendering.md) casts a 4-px grid, interpolates 1/z exactly
inside cells that see one plane of the room and no other mesh, and casts per-pixel rays everywhere else.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import numpy as np

from synthseq.datasets.types import Camera
from synthseq.generator.render.base import (MultiViewRenderer, RenderMesh, RenderResult, check_view_poses,
                                             same_geometry)

logger = logging.getLogger(__name__)

_MAX_RAY_CACHE = 16
# Bounded so that a long-lived worker's memory stays flat when every sequence brings new mesh keys.
_MAX_GEOMETRY_CACHE = 256


def _import_open3d():
    try:
        import open3d as o3d
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the 'raycast' renderer needs Open3D: pip install open3d-cpu==0.20.0 "
            "(or pip install 'synthseq[render]')"
        ) from e
    return o3d


def camera_ray_directions(camera: Camera) -> np.ndarray:
    """Ray directions through every pixel centre, in OpenCV camera axes, with z = 1.

    Args:
        camera: the pinhole camera.

    Returns:
        (H, W, 3) float64 directions ``((col - cx) / fx, (row - cy) / fy, 1)``.
    """
    K = camera.intrinsics
    cols = (np.arange(camera.width, dtype=np.float64) - K[0, 2]) / K[0, 0]
    rows = (np.arange(camera.height, dtype=np.float64) - K[1, 2]) / K[1, 1]
    out = np.empty((camera.height, camera.width, 3), dtype=np.float64)
    out[..., 0] = cols[None, :]
    out[..., 1] = rows[:, None]
    out[..., 2] = 1.0
    return out


class RaycastRenderer(MultiViewRenderer):
    """Renders z-depth and instance images with Open3D's Embree ray caster (CPU).

    Args:
        nthreads: threads for ``cast_rays``; 0 lets Open3D use every core.
        coarse_step: grid step (pixels) of the coarse pass that interpolates the room; 0 or 1 casts a ray
            through every pixel (the reference path; results agree to float precision, tested).
    """

    name = "raycast"

    def __init__(self, nthreads: int = 0, coarse_step: int = 4):
        if int(nthreads) < 0:
            raise ValueError(f"RaycastRenderer: nthreads must be >= 0, got {nthreads}")
        if int(coarse_step) < 0:
            raise ValueError(f"RaycastRenderer: coarse_step must be >= 0, got {coarse_step}")
        self.coarse_step = int(coarse_step)
        self.last_rays_cast = 0  # rays cast by the last render_views call (for tests and benchmarks)
        self._o3d = _import_open3d()
        self.nthreads = int(nthreads)
        self._geometry: OrderedDict[str, _Geometry] = OrderedDict()
        self._rays: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    # -- caches ---------------------------------------------------------------------------------------------

    def _cached_geometry(self, mesh: RenderMesh) -> "_Geometry":
        """``mesh``'s geometry prepared for casting (float64 vertices, uint32 faces, convex shell, hull
        points; object frame), cached by key (LRU)."""
        entry = self._geometry.get(mesh.key)
        if entry is not None and same_geometry(mesh, entry.source_vertices, entry.source_faces):
            self._geometry.move_to_end(mesh.key)
            entry.source_vertices, entry.source_faces = mesh.vertices, mesh.faces  # equal contents
            return entry
        entry = _Geometry(mesh)
        self._geometry[mesh.key] = entry
        self._geometry.move_to_end(mesh.key)
        if len(self._geometry) > _MAX_GEOMETRY_CACHE:
            self._geometry.popitem(last=False)
        return entry

    def _cached_directions(self, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
        """(W,) x/z of every column and (H,) y/z of every row, float32."""
        key = (camera.width, camera.height, camera.intrinsics.tobytes())
        dirs = self._rays.get(key)
        if dirs is None:
            K = camera.intrinsics
            x_cols = ((np.arange(camera.width) - K[0, 2]) / K[0, 0]).astype(np.float32)
            y_rows = ((np.arange(camera.height) - K[1, 2]) / K[1, 1]).astype(np.float32)
            dirs = (x_cols, y_rows)
            self._rays[key] = dirs
            if len(self._rays) > _MAX_RAY_CACHE:
                self._rays.popitem(last=False)
        else:
            self._rays.move_to_end(key)
        return dirs

    # -- rendering ------------------------------------------------------------------------------------------

    def _build_scene(self, meshes: list[RenderMesh]) -> "_Frame":
        """One RaycastingScene with every mesh in world coordinates, plus what the coarse path needs."""
        o3d = self._o3d
        scene = o3d.t.geometry.RaycastingScene()
        frame = _Frame(scene)
        for mesh in meshes:
            geometry = self._cached_geometry(mesh)
            if len(geometry.faces) == 0 or len(geometry.vertices) == 0:
                continue
            world_from_object = np.asarray(mesh.world_from_object, dtype=np.float64)
            R, t = world_from_object[:3, :3], world_from_object[:3, 3]
            world_vertices = geometry.vertices @ R.T + t
            geometry_id = scene.add_triangles(
                o3d.core.Tensor(world_vertices.astype(np.float32)), o3d.core.Tensor(geometry.faces)
            )
            # add_triangles numbers geometries 0, 1, 2, ... in order; keep the check cheap but honest.
            if geometry_id != len(frame.instance_of_geometry):
                raise RuntimeError(f"Open3D returned geometry id {geometry_id}, expected {len(frame.instance_of_geometry)}")
            frame.instance_of_geometry.append(int(mesh.instance_id))
            frame.hull_points.append(geometry.hull_points @ R.T + t)
            frame.shells.append(None if geometry.shell is None else geometry.shell.transformed(R, t))
        frame.lut = np.asarray(frame.instance_of_geometry + [-1], dtype=np.int16)
        return frame

    def _rays_for(self, camera: Camera, world_from_camera: np.ndarray, rows: np.ndarray, cols: np.ndarray):
        """(len(rows), 6) float32 world rays through pixel centres (rows[i], cols[i]); direction z = 1 in camera."""
        x_cols, y_rows = self._cached_directions(camera)
        R = world_from_camera[:3, :3].astype(np.float32)
        x, y = x_cols[cols], y_rows[rows]
        rays = np.empty((len(rows), 6), dtype=np.float32)
        rays[:, :3] = world_from_camera[:3, 3]
        for k in range(3):
            # world direction = x * R[:, 0] + y * R[:, 1] + R[:, 2]
            rays[:, 3 + k] = x * R[k, 0] + y * R[k, 1] + R[k, 2]
        return rays

    def _cast(self, frame: "_Frame", rays: np.ndarray, primitives: bool = False):
        """Cast (N, 6) rays: returns t (N,) float32 (inf = miss), geometry (N,) int64 (len(lut) - 1 = miss)
        and, with ``primitives``, the (N,) uint32 triangle index within its geometry."""
        miss_id = len(frame.lut) - 1
        if miss_id == 0 or len(rays) == 0:  # nothing to hit
            out = (np.full(len(rays), np.inf, np.float32), np.full(len(rays), miss_id, np.int64))
            return out + ((np.zeros(len(rays), np.uint32),) if primitives else ())
        self.last_rays_cast += len(rays)
        hits = frame.scene.cast_rays(self._o3d.core.Tensor.from_numpy(rays), nthreads=self.nthreads)  # zero-copy
        t = hits["t_hit"].numpy()
        geometry = np.minimum(hits["geometry_ids"].numpy(), miss_id).astype(np.int64)  # INVALID_ID -> miss
        if primitives:
            return t, geometry, hits["primitive_ids"].numpy()
        return t, geometry

    def _coarse_plan(self, frame: "_Frame", camera: Camera, world_from_camera: np.ndarray):
        """Decide which pixels of this view may be interpolated; None when the coarse path does not apply.

        The coarse path needs exactly one mesh that is a convex shell around the camera (a room seen from
        inside: every ray meets it at most once, and the pixels whose rays hit one of its planar faces form
        a convex image region). Cells of a coarse pixel grid whose 4 corner rays hit the same triangle of
        that shell, and that no other mesh's projected bounding box touches, are interpolated exactly: 1/z is
        an affine function of (u, v) on a plane, so bilinear interpolation of 1/z reproduces it.
        """
        step = self.coarse_step
        if step < 2 or camera.width < 2 * step or camera.height < 2 * step:
            return None
        eye = world_from_camera[:3, 3]
        shells = [g for g, shell in enumerate(frame.shells) if shell is not None and shell.encloses(eye)]
        if len(shells) != 1:
            return None
        shell_id = shells[0]
        grid = self._cached_grid(camera, step)
        covered = np.zeros((len(grid.rows) - 1, len(grid.cols) - 1), dtype=bool)
        vertices, starts = frame.stacked_vertices(shell_id)
        if len(starts):
            # tight rectangles from every projected vertex (the projection of a mesh in front of the camera
            # lies in the hull of its projected vertices)
            rects = _projected_rects(vertices, starts, np.linalg.inv(world_from_camera), camera)
            # closed cell i spans rows [R[i], R[i+1]]: it touches [r0, r1] iff R[i] <= r1 and R[i+1] >= r0
            i0 = np.maximum(np.searchsorted(grid.rows, rects[:, 0], side="left") - 1, 0)
            i1 = np.searchsorted(grid.rows, rects[:, 1], side="right") - 1
            j0 = np.maximum(np.searchsorted(grid.cols, rects[:, 2], side="left") - 1, 0)
            j1 = np.searchsorted(grid.cols, rects[:, 3], side="right") - 1
            for a, b, c, d in zip(i0.tolist(), i1.tolist(), j0.tolist(), j1.tolist()):
                if b >= a and d >= c:
                    covered[a : b + 1, c : d + 1] = True
        return shell_id, grid, covered

    def _cached_grid(self, camera: Camera, step: int) -> "_Grid":
        key = ("grid", camera.width, camera.height, step)
        grid = self._rays.get(key)
        if grid is None:
            grid = _Grid(camera.height, camera.width, step)
            self._rays[key] = grid
            if len(self._rays) > _MAX_RAY_CACHE:
                self._rays.popitem(last=False)
        return grid

    def render_views(
        self, meshes: list[RenderMesh], cameras: list[Camera], world_from_cameras
    ) -> list[RenderResult]:
        """Render V views of one scene state (the scene's BVH is built once and shared by the views).

        Args:
            meshes: the scene at one instant.
            cameras: V pinhole cameras (sizes may differ).
            world_from_cameras: (V, 4, 4) float, OpenCV camera axes.

        Returns:
            V results: depth (H, W) float32 z-depth metres (0 = no hit), instance (H, W) int16 (-1 = none).
        """
        world_from_cameras = check_view_poses(world_from_cameras, len(cameras))
        frame = self._build_scene(meshes)
        V = len(cameras)
        self.last_rays_cast = 0
        plans = [self._coarse_plan(frame, cameras[v], world_from_cameras[v]) for v in range(V)]

        # Pass 1: the coarse grids of every view that has a plan, in one cast.
        coarse_rays = [
            self._rays_for(cameras[v], world_from_cameras[v], plan[1].grid_r, plan[1].grid_c)
            for v, plan in enumerate(plans)
            if plan is not None
        ]
        interp: list = [None] * V
        if coarse_rays:
            t, geometry, primitive = self._cast(frame, np.concatenate(coarse_rays), primitives=True)
            offset = 0
            for v, plan in enumerate(plans):
                if plan is None:
                    continue
                shell_id, grid, covered = plan
                n = grid.grid_r.size
                interp[v] = grid.interpolate(
                    t[offset : offset + n], geometry[offset : offset + n], primitive[offset : offset + n], shell_id, covered
                )
                offset += n

        # Pass 2: every pixel that was not interpolated, all views in one cast.
        fine_rays, fine_pixels = [], []
        for v in range(V):
            H, W = cameras[v].height, cameras[v].width
            if interp[v] is None:
                flat = np.arange(H * W)
            else:
                flat = np.flatnonzero(~interp[v][0])
            fine_pixels.append(flat)
            rows, cols = np.divmod(flat, W)
            fine_rays.append(self._rays_for(cameras[v], world_from_cameras[v], rows, cols))
        t, geometry = self._cast(frame, np.concatenate(fine_rays) if fine_rays else np.zeros((0, 6), np.float32))

        results = []
        offset = 0
        for v in range(V):
            H, W = cameras[v].height, cameras[v].width
            depth = np.zeros(H * W, dtype=np.float32)
            instance = np.full(H * W, -1, dtype=np.int16)
            if interp[v] is not None:
                mask, inv_z, shell_id = interp[v]
                mask = mask.ravel()
                depth[mask] = 1.0 / inv_z.ravel()[mask]
                instance[mask] = frame.lut[shell_id]
            flat = fine_pixels[v]
            tv = t[offset : offset + len(flat)]
            depth[flat] = np.where(np.isfinite(tv), tv, np.float32(0.0))
            instance[flat] = frame.lut[geometry[offset : offset + len(flat)]]
            offset += len(flat)
            results.append(RenderResult(depth=depth.reshape(H, W), instance=instance.reshape(H, W)))
        return results

    def clear_cache(self) -> None:
        """Forget cached geometry (call between sequences whose mesh keys are reused for other shapes)."""
        self._geometry.clear()
        self._rays.clear()

    def close(self) -> None:
        """Drop the caches (nothing else to release on the CPU)."""
        self.clear_cache()


_MAX_SHELL_FACES = 64  # meshes with more faces never take the coarse path (the convexity test is O(F * M))


class _Frame:
    """One scene state: the Open3D scene, geometry id -> instance id, world hull points, convex shells."""

    def __init__(self, scene):
        self.scene = scene
        self.instance_of_geometry: list[int] = []
        self.shells: list = []
        self.hull_points: list[np.ndarray] = []
        self._stacked: dict = {}

    def stacked_vertices(self, shell_id: int):
        """World convex-hull vertices of every geometry but ``shell_id`` in one array, and each geometry's
        start index (the projection of a mesh in front of the camera lies in the hull of these points')."""
        hit = self._stacked.get(shell_id)
        if hit is None:
            keep = [g for g in range(len(self.hull_points)) if g != shell_id]
            if keep:
                starts = np.cumsum([0] + [len(self.hull_points[g]) for g in keep[:-1]])
                hit = (np.concatenate([self.hull_points[g] for g in keep]), starts)
            else:
                hit = (np.zeros((0, 3)), np.zeros(0, dtype=np.int64))
            self._stacked[shell_id] = hit
        return hit
        self.lut = np.full(1, -1, dtype=np.int16)


class _ConvexShell:
    """A mesh all of whose vertices lie on one side of each of its face planes (a piece of a convex body's
    boundary, e.g. a room: floor + walls). ``encloses(p)``: p strictly on that side of every plane."""

    def __init__(self, normals: np.ndarray, offsets: np.ndarray):
        self.normals = normals  # (F, 3) oriented towards the inside
        self.offsets = offsets  # (F,)

    def encloses(self, point: np.ndarray, margin: float = 1e-6) -> bool:
        return bool(np.all(self.normals @ point - self.offsets > margin))

    def transformed(self, R: np.ndarray, t: np.ndarray) -> "_ConvexShell":
        """The shell moved by the rigid transform x -> R x + t."""
        normals = self.normals @ R.T
        return _ConvexShell(normals, self.offsets + normals @ t)


class _Geometry:
    """One mesh prepared for casting, object frame: float64 vertices, uint32 faces, the convex-shell test
    (meshes of <= _MAX_SHELL_FACES faces) and the vertices of its convex hull (for projected bounds)."""

    def __init__(self, mesh: RenderMesh):
        self.source_vertices, self.source_faces = mesh.vertices, mesh.faces
        self.vertices = np.ascontiguousarray(mesh.vertices, dtype=np.float64)
        self.faces = np.ascontiguousarray(mesh.faces, dtype=np.uint32)
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3:
            raise ValueError(f"RenderMesh {mesh.key!r}: vertices must be (M, 3), got {self.vertices.shape}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            raise ValueError(f"RenderMesh {mesh.key!r}: faces must be (F, 3), got {self.faces.shape}")
        empty = len(self.faces) == 0 or len(self.vertices) == 0
        self.shell = None
        if not empty and len(self.faces) <= _MAX_SHELL_FACES:
            self.shell = _convex_shell(self.vertices, self.faces)
        self.hull_points = self.vertices if empty else _hull_points(self.vertices[np.unique(self.faces)])


def _hull_points(points: np.ndarray) -> np.ndarray:
    """The vertices of the convex hull of (M, 3) points (all of them when the hull is degenerate/small)."""
    if len(points) <= 64:
        return points
    try:
        from scipy.spatial import ConvexHull

        return points[ConvexHull(points).vertices]
    except Exception:  # flat or degenerate point sets (qhull errors): every point is still correct
        return points


def _convex_shell(vertices: np.ndarray, faces: np.ndarray) -> "_ConvexShell | None":
    """The mesh as a convex shell, or None when it is not one (or has degenerate faces)."""
    tri = vertices[faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    lengths = np.linalg.norm(normals, axis=1)
    if np.any(lengths < 1e-12):
        return None
    normals = normals / lengths[:, None]
    offsets = np.einsum("fi,fi->f", normals, tri[:, 0])
    signed = vertices @ normals.T - offsets  # (M, F)
    scale = max(1e-9, float(np.ptp(vertices, axis=0).max()))
    tol = 1e-7 * scale
    inside_pos = np.all(signed >= -tol, axis=0)
    inside_neg = np.all(signed <= tol, axis=0)
    if not np.all(inside_pos | inside_neg):
        return None
    flip = np.where(inside_pos, 1.0, -1.0)
    return _ConvexShell(normals * flip[:, None], offsets * flip)


def _projected_rects(vertices: np.ndarray, starts: np.ndarray, camera_from_world: np.ndarray, camera: Camera):
    """Pixel rectangles (r0, r1, c0, c1) holding the projections of G meshes.

    Args:
        vertices: (M, 3) world vertices of the G meshes, one after the other.
        starts: (G,) index of each mesh's first vertex.

    Returns:
        (G, 4) int64; an empty rectangle (r0 > r1) for a mesh behind the camera or off the image, the whole
        image for a mesh that reaches behind the camera plane.
    """
    H, W = camera.height, camera.width
    p = vertices @ camera_from_world[:3, :3].T + camera_from_world[:3, 3]
    z = p[:, 2]
    K = camera.intrinsics
    front = z > 1e-6
    safe_z = np.where(front, z, 1.0)
    u = K[0, 0] * p[:, 0] / safe_z + K[0, 2]
    v = K[1, 1] * p[:, 1] / safe_z + K[1, 2]
    # +-1 px of float slack
    rects = np.stack(
        [
            np.floor(np.minimum.reduceat(v, starts)) - 1,
            np.ceil(np.maximum.reduceat(v, starts)) + 1,
            np.floor(np.minimum.reduceat(u, starts)) - 1,
            np.ceil(np.maximum.reduceat(u, starts)) + 1,
        ],
        axis=1,
    )
    num_front = np.add.reduceat(front.astype(np.int64), starts)
    sizes = np.diff(np.append(starts, len(vertices)))
    rects[num_front < sizes] = (0, H - 1, 0, W - 1)  # reaches behind the camera plane
    # rays have z > 0 in the camera frame: a mesh wholly behind the camera plane is never hit
    rects[np.maximum.reduceat(z, starts) <= 0] = (1, 0, 1, 0)
    rects[:, 0] = np.maximum(rects[:, 0], 0)
    rects[:, 1] = np.minimum(rects[:, 1], H - 1)
    rects[:, 2] = np.maximum(rects[:, 2], 0)
    rects[:, 3] = np.minimum(rects[:, 3], W - 1)
    return rects.astype(np.int64)


class _Grid:
    """A coarse grid of pixel rows/cols (every ``step``-th, plus the last) and the per-pixel cell weights."""

    def __init__(self, H: int, W: int, step: int):
        self.rows = np.unique(np.concatenate([np.arange(0, H, step), [H - 1]]))
        self.cols = np.unique(np.concatenate([np.arange(0, W, step), [W - 1]]))
        self.grid_r = np.repeat(self.rows, len(self.cols))
        self.grid_c = np.tile(self.cols, len(self.rows))
        # pixel -> cell index (the last row/col belong to the last cell) and its weight within the cell
        self.cell_r = np.minimum(np.searchsorted(self.rows, np.arange(H), side="right") - 1, len(self.rows) - 2)
        self.cell_c = np.minimum(np.searchsorted(self.cols, np.arange(W), side="right") - 1, len(self.cols) - 2)
        self.w_r = ((np.arange(H) - self.rows[self.cell_r]) / np.diff(self.rows)[self.cell_r]).astype(np.float32)
        self.w_c = ((np.arange(W) - self.cols[self.cell_c]) / np.diff(self.cols)[self.cell_c]).astype(np.float32)

    def interpolate(self, t, geometry, primitive, shell_id: int, covered: np.ndarray):
        """Which pixels are interpolated, and 1/z for them, from the coarse samples (module docstring).

        A cell qualifies when its 4 corner rays hit the same triangle of the shell (a convex image region
        then holds the whole cell; "same plane" would not do: coplanar triangles need not be adjacent) and
        no other mesh's rectangle touches it (``covered``).

        Returns:
            (mask (H, W) bool, inv_z (H, W) float32, shell_id).
        """
        Hc, Wc = len(self.rows), len(self.cols)
        t = t.reshape(Hc, Wc)
        on_shell = (geometry.reshape(Hc, Wc) == shell_id) & np.isfinite(t) & (t > 0)
        p = primitive.reshape(Hc, Wc)
        p00 = p[:-1, :-1]
        same = (p00 == p[1:, :-1]) & (p00 == p[:-1, 1:]) & (p00 == p[1:, 1:])
        cell_ok = on_shell[:-1, :-1] & on_shell[1:, :-1] & on_shell[:-1, 1:] & on_shell[1:, 1:] & same
        cell_ok &= ~covered
        # float32 is enough: 1/z to ~6e-8 relative, i.e. < 1 um of depth at 10 m
        inv = np.where(on_shell, np.float32(1.0) / np.where(on_shell, t, np.float32(1.0)), np.float32(0.0))
        # bilinear in (row, col) within each cell: exact for 1/z, which is affine in (u, v) on a plane
        wr = self.w_r[:, None]
        top = inv[self.cell_r]
        rows_interp = top + wr * (inv[self.cell_r + 1] - top)  # (H, Wc)
        wc = self.w_c[None, :]
        left = rows_interp[:, self.cell_c]
        inv_z = left + wc * (rows_interp[:, self.cell_c + 1] - left)  # (H, W)
        mask = cell_ok[self.cell_r][:, self.cell_c]
        return mask, inv_z, shell_id
