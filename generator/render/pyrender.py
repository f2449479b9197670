"""The ``pyrender`` backend: depth + instance images by OpenGL rasterisation (pyrender 0.1.45, EGL offscreen).

Works headless on Mesa llvmpipe (CPU) and on NVIDIA EGL. Facts this module works around, all at this
boundary:

- **Axes.** pyrender cameras use OpenGL axes (y up, z backward); the caller's OpenCV ``world_from_camera``
  becomes the camera node pose ``world_from_camera @ OPENCV_FROM_OPENGL`` here and nowhere else.
- **Pixel centres.** OpenGL samples pixel column c at window x = c + 0.5, while the project (and
  ``backproject_depth``) puts pixel centres at integer (u, v); so the GL principal point is ``cx + 0.5``,
  ``cy + 0.5`` (pyrender flips rows to top-down, which keeps the same +0.5 for y).
- **MSAA.** pyrender's offscreen framebuffer is 4x multisampled and its colour/depth passes enable
  GL_MULTISAMPLE, so the depth copied out of it is a resolve of 4 sub-samples and moves at object edges.
  The segmentation pass (``RenderFlags.SEG``) disables GL_MULTISAMPLE: every sample of a pixel is then the
  pixel-centre value, the resolved depth is exact, and the same pass gives the instance colours. We only
  ever render that pass.
- **np.infty.** pyrender 0.1.45 uses ``np.infty`` (gone in numpy 2) in ``Mesh.bounds``/``Scene.bounds``;
  these are only reached when a camera has no zfar or lights cast shadows, so explicit znear/zfar and no
  lights keep us off that path.
- **Culling.** The SEG pass always culls back faces (it ignores ``doubleSided`` and ``SKIP_CULL_FACES``),
  while the ray caster hits both sides; every triangle is uploaded twice, once per winding, so that open
  meshes (teapot.stl) and rooms of either orientation render the same in both backends.

Depth precision: a 24-bit depth buffer with znear n, zfar f resolves z to about z^2 (f - n) / (f n 2^24);
pyrender's float32 linearisation and llvmpipe's float32 interpolation add a few such steps. Measured on
fronto-parallel planes with the defaults (n = 0.1 m, f = 20 m): <= 4 um to 2 m, 31 um at 4 m, 57 um at
6 m, 92 um at 8 m (n = 0.05 m doubles these). Nearer than ``znear_m`` is clipped: the Kinect model drops
everything under 0.4 m anyway.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict

import numpy as np

from synthseq.geometry import OPENCV_FROM_OPENGL
from synthseq.types import Camera
from synthseq.generator.render.base import (MultiViewRenderer, RenderMesh, RenderResult, check_view_poses,
                                             same_geometry)

logger = logging.getLogger(__name__)

_MAX_MESH_CACHE = 256


def _import_pyrender():
    # No display on build machines: EGL unless the caller chose a platform (osmesa, or pyglet with a display).
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    try:
        import pyrender
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the 'pyrender' renderer needs pyrender and PyOpenGL: pip install pyrender==0.1.45 PyOpenGL==3.1.0 "
            "(or pip install 'synthseq[render]'), plus the EGL/Mesa system libraries (libegl1, libgl1-mesa-dri)"
        ) from e
    return pyrender


class PyrenderRenderer(MultiViewRenderer):
    """Renders z-depth and instance images with pyrender's OpenGL offscreen renderer.

    Args:
        znear_m: near clip plane, metres; surfaces closer than this are not rendered.
        zfar_m: far clip plane, metres; surfaces farther than this are not rendered.
    """

    name = "pyrender"

    def __init__(self, znear_m: float = 0.1, zfar_m: float = 20.0):
        if not (0 < znear_m < zfar_m):
            raise ValueError(f"PyrenderRenderer: expected 0 < znear_m < zfar_m, got {znear_m}, {zfar_m}")
        self._pyrender = _import_pyrender()
        self.znear_m = float(znear_m)
        self.zfar_m = float(zfar_m)
        pyrender = self._pyrender
        self._scene = pyrender.Scene(bg_color=np.zeros(4), ambient_light=np.zeros(3))
        self._camera_node = None
        self._camera_key = None
        self._offscreen = None
        # key -> (pyrender Mesh, its nodes, the caller's vertices, faces); least recently used first
        self._nodes: OrderedDict[str, tuple] = OrderedDict()
        self._material = pyrender.MetallicRoughnessMaterial()

    # -- scene state ----------------------------------------------------------------------------------------

    def _nodes_for(self, mesh: RenderMesh) -> list:
        """The scene nodes showing ``mesh``'s geometry (GL buffers uploaded once per key; LRU-bounded).

        Several nodes can share one key's buffers: a scene may place the same geometry more than once.
        """
        pyrender = self._pyrender
        entry = self._nodes.get(mesh.key)
        if entry is not None and not same_geometry(mesh, entry[2], entry[3]):
            self._drop(mesh.key)  # key reused for other geometry: never draw stale shapes
            entry = None
        if entry is not None:
            self._nodes[mesh.key] = (entry[0], entry[1], mesh.vertices, mesh.faces)
            self._nodes.move_to_end(mesh.key)
            return entry[1]
        vertices = np.ascontiguousarray(mesh.vertices, dtype=np.float32)
        faces = np.ascontiguousarray(mesh.faces, dtype=np.uint32)
        if vertices.ndim != 2 or vertices.shape[1] != 3:
            raise ValueError(f"RenderMesh {mesh.key!r}: vertices must be (M, 3), got {vertices.shape}")
        if faces.ndim != 2 or faces.shape[1] != 3:
            raise ValueError(f"RenderMesh {mesh.key!r}: faces must be (F, 3), got {faces.shape}")
        # pyrender's SEG pass always culls back faces (renderer.py, _bind_and_draw_primitive ignores
        # doubleSided and SKIP_CULL_FACES there), while rays hit both sides: draw every triangle twice, once
        # per winding, so that open meshes and either room orientation look the same in both backends.
        faces = np.concatenate([faces, faces[:, ::-1]], axis=0)
        primitive = pyrender.Primitive(positions=vertices, indices=faces, material=self._material, mode=4)
        gl_mesh = pyrender.Mesh(primitives=[primitive])
        nodes = [self._scene.add(gl_mesh, name=mesh.key)]
        self._nodes[mesh.key] = (gl_mesh, nodes, mesh.vertices, mesh.faces)
        while len(self._nodes) > _MAX_MESH_CACHE:
            self._drop(next(iter(self._nodes)))
        return nodes

    def _drop(self, key: str) -> None:
        """Forget a key; its GL buffers are freed at the next render (pyrender's ``_update_context``)."""
        _, nodes, _, _ = self._nodes.pop(key)
        for node in nodes:
            self._scene.remove_node(node)

    def _set_scene(self, meshes: list[RenderMesh]) -> tuple[dict, np.ndarray]:
        """Pose the meshes of this call; returns the seg colour of each node to draw and the code -> id LUT.

        Nodes left out of the returned map are not drawn by the SEG pass (cached meshes not in this scene).
        """
        seg_node_map = {}
        instance_of_code = [-1]  # code 0 = background
        used: dict[str, int] = {}
        for mesh in meshes:
            if len(mesh.faces) == 0 or len(mesh.vertices) == 0:
                continue
            nodes = self._nodes_for(mesh)
            i = used.get(mesh.key, 0)
            used[mesh.key] = i + 1
            if i == len(nodes):  # the same geometry once more in this scene: another node, same buffers
                nodes.append(self._scene.add(self._nodes[mesh.key][0], name=f"{mesh.key}#{i}"))
            node = nodes[i]
            self._scene.set_pose(node, np.asarray(mesh.world_from_object, dtype=np.float64))
            code = len(instance_of_code)
            # 24-bit colour code, exact through an RGBA8 target (pyrender divides by 255, GL rounds back).
            seg_node_map[node] = np.array([code & 255, (code >> 8) & 255, (code >> 16) & 255], dtype=np.float64)
            instance_of_code.append(int(mesh.instance_id))
        return seg_node_map, np.asarray(instance_of_code, dtype=np.int16)

    def _set_camera(self, camera: Camera, world_from_camera: np.ndarray) -> None:
        pyrender = self._pyrender
        key = (camera.width, camera.height, camera.intrinsics.tobytes())
        if key != self._camera_key:
            gl_camera = pyrender.IntrinsicsCamera(
                fx=camera.fx,
                fy=camera.fy,
                cx=camera.cx + 0.5,  # GL pixel centres sit at +0.5 (module docstring)
                cy=camera.cy + 0.5,
                znear=self.znear_m,
                zfar=self.zfar_m,
            )
            if self._camera_node is not None:
                self._scene.remove_node(self._camera_node)
            self._camera_node = self._scene.add(gl_camera, name="camera")
            self._scene.main_camera_node = self._camera_node
            self._camera_key = key
        world_from_camera_gl = np.asarray(world_from_camera, dtype=np.float64) @ OPENCV_FROM_OPENGL
        self._scene.set_pose(self._camera_node, world_from_camera_gl)
        if self._offscreen is None:
            self._offscreen = pyrender.OffscreenRenderer(camera.width, camera.height)
        else:
            self._offscreen.viewport_width = camera.width
            self._offscreen.viewport_height = camera.height

    # -- rendering ------------------------------------------------------------------------------------------

    def render_views(
        self, meshes: list[RenderMesh], cameras: list[Camera], world_from_cameras
    ) -> list[RenderResult]:
        """Render V views of one scene state (mesh poses are set once, then only the camera moves).

        Args:
            meshes: the scene at one instant.
            cameras: V pinhole cameras (sizes may differ).
            world_from_cameras: (V, 4, 4) float, OpenCV camera axes.

        Returns:
            V results: depth (H, W) float32 z-depth metres (0 = no hit), instance (H, W) int16 (-1 = none).
        """
        world_from_cameras = check_view_poses(world_from_cameras, len(cameras))
        flags = self._pyrender.RenderFlags.SEG
        seg_node_map, instance_lut = self._set_scene(meshes)
        results = []
        for camera, world_from_camera in zip(cameras, world_from_cameras):
            self._set_camera(camera, world_from_camera)
            color, depth = self._offscreen.render(self._scene, flags=flags, seg_node_map=seg_node_map)
            code = color[..., 0].astype(np.int32) | (color[..., 1].astype(np.int32) << 8)
            code |= color[..., 2].astype(np.int32) << 16
            hit = depth > 0
            code = np.where(hit & (code < len(instance_lut)), code, 0)
            results.append(
                RenderResult(depth=np.where(hit, depth, 0).astype(np.float32), instance=instance_lut[code])
            )
        return results

    def close(self) -> None:
        """Release the GL context and every mesh buffer."""
        if self._offscreen is not None:
            try:
                self._offscreen.delete()
            finally:
                self._offscreen = None
        for key in list(self._nodes):
            self._drop(key)

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: GL may already be gone
            pass
