"""The ``raycast`` backend: depth + instance images by CPU ray casting with Open3D's RaycastingScene (Embree).

One ray per pixel centre: pixel (row, col) looks along ``K^-1 @ (col, row, 1)`` in OpenCV camera axes, the
same convention as :func:`synthseq.geometry.backproject_depth` (integer pixel coordinates are pixel
centres). The ray direction has z = 1 in the camera frame, so Embree's ``t_hit`` (measured in units of the
direction's length) *is* the z-depth. Open3D's own ``create_rays_pinhole`` also has z = 1 directions (and so
also returns z-depth, tested in tests/test_render.py) but puts pixel centres at ``col + 0.5``, which would
shift every point by half a pixel against the rest of the project; hence our own rays.

Speed (issue 11): Open3D's BVH cannot move instances, and ``cast_rays`` costs ~0.1 us of CPU per ray
whatever the scene, so the cheapest ray is the one not cast. :meth:`RaycastRenderer.render_frames` (a whole
sequence per call) splits the meshes into the *static* ones (room, furniture, objects whose pose never
changes) and the *movers*. The static scene's BVH is built once per call, and its image from a camera pose
is cast once and reused for every frame the pose repeats (a static rig: once per sequence). Per frame only
the movers get a BVH, and only the pixels inside their projected bounding rectangles get a ray against
it; the nearer of the two hits wins. The result equals casting the whole scene per pixel (tested).
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import numpy as np

from synthseq.geometry import invert_pose
from synthseq.types import Camera
from synthseq.generator.render.base import (MultiViewRenderer, RenderMesh, RenderResult, check_frame_poses,
                                             check_view_poses, same_geometry)

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
    """

    name = "raycast"

    def __init__(self, nthreads: int = 0):
        if int(nthreads) < 0:
            raise ValueError(f"RaycastRenderer: nthreads must be >= 0, got {nthreads}")
        self.last_rays_cast = 0  # rays cast by the last render call (for tests and benchmarks)
        self._o3d = _import_open3d()
        self.nthreads = int(nthreads)
        self._geometry: OrderedDict[str, _Geometry] = OrderedDict()
        self._rays: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    # -- caches ---------------------------------------------------------------------------------------------

    def _cached_geometry(self, mesh: RenderMesh) -> "_Geometry":
        """``mesh``'s geometry prepared for casting (float64 vertices, uint32 faces, hull points; object
        frame), cached by key (LRU)."""
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

    # -- scenes and rays ------------------------------------------------------------------------------------

    def _build_scene(self, meshes: list[RenderMesh], world_from_objects) -> "_Scene":
        """One RaycastingScene of ``meshes`` placed at ``world_from_objects`` (M, 4, 4), in world coordinates."""
        o3d = self._o3d
        scene = _Scene(o3d.t.geometry.RaycastingScene())
        for mesh, world_from_object in zip(meshes, world_from_objects):
            geometry = self._cached_geometry(mesh)
            if len(geometry.faces) == 0 or len(geometry.vertices) == 0:
                continue
            R, t = world_from_object[:3, :3], world_from_object[:3, 3]
            world_vertices = geometry.vertices @ R.T + t
            geometry_id = scene.scene.add_triangles(
                o3d.core.Tensor(world_vertices.astype(np.float32)), o3d.core.Tensor(geometry.faces)
            )
            # add_triangles numbers geometries 0, 1, 2, ... in order; keep the check cheap but honest.
            if geometry_id != len(scene.instance_of_geometry):
                raise RuntimeError(f"Open3D returned geometry id {geometry_id}, expected {len(scene.instance_of_geometry)}")
            scene.instance_of_geometry.append(int(mesh.instance_id))
            scene.hull_points.append(geometry.hull_points @ R.T + t)
        scene.lut = np.asarray(scene.instance_of_geometry + [-1], dtype=np.int16)
        return scene

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

    def _cast(self, scene: "_Scene", rays: np.ndarray):
        """Cast (N, 6) rays: z-depth (N,) float32 (0 = miss) and instance (N,) int16 (-1 = miss)."""
        miss_id = len(scene.lut) - 1
        if miss_id == 0 or len(rays) == 0:  # nothing to hit
            return np.zeros(len(rays), np.float32), np.full(len(rays), -1, np.int16)
        self.last_rays_cast += len(rays)
        hits = scene.scene.cast_rays(self._o3d.core.Tensor.from_numpy(rays), nthreads=self.nthreads)  # zero-copy
        t = hits["t_hit"].numpy()
        geometry = np.minimum(hits["geometry_ids"].numpy(), miss_id)  # INVALID_ID -> miss
        return np.where(np.isfinite(t), t, np.float32(0.0)), scene.lut[geometry]

    # -- rendering ------------------------------------------------------------------------------------------

    def render_frames(self, meshes: list[RenderMesh], world_from_objects, camera: Camera, world_from_cameras):
        """Render T frames x V views of one set of meshes; static meshes are built and cast once (module
        docstring).

        Args:
            meshes: M meshes; their geometry and instance ids are used, their ``world_from_object`` is not.
            world_from_objects: (T, M, 4, 4) float, each mesh's pose in each frame.
            camera: the pinhole camera of every view.
            world_from_cameras: (T, V, 4, 4) float, OpenCV camera axes.

        Returns:
            depth (T, V, H, W) float32 z-depth metres (0 = no hit), instance (T, V, H, W) int16 (-1 = none).
        """
        world_from_objects, world_from_cameras = check_frame_poses(meshes, world_from_objects, world_from_cameras)
        T, V = world_from_cameras.shape[:2]
        H, W = camera.height, camera.width
        self.last_rays_cast = 0
        fixed = np.all(world_from_objects == world_from_objects[:1], axis=(0, 2, 3)) if T else np.ones(0, bool)
        static = [m for m in range(len(meshes)) if fixed[m]]
        movers = [m for m in range(len(meshes)) if not fixed[m]]
        static_scene = self._build_scene([meshes[m] for m in static], world_from_objects[0, static]) \
            if T else None
        static_images: OrderedDict[bytes, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        all_rows, all_cols = np.divmod(np.arange(H * W), W)
        depth = np.zeros((T, V, H * W), np.float32)
        instance = np.full((T, V, H * W), -1, np.int16)
        for t in range(T):
            # 1. the static scene from every new camera pose, all such views in one cast
            new = [v for v in range(V) if world_from_cameras[t, v].tobytes() not in static_images]
            new = list({world_from_cameras[t, v].tobytes(): v for v in new}.values())
            if new:
                rays = np.concatenate([self._rays_for(camera, world_from_cameras[t, v], all_rows, all_cols)
                                       for v in new])
                d, i = self._cast(static_scene, rays)
                for j, v in enumerate(new):
                    static_images[world_from_cameras[t, v].tobytes()] = (d[j * H * W:(j + 1) * H * W],
                                                                        i[j * H * W:(j + 1) * H * W])
            for v in range(V):
                key = world_from_cameras[t, v].tobytes()
                static_images.move_to_end(key)
                depth[t, v], instance[t, v] = static_images[key]
            while len(static_images) > 2 * V:  # a moving camera never repeats: keep the recent poses only
                static_images.popitem(last=False)
            if not movers:
                continue
            # 2. the movers of this frame, rays only where their projected hulls can be
            dynamic = self._build_scene([meshes[m] for m in movers], world_from_objects[t, movers])
            if len(dynamic.lut) == 1:
                continue
            pixels = [self._mover_pixels(dynamic, camera, world_from_cameras[t, v]) for v in range(V)]
            rays = [self._rays_for(camera, world_from_cameras[t, v], *np.divmod(p, W)) for v, p in enumerate(pixels)]
            d, i = self._cast(dynamic, np.concatenate(rays))
            offset = 0
            for v, p in enumerate(pixels):
                dv, iv = d[offset:offset + len(p)], i[offset:offset + len(p)]
                offset += len(p)
                current = depth[t, v, p]
                nearer = (dv > 0) & ((current == 0) | (dv < current))
                depth[t, v, p[nearer]] = dv[nearer]
                instance[t, v, p[nearer]] = iv[nearer]
        return depth.reshape(T, V, H, W), instance.reshape(T, V, H, W)

    def _mover_pixels(self, scene: "_Scene", camera: Camera, world_from_camera: np.ndarray) -> np.ndarray:
        """Flat indices of the pixels inside the projected bounding rectangle of any mesh of ``scene``."""
        H, W = camera.height, camera.width
        points = scene.hull_points
        starts = np.cumsum([0] + [len(p) for p in points[:-1]])
        rects = _projected_rects(np.concatenate(points), starts, invert_pose(world_from_camera), camera)
        mask = np.zeros((H, W), dtype=bool)
        for r0, r1, c0, c1 in rects.tolist():
            if r1 >= r0 and c1 >= c0:
                mask[r0:r1 + 1, c0:c1 + 1] = True
        return np.flatnonzero(mask)

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
        self.last_rays_cast = 0
        scene = self._build_scene(meshes, [np.asarray(m.world_from_object, dtype=np.float64) for m in meshes])
        rays, sizes = [], []
        for camera, pose in zip(cameras, world_from_cameras):
            rows, cols = np.divmod(np.arange(camera.height * camera.width), camera.width)
            rays.append(self._rays_for(camera, pose, rows, cols))
            sizes.append(len(rows))
        d, i = self._cast(scene, np.concatenate(rays) if rays else np.zeros((0, 6), np.float32))
        results, offset = [], 0
        for camera, n in zip(cameras, sizes):
            shape = (camera.height, camera.width)
            results.append(RenderResult(depth=d[offset:offset + n].reshape(shape),
                                        instance=i[offset:offset + n].reshape(shape)))
            offset += n
        return results

    def clear_cache(self) -> None:
        """Forget cached geometry (call between sequences whose mesh keys are reused for other shapes)."""
        self._geometry.clear()
        self._rays.clear()

    def close(self) -> None:
        """Drop the caches (nothing else to release on the CPU)."""
        self.clear_cache()


class _Scene:
    """One Open3D scene: geometry id -> instance id (``lut``, last entry = miss) and world hull points."""

    def __init__(self, scene):
        self.scene = scene
        self.instance_of_geometry: list[int] = []
        self.hull_points: list[np.ndarray] = []
        self.lut = np.full(1, -1, dtype=np.int16)


class _Geometry:
    """One mesh prepared for casting, object frame: float64 vertices, uint32 faces and the vertices of its
    convex hull (for projected bounds)."""

    def __init__(self, mesh: RenderMesh):
        self.source_vertices, self.source_faces = mesh.vertices, mesh.faces
        self.vertices = np.ascontiguousarray(mesh.vertices, dtype=np.float64)
        self.faces = np.ascontiguousarray(mesh.faces, dtype=np.uint32)
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3:
            raise ValueError(f"RenderMesh {mesh.key!r}: vertices must be (M, 3), got {self.vertices.shape}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            raise ValueError(f"RenderMesh {mesh.key!r}: faces must be (F, 3), got {self.faces.shape}")
        empty = len(self.faces) == 0 or len(self.vertices) == 0
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
