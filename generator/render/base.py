"""The renderer interface: a scene at one instant (meshes with world poses) + a camera -> depth and instances.

Every backend (``moderngl``, ``raycast``, ``pyrender``) implements :class:`Renderer`; the scene description is plain data
(kubric's split: the scene is data, the renderer a view of it). Outputs are in the stored conventions:
z-depth in metres along the OpenCV optical axis (0 = no hit) and an instance image holding the
``instance_id`` of the mesh seen at each pixel (-1 = nothing). Backends convert from their own axes at
this boundary and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from synthseq.types import Camera


@dataclass(frozen=True)
class RenderMesh:
    """One triangle mesh placed in the world.

    Args:
        vertices: (M, 3) float, object frame, metres.
        faces: (F, 3) int.
        world_from_object: (4, 4) float64.
        instance_id: written into the instance image; object index k >= 0, or -1 for the room/background.
        key: a stable name for caching GPU/BVH buffers across frames (same key => same geometry).
    """

    vertices: np.ndarray
    faces: np.ndarray
    world_from_object: np.ndarray
    instance_id: int
    key: str


@dataclass(frozen=True)
class RenderResult:
    """depth: (H, W) float32 z-depth in metres, 0 where no surface; instance: (H, W) int16, -1 where none."""

    depth: np.ndarray
    instance: np.ndarray


def same_geometry(mesh: RenderMesh, vertices: np.ndarray, faces: np.ndarray) -> bool:
    """Whether ``mesh`` holds the geometry a backend cached under ``mesh.key`` (built from ``vertices``, ``faces``).

    Identity is checked first (a sequence passes the same arrays every frame: free); otherwise the contents
    are compared, so a key reused for other geometry (two sequences with the same object names) never
    renders a stale shape.
    """
    if mesh.vertices is vertices and mesh.faces is faces:
        return True
    return (
        np.shape(mesh.vertices) == np.shape(vertices)
        and np.shape(mesh.faces) == np.shape(faces)
        and np.array_equal(mesh.vertices, vertices)
        and np.array_equal(mesh.faces, faces)
    )


class Renderer(Protocol):
    """Renders depth + instance images of a list of meshes from one camera."""

    name: str

    def render(self, meshes: list[RenderMesh], camera: Camera, world_from_camera: np.ndarray) -> RenderResult:
        """Render ``meshes`` seen from a camera with OpenCV axes at ``world_from_camera`` (4, 4)."""
        ...

    def render_views(self, meshes: list[RenderMesh], cameras: list[Camera], world_from_cameras) -> list[RenderResult]:
        """Render V views of one scene state, (V, 4, 4) ``world_from_cameras`` (OpenCV axes): the scene is
        built/posed once and shared by the views (both backends have it; callers may fall back to
        ``render`` per view for a third-party renderer without it)."""
        ...

    def render_frames(self, meshes: list[RenderMesh], world_from_objects, camera: Camera, world_from_cameras):
        """Render T frames x V views of one set of meshes: (T, M, 4, 4) mesh poses, (T, V, 4, 4) camera poses
        -> depth (T, V, H, W) float32, instance (T, V, H, W) int16. Optional: :func:`render_frames` falls
        back to ``render_views`` per frame for a renderer without it."""
        ...

    def close(self) -> None:
        """Release GL contexts / buffers."""
        ...


def render_frames(renderer, meshes: list[RenderMesh], world_from_objects, camera: Camera, world_from_cameras):
    """T frames x V views of one set of meshes with any renderer: its own ``render_frames`` when it has one
    (the batched backends, and raycast's static-scene reuse), else ``render_views`` (or ``render``) per frame.

    Args:
        meshes: M meshes; their geometry, instance ids and keys are used, their ``world_from_object`` is not.
        world_from_objects: (T, M, 4, 4) float, each mesh's pose in each frame.
        camera: the pinhole camera of every view.
        world_from_cameras: (T, V, 4, 4) float, OpenCV camera axes.

    Returns:
        depth (T, V, H, W) float32 z-depth metres (0 = no hit), instance (T, V, H, W) int16 (-1 = none).
    """
    own = getattr(renderer, "render_frames", None)
    if own is not None:
        return own(meshes, world_from_objects, camera, world_from_cameras)
    return render_frames_by_views(renderer, meshes, world_from_objects, camera, world_from_cameras)


def render_frames_by_views(renderer, meshes, world_from_objects, camera: Camera, world_from_cameras):
    """:func:`render_frames` one frame at a time through ``render_views`` (or ``render``)."""
    world_from_objects, world_from_cameras = check_frame_poses(meshes, world_from_objects, world_from_cameras)
    T, V = world_from_cameras.shape[:2]
    depth = np.zeros((T, V, camera.height, camera.width), np.float32)
    instance = np.full((T, V, camera.height, camera.width), -1, np.int16)
    render_views = getattr(renderer, "render_views", None)
    for t in range(T):
        posed = [RenderMesh(m.vertices, m.faces, world_from_objects[t, k], m.instance_id, m.key)
                 for k, m in enumerate(meshes)]
        if render_views is not None:
            results = render_views(posed, [camera] * V, world_from_cameras[t])
        else:
            results = [renderer.render(posed, camera, world_from_cameras[t, v]) for v in range(V)]
        for v, res in enumerate(results):
            depth[t, v], instance[t, v] = res.depth, res.instance
    return depth, instance


class MultiViewRenderer:
    """Base of backends that implement ``render_views``: ``render`` is its one-view case, and
    ``render_frames`` (T frames x V views) calls ``render_views`` per frame unless a backend does better."""

    def render_frames(self, meshes: list[RenderMesh], world_from_objects, camera: Camera, world_from_cameras):
        """T frames x V views: see :func:`render_frames`."""
        return render_frames_by_views(self, meshes, world_from_objects, camera, world_from_cameras)

    def render(self, meshes: list[RenderMesh], camera: Camera, world_from_camera: np.ndarray) -> RenderResult:
        """Render ``meshes`` from one camera with OpenCV axes at ``world_from_camera`` (4, 4).

        Returns:
            depth (H, W) float32 z-depth metres (0 = no hit), instance (H, W) int16 (-1 = none).
        """
        return self.render_views(meshes, [camera], np.asarray(world_from_camera)[None])[0]


def check_frame_poses(meshes, world_from_objects, world_from_cameras) -> tuple[np.ndarray, np.ndarray]:
    """``world_from_objects`` (T, M, 4, 4) and ``world_from_cameras`` (T, V, 4, 4) as float64 arrays.

    Raises:
        ValueError: the shapes do not agree with each other and with the M meshes.
    """
    world_from_objects = np.asarray(world_from_objects, dtype=np.float64)
    world_from_cameras = np.asarray(world_from_cameras, dtype=np.float64)
    if world_from_cameras.ndim != 4 or world_from_cameras.shape[2:] != (4, 4):
        raise ValueError(f"render_frames: expected world_from_cameras of shape (T, V, 4, 4), "
                         f"got {world_from_cameras.shape}")
    T = world_from_cameras.shape[0]
    if world_from_objects.shape != (T, len(meshes), 4, 4):
        raise ValueError(f"render_frames: expected world_from_objects of shape ({T}, {len(meshes)}, 4, 4), "
                         f"got {world_from_objects.shape}")
    return world_from_objects, world_from_cameras


def check_view_poses(world_from_cameras, num_cameras: int) -> np.ndarray:
    """``world_from_cameras`` as a (V, 4, 4) float64 array (a single (4, 4) pose becomes V = 1).

    Raises:
        ValueError: the shape is not (num_cameras, 4, 4).
    """
    poses = np.asarray(world_from_cameras, dtype=np.float64)
    if poses.ndim == 2:
        poses = poses[None]
    if poses.shape[1:] != (4, 4) or len(poses) != num_cameras:
        raise ValueError(f"render_views: expected world_from_cameras of shape ({num_cameras}, 4, 4), "
                         f"got {poses.shape}")
    return poses
