"""The ``raycast`` backend: depth + instance images by CPU ray casting with Open3D's RaycastingScene (Embree).

One ray per pixel centre: pixel (row, col) looks along ``K^-1 @ (col, row, 1)`` in OpenCV camera axes, the
same convention as :func:`synthseq.datasets.types.backproject_depth` (integer pixel coordinates are pixel
centres). The ray direction has z = 1 in the camera frame, so Embree's ``t_hit`` (measured in units of the
direction's length) *is* the z-depth. Open3D's own ``create_rays_pinhole`` also has z = 1 directions (and so
also returns z-depth, tested in tests/test_render.py) but puts pixel centres at ``col + 0.5``, which would
shift every point by half a pixel against the rest of the project; hence our own rays.

Speed: Open3D's BVH cannot move instances, so a scene state (one frame) is built once from world-space
triangles and shared by every view of that frame (:meth:`RaycastRenderer.render_views`); per-key vertex and
face arrays and per-camera ray directions are cached across frames.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import numpy as np

from synthseq.datasets.types import Camera
from synthseq.generator.render.base import RenderMesh, RenderResult, same_geometry

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


class RaycastRenderer:
    """Renders z-depth and instance images with Open3D's Embree ray caster (CPU).

    Args:
        nthreads: threads for ``cast_rays``; 0 lets Open3D use every core.
    """

    name = "raycast"

    def __init__(self, nthreads: int = 0):
        if int(nthreads) < 0:
            raise ValueError(f"RaycastRenderer: nthreads must be >= 0, got {nthreads}")
        self._o3d = _import_open3d()
        self.nthreads = int(nthreads)
        # key -> (the caller's vertices, faces, then (M, 3) float64 object-frame vertices, (F, 3) uint32 faces)
        self._geometry: OrderedDict[str, tuple] = OrderedDict()
        self._rays: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    # -- caches ---------------------------------------------------------------------------------------------

    def _cached_geometry(self, mesh: RenderMesh) -> tuple[np.ndarray, np.ndarray]:
        """(M, 3) float64 object-frame vertices and (F, 3) uint32 faces of ``mesh``, cached by key (LRU)."""
        entry = self._geometry.get(mesh.key)
        if entry is not None and same_geometry(mesh, entry[0], entry[1]):
            self._geometry.move_to_end(mesh.key)
            if mesh.vertices is not entry[0] or mesh.faces is not entry[1]:  # equal contents, new arrays
                entry = (mesh.vertices, mesh.faces, entry[2], entry[3])
                self._geometry[mesh.key] = entry
            return entry[2], entry[3]
        vertices = np.ascontiguousarray(mesh.vertices, dtype=np.float64)
        faces = np.ascontiguousarray(mesh.faces, dtype=np.uint32)
        if vertices.ndim != 2 or vertices.shape[1] != 3:
            raise ValueError(f"RenderMesh {mesh.key!r}: vertices must be (M, 3), got {vertices.shape}")
        if faces.ndim != 2 or faces.shape[1] != 3:
            raise ValueError(f"RenderMesh {mesh.key!r}: faces must be (F, 3), got {faces.shape}")
        self._geometry[mesh.key] = (mesh.vertices, mesh.faces, vertices, faces)
        self._geometry.move_to_end(mesh.key)
        if len(self._geometry) > _MAX_GEOMETRY_CACHE:
            self._geometry.popitem(last=False)
        return vertices, faces

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

    def _build_scene(self, meshes: list[RenderMesh]):
        """One RaycastingScene with every mesh in world coordinates; returns it and geometry id -> instance."""
        o3d = self._o3d
        scene = o3d.t.geometry.RaycastingScene()
        instance_of_geometry = []
        for mesh in meshes:
            vertices, faces = self._cached_geometry(mesh)
            if len(faces) == 0 or len(vertices) == 0:
                continue
            world_from_object = np.asarray(mesh.world_from_object, dtype=np.float64)
            world_vertices = vertices @ world_from_object[:3, :3].T + world_from_object[:3, 3]
            geometry_id = scene.add_triangles(
                o3d.core.Tensor(world_vertices.astype(np.float32)), o3d.core.Tensor(faces)
            )
            # add_triangles numbers geometries 0, 1, 2, ... in order; keep the check cheap but honest.
            if geometry_id != len(instance_of_geometry):
                raise RuntimeError(f"Open3D returned geometry id {geometry_id}, expected {len(instance_of_geometry)}")
            instance_of_geometry.append(int(mesh.instance_id))
        return scene, np.asarray(instance_of_geometry + [-1], dtype=np.int16)

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
        world_from_cameras = np.asarray(world_from_cameras, dtype=np.float64)
        if world_from_cameras.ndim == 2:
            world_from_cameras = world_from_cameras[None]
        if world_from_cameras.shape[1:] != (4, 4) or len(world_from_cameras) != len(cameras):
            raise ValueError(
                f"render_views: expected world_from_cameras of shape ({len(cameras)}, 4, 4), "
                f"got {world_from_cameras.shape}"
            )
        o3d = self._o3d
        scene, instance_lut = self._build_scene(meshes)
        # Views of the same size are cast in one call: less per-call overhead, better thread use.
        groups: dict[tuple[int, int], list[int]] = {}
        for v, cam in enumerate(cameras):
            groups.setdefault((cam.height, cam.width), []).append(v)
        results: list[RenderResult | None] = [None] * len(cameras)
        for (H, W), views in groups.items():
            rays = np.empty((len(views), H, W, 6), dtype=np.float32)
            for i, v in enumerate(views):
                x_cols, y_rows = self._cached_directions(cameras[v])
                R = world_from_cameras[v, :3, :3].astype(np.float32)
                rays[i, ..., :3] = world_from_cameras[v, :3, 3]
                # world direction = x * R[:, 0] + y * R[:, 1] + R[:, 2]: an outer sum per axis, much cheaper
                # than an (H*W, 3) @ (3, 3) matmul (which numpy does not hand to BLAS well).
                for k in range(3):
                    np.add(x_cols[None, :] * R[k, 0], y_rows[:, None] * R[k, 1] + R[k, 2], out=rays[i, ..., 3 + k])
            if len(instance_lut) == 1:  # nothing to hit
                t_hit = np.full((len(views), H, W), np.inf, dtype=np.float32)
                geometry_ids = np.full((len(views), H, W), len(instance_lut) - 1, dtype=np.int64)
            else:
                hits = scene.cast_rays(o3d.core.Tensor.from_numpy(rays), nthreads=self.nthreads)  # zero-copy
                t_hit = hits["t_hit"].numpy()
                geometry_ids = hits["geometry_ids"].numpy()
            miss = ~np.isfinite(t_hit)
            depth = np.where(miss, np.float32(0.0), t_hit).astype(np.float32, copy=False)
            # INVALID_ID (2^32 - 1) -> the last LUT entry, -1.
            index = np.minimum(geometry_ids, len(instance_lut) - 1)
            instance = instance_lut[index]
            for i, v in enumerate(views):
                results[v] = RenderResult(depth=depth[i], instance=instance[i])
        return results  # type: ignore[return-value]

    def render(self, meshes: list[RenderMesh], camera: Camera, world_from_camera: np.ndarray) -> RenderResult:
        """Render ``meshes`` from one camera with OpenCV axes at ``world_from_camera`` (4, 4).

        Returns:
            depth (H, W) float32 z-depth metres (0 = no hit), instance (H, W) int16 (-1 = none).
        """
        return self.render_views(meshes, [camera], np.asarray(world_from_camera)[None])[0]

    def clear_cache(self) -> None:
        """Forget cached geometry (call between sequences whose mesh keys are reused for other shapes)."""
        self._geometry.clear()
        self._rays.clear()

    def close(self) -> None:
        """Drop the caches (nothing else to release on the CPU)."""
        self.clear_cache()
