"""The ``moderngl`` backend: many views and frames per call by OpenGL rasterisation (moderngl on EGL).

Every (frame, view) of a call is one *tile* of a large framebuffer (the atlas). One instanced draw renders
all tiles: ``gl_InstanceID`` picks the tile, whose per-mesh ``camera_from_object`` transforms (computed on
the host in float64, uploaded as float32) come from a small float texture, so the triangles of a whole
batch go through the GL pipeline in one call, and one ``glReadPixels`` per target of the atlas (R32F
z-depth, R16I instance code) returns the batch. The same code runs on Mesa llvmpipe on a CPU and on NVIDIA EGL on a GPU.

Facts this module relies on, all at this boundary:

- **Axes and pixel centres.** The shader projects OpenCV camera points itself: window x = fx x / z + cx + 0.5
  (GL samples pixel column c at c + 0.5, the project puts pixel centres at integer u), and window y =
  fy y / z + cy + 0.5 with *no* flip, so row r of a tile in GL window coordinates is image row r, and the
  rows ``glReadPixels`` returns (bottom-up) are the image's rows top-down. That y mirror flips the winding
  in window coordinates: a face wound counter-clockwise seen from outside (outward normal) is clockwise on
  screen, so GL's "front" faces are our back faces.
- **Culling.** Both sides of every triangle are drawn (as the ray caster sees them), except for meshes that
  bound a solid with outward winding (:func:`closed_outward`: every edge shared by exactly two faces in
  opposite directions, positive volume; trimesh's primitives, watertight CAD files): seen from outside, the
  first surface of such a mesh along any ray faces the camera, so its back faces can never be the nearest
  surface and culling them changes no pixel, while llvmpipe skips rasterising them (about half the
  triangles of a closed mesh). Those meshes are drawn first, with back-face culling, then the others
  (open scans, simplified meshes, the room) without. The argument needs the camera outside the solid and
  the near plane not cutting into it: a call in which any camera comes within the near plane's reach of a
  closed mesh's bounding box (a closed box used as a room, seen from inside) draws everything unculled.
- **Tiles.** Each tile's [0, W] x [0, H] window rectangle is enforced by four ``gl_ClipDistance`` planes
  (linear in clip space), so a triangle never bleeds into a neighbouring tile; GL clips it exactly.
- **Depth.** The stored depth is the camera z of the fragment, interpolated perspective-correctly from the
  vertices (exact for a planar triangle up to float32 rounding: < 1 um at 5 m), not the depth buffer's
  value. The 24-bit depth buffer only orders surfaces: with the defaults (``znear_m`` 0.05, ``zfar_m`` 20)
  two surfaces closer than ~z^2 / 840 m (30 um at 5 m) may be ordered either way; the depth written is then
  one of the two. Surfaces nearer than ``znear_m`` or farther than ``zfar_m`` are clipped.
- **llvmpipe threads.** Mesa's llvmpipe starts ``LP_NUM_THREADS`` rasteriser threads (default: one per
  core) when its first context is created; two build workers on two cores then oversubscribe them.
  ``make_renderer(..., threads=n)`` sets it before this process's first context (Mesa reads it once).
"""

from __future__ import annotations

import logging
import math

import numpy as np

from synthseq.types import Camera
from synthseq.generator.render.base import (MultiViewRenderer, RenderMesh, RenderResult, check_frame_poses,
                                             check_view_poses, same_geometry)

logger = logging.getLogger(__name__)

_VERTEX_SHADER = """
#version 330
in vec3 in_position;
in int in_mesh;
in int in_code;                        // instance_id + 1 of the vertex's mesh (>= 0; the clear value 0 decodes to -1)
uniform sampler2D camera_from_object;  // texel (3 mesh + r, tile): row r of that tile's 3x4 transform
uniform vec4 intrinsics;               // fx, fy, cx + 0.5, cy + 0.5 (GL pixel centres sit at +0.5)
uniform vec2 tile_size;                // W, H
uniform vec2 atlas_size;
uniform int tiles_per_row;
uniform vec2 depth_ab;                 // clip z = a z + b: znear -> -1, zfar -> +1
out float v_z;
flat out int v_code;
out float gl_ClipDistance[4];
void main() {
    int tile = gl_InstanceID;
    vec4 p = vec4(in_position, 1.0);
    vec4 r0 = texelFetch(camera_from_object, ivec2(3 * in_mesh + 0, tile), 0);
    vec4 r1 = texelFetch(camera_from_object, ivec2(3 * in_mesh + 1, tile), 0);
    vec4 r2 = texelFetch(camera_from_object, ivec2(3 * in_mesh + 2, tile), 0);
    vec3 c = vec3(dot(r0, p), dot(r1, p), dot(r2, p));   // OpenCV camera frame, metres
    float uz = intrinsics.x * c.x + intrinsics.z * c.z;   // (window x within the tile) * z
    float vz = intrinsics.y * c.y + intrinsics.w * c.z;   // (window y within the tile, image rows) * z
    vec2 origin = vec2(float(tile % tiles_per_row), float(tile / tiles_per_row)) * tile_size;
    gl_Position = vec4(2.0 * (uz + origin.x * c.z) / atlas_size.x - c.z,
                       2.0 * (vz + origin.y * c.z) / atlas_size.y - c.z,
                       depth_ab.x * c.z + depth_ab.y,
                       c.z);
    gl_ClipDistance[0] = uz;
    gl_ClipDistance[1] = tile_size.x * c.z - uz;
    gl_ClipDistance[2] = vz;
    gl_ClipDistance[3] = tile_size.y * c.z - vz;
    v_z = c.z;
    v_code = in_code;
}
"""

_FRAGMENT_SHADER = """
#version 330
in float v_z;
flat in int v_code;
layout(location = 0) out float out_z;
layout(location = 1) out int out_code;
void main() {
    out_z = v_z;
    out_code = v_code;
}
"""


def closed_outward(vertices: np.ndarray, faces: np.ndarray) -> bool:
    """Whether a triangle mesh bounds a solid with its faces wound outward (counter-clockwise seen from
    outside): every directed edge (a, b) occurs once and its reverse (b, a) once (closed, consistently wound,
    two faces per edge), and the signed volume is positive. Vertex positions are not merged: a mesh whose
    seams repeat vertices counts as open (drawn unculled, which is always correct)."""
    f = np.asarray(faces, dtype=np.int64)
    if len(f) < 4:
        return False
    a, b = f.reshape(-1), f[:, [1, 2, 0]].reshape(-1)
    n = int(f.max()) + 1
    forward = np.sort(a * n + b)
    if np.any(forward[1:] == forward[:-1]) or not np.array_equal(forward, np.sort(b * n + a)):
        return False
    v = np.asarray(vertices, dtype=np.float64)[f]
    return float(np.einsum("ij,ij->", v[:, 0], np.cross(v[:, 1], v[:, 2]))) > 0


def _import_moderngl():
    try:
        import moderngl
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the 'moderngl' renderer needs moderngl: pip install moderngl==5.13.0 "
            "(or pip install 'synthseq[render]'), plus the EGL/Mesa system libraries (libegl1, libgl1-mesa-dri)"
        ) from e
    return moderngl


class ModernglRenderer(MultiViewRenderer):
    """Renders z-depth and instance images of many (frame, view) pairs per GL call (moderngl, EGL).

    Args:
        znear_m: near clip plane, metres.
        zfar_m: far clip plane, metres.
        max_batch_pixels: pixels per atlas (tiles per draw = this // (W * H), at least 1); bounds the GL
            memory (10 bytes per pixel) and the host buffers of one readback (6 bytes per pixel).
        egl_device: EGL device index (None: the default device).
        cull_closed: cull the back faces of closed, outward-wound meshes (module docstring: same images,
            less rasterisation); False draws both sides of everything.
    """

    name = "moderngl"

    def __init__(self, znear_m: float = 0.05, zfar_m: float = 20.0, max_batch_pixels: int = 1 << 22,
                 egl_device: int | None = None, cull_closed: bool = True):
        if not (0 < znear_m < zfar_m):
            raise ValueError(f"ModernglRenderer: expected 0 < znear_m < zfar_m, got {znear_m}, {zfar_m}")
        if int(max_batch_pixels) < 1:
            raise ValueError(f"ModernglRenderer: max_batch_pixels must be >= 1, got {max_batch_pixels}")
        moderngl = _import_moderngl()
        self.znear_m, self.zfar_m = float(znear_m), float(zfar_m)
        self.max_batch_pixels = int(max_batch_pixels)
        self.cull_closed = bool(cull_closed)
        kwargs = {"standalone": True, "backend": "egl"}
        if egl_device is not None:
            kwargs["device_index"] = int(egl_device)
        self._moderngl = moderngl
        try:
            self.ctx = moderngl.create_context(require=330, **kwargs)
        except Exception as e:  # glcontext raises plain Exceptions (no libEGL, no device, GL < 3.3)
            self.ctx = None
            raise RuntimeError(
                f"the 'moderngl' renderer could not create an OpenGL 3.3 EGL context ({type(e).__name__}: {e}); "
                "install the EGL/Mesa libraries (apt-get install libegl1 libgl1-mesa-dri) or use another "
                "renderer (--set generate.renderer=raycast)") from e
        with self.ctx:
            self.gl_renderer = self.ctx.info.get("GL_RENDERER", "?")
            self._max_size = int(self.ctx.info.get("GL_MAX_TEXTURE_SIZE", 8192))
            self._program = self.ctx.program(vertex_shader=_VERTEX_SHADER, fragment_shader=_FRAGMENT_SHADER)
            self._program["camera_from_object"] = 0
        self._geometry = None  # (keys, sources, vao, buffers, num_meshes, culled indices, closed boxes)
        self._target = None  # (size, fbo, colour, depth)
        self._pose_texture = None
        self._readback = np.empty(0, np.uint8)  # reused host buffer of one target's readback (no fresh pages)

    # -- GL state -------------------------------------------------------------------------------------------

    def _upload_geometry(self, meshes: list[RenderMesh]):
        """One vertex/index buffer of every mesh (object frame) plus each vertex's mesh index; reused while
        the same meshes (keys and contents) come back, as they do for every frame of a sequence."""
        keys = tuple(m.key for m in meshes)
        cached = self._geometry
        if cached is not None and cached[0] == keys and all(
            same_geometry(m, v, f) for m, (v, f) in zip(meshes, cached[1])
        ):
            self._geometry = (keys, [(m.vertices, m.faces) for m in meshes], *cached[2:])
            return self._geometry
        self._release_geometry()
        positions, mesh_index, codes, indices, closed = [], [], [], [], []
        offset = 0
        for k, mesh in enumerate(meshes):
            vertices = np.asarray(mesh.vertices, dtype=np.float32)
            faces = np.asarray(mesh.faces)
            if vertices.ndim != 2 or vertices.shape[1] != 3:
                raise ValueError(f"RenderMesh {mesh.key!r}: vertices must be (M, 3), got {vertices.shape}")
            if faces.ndim != 2 or faces.shape[1] != 3:
                raise ValueError(f"RenderMesh {mesh.key!r}: faces must be (F, 3), got {faces.shape}")
            if len(faces) == 0 or len(vertices) == 0:
                continue
            positions.append(vertices)
            mesh_index.append(np.full(len(vertices), k, dtype=np.int32))
            codes.append(np.full(len(vertices), mesh.instance_id + 1, dtype=np.int32))
            indices.append(faces.astype(np.uint32) + np.uint32(offset))
            if self.cull_closed and closed_outward(vertices, faces):
                closed.append((k, vertices.min(axis=0).astype(np.float64), vertices.max(axis=0).astype(np.float64)))
            else:
                closed.append(None)
            offset += len(vertices)
        # closed meshes first (drawn with culling), then the rest, each group in the meshes' order
        order = [i for i, c in enumerate(closed) if c] + [i for i, c in enumerate(closed) if not c]
        culled = 3 * sum(len(indices[i]) for i in order if closed[i])
        indices = [indices[i] for i in order]
        boxes = [c for c in closed if c]  # (mesh index, bbox low, bbox high) of the culled meshes
        ctx = self.ctx
        vao = None
        buffers = []
        if indices:
            vbo = ctx.buffer(np.ascontiguousarray(np.concatenate(positions)).tobytes())
            mbo = ctx.buffer(np.concatenate(mesh_index).tobytes())
            cbo = ctx.buffer(np.concatenate(codes).tobytes())
            ibo = ctx.buffer(np.ascontiguousarray(np.concatenate(indices)).tobytes())
            buffers = [vbo, mbo, cbo, ibo]
            vao = ctx.vertex_array(self._program, [(vbo, "3f", "in_position"), (mbo, "i", "in_mesh"),
                                                   (cbo, "i", "in_code")],
                                   index_buffer=ibo, index_element_size=4)
        self._geometry = (keys, [(m.vertices, m.faces) for m in meshes], vao, buffers, len(meshes), culled, boxes)
        return self._geometry

    def _release_geometry(self) -> None:
        if self._geometry is not None:
            _, _, vao, buffers, _, _, _ = self._geometry
            if vao is not None:
                vao.release()
            for b in buffers:
                b.release()
            self._geometry = None

    def _layout(self, width: int, height: int) -> tuple[int, int]:
        """(tiles per batch, tiles per atlas row) for W x H tiles."""
        if width > self._max_size or height > self._max_size:
            raise ValueError(f"ModernglRenderer: image {width}x{height} exceeds GL_MAX_TEXTURE_SIZE {self._max_size}")
        per_row_max = self._max_size // width
        tiles = max(1, self.max_batch_pixels // (width * height))
        tiles = min(tiles, per_row_max * (self._max_size // height))
        # a roughly square atlas
        per_row = max(1, min(per_row_max, tiles, math.ceil(math.sqrt(tiles * height / width))))
        return tiles, per_row

    def _framebuffer(self, width: int, height: int, per_row: int, rows: int):
        size = (per_row * width, rows * height)
        if self._target is None or self._target[0] != size:
            self._release_target()
            # two single-channel targets: Mesa reads R32F back ~5x faster than RG32F (measured: a
            # two-channel float readback takes its slow per-pixel path), and a 16-bit integer code target
            # instead of a second R32F one costs llvmpipe ~18% less CPU per view (same images, measured)
            z, code = self.ctx.texture(size, 1, dtype="f4"), self.ctx.texture(size, 1, dtype="i2")
            depth = self.ctx.depth_renderbuffer(size)
            fbo = self.ctx.framebuffer(color_attachments=[z, code], depth_attachment=depth)
            self._target = (size, fbo, z, code, depth)
        return self._target[1]

    def _release_target(self) -> None:
        if self._target is not None:
            for obj in self._target[1:]:
                obj.release()
            self._target = None

    # -- rendering ------------------------------------------------------------------------------------------

    def render_frames(self, meshes: list[RenderMesh], world_from_objects, camera: Camera, world_from_cameras):
        """Render T frames x V views of one set of meshes in as few GL calls as the atlas allows.

        Args:
            meshes: M meshes; their geometry and instance ids are used, their ``world_from_object`` is not.
            world_from_objects: (T, M, 4, 4) float, each mesh's pose in each frame.
            camera: the pinhole camera of every view.
            world_from_cameras: (T, V, 4, 4) float, OpenCV camera axes.

        Returns:
            depth (T, V, H, W) float32 z-depth metres (0 = no hit), instance (T, V, H, W) int16 (-1 = none).
        """
        world_from_objects, world_from_cameras = check_frame_poses(meshes, world_from_objects, world_from_cameras)
        T, M = world_from_objects.shape[:2]
        V = world_from_cameras.shape[1]
        H, W = camera.height, camera.width
        depth = np.zeros((T * V, H, W), np.float32)
        codes = np.zeros((T * V, H, W), np.int16)
        # Make our context current for the call (and restore the previous one after): other GL users in
        # the process (pyrender) make theirs current without telling us.
        with self.ctx:
            self._render_frames(meshes, world_from_objects, world_from_cameras, camera, depth, codes)
        # code = instance_id + 1, cleared to 0: "no hit" and the room/background (-1) both decode to -1
        instance = codes
        instance -= 1
        return depth.reshape(T, V, H, W), instance.reshape(T, V, H, W)

    def _render_frames(self, meshes, world_from_objects, world_from_cameras, camera: Camera, depth, codes):
        T, M = world_from_objects.shape[:2]
        V = world_from_cameras.shape[1]
        H, W = camera.height, camera.width
        _, _, vao, _, _, culled, boxes = self._upload_geometry(meshes)
        if vao is not None and T * V > 0:
            # camera_from_object of every (frame, view, mesh) in float64, then float32 for the GPU
            camera_from_world = np.linalg.inv(world_from_cameras).reshape(T * V, 4, 4)
            camera_from_object = np.einsum("bij,bmjk->bmik", camera_from_world,
                                           np.repeat(world_from_objects, V, axis=0))
            if culled and self._cannot_cull(camera_from_object, boxes, camera):
                culled = 0  # everything drawn unculled in this call
            rows34 = np.ascontiguousarray(camera_from_object[:, :, :3, :], dtype=np.float32).reshape(T * V, 3 * M,
                                                                                                    4)
            tiles, per_row = self._layout(W, H)
            for start in range(0, T * V, tiles):
                stop = min(start + tiles, T * V)
                self._render_batch(vao, culled, rows34[start:stop], camera, per_row, depth[start:stop],
                                   codes[start:stop])

    def _cannot_cull(self, camera_from_object, boxes, camera: Camera) -> bool:
        """Whether culling a closed mesh could change this call's images: a camera within its near plane's
        reach (the farthest near-plane corner) of the mesh's bounding box (object frame), or a pose that
        mirrors the mesh (negative determinant: its outward faces would turn clockwise)."""
        half_w = max(camera.cx + 0.5, camera.width - 0.5 - camera.cx) / camera.fx
        half_h = max(camera.cy + 0.5, camera.height - 0.5 - camera.cy) / camera.fy
        reach = self.znear_m * math.sqrt(1.0 + half_w ** 2 + half_h ** 2)
        for k, lo, hi in boxes:
            pose = camera_from_object[:, k]
            if np.any(np.linalg.det(pose[:, :3, :3]) <= 0):
                return True
            eye = np.linalg.inv(pose)[:, :3, 3]  # camera centre in the object frame
            if np.any(np.all((eye > lo - reach) & (eye < hi + reach), axis=1)):
                return True
        return False

    def _render_batch(self, vao, culled: int, rows34: np.ndarray, camera: Camera, per_row: int, depth_out,
                      code_out) -> None:
        """Draw B tiles (one instanced call per culling group: the first ``culled`` indices with back faces
        culled, the rest without) and read the atlas back once into depth_out/code_out (B, H, W)."""
        moderngl = self._moderngl
        B = len(rows34)
        H, W = camera.height, camera.width
        rows = math.ceil(B / per_row)
        tiles, _ = self._layout(W, H)
        fbo = self._framebuffer(W, H, per_row, math.ceil(tiles / per_row))
        if self._pose_texture is None or self._pose_texture.size != (rows34.shape[1], tiles):
            if self._pose_texture is not None:
                self._pose_texture.release()
            self._pose_texture = self.ctx.texture((rows34.shape[1], tiles), 4, dtype="f4")
            self._pose_texture.filter = (moderngl.NEAREST, moderngl.NEAREST)
        self._pose_texture.write(rows34.tobytes(), viewport=(0, 0, rows34.shape[1], B))
        n, f = self.znear_m, self.zfar_m
        program = self._program
        program["intrinsics"].value = (camera.fx, camera.fy, camera.cx + 0.5, camera.cy + 0.5)
        program["tile_size"].value = (float(W), float(H))
        program["atlas_size"].value = (float(fbo.size[0]), float(fbo.size[1]))
        program["tiles_per_row"].value = per_row
        program["depth_ab"].value = ((f + n) / (f - n), -2.0 * f * n / (f - n))
        fbo.use()
        used = (0, 0, per_row * W, rows * H)
        fbo.viewport = (0, 0, fbo.size[0], fbo.size[1])
        fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0, viewport=used)  # every colour attachment: z 0, code 0
        self._pose_texture.use(0)
        total = vao.vertices
        if culled:
            self.ctx.enable_only(moderngl.DEPTH_TEST | moderngl.CULL_FACE)
            self.ctx.front_face = "ccw"
            self.ctx.cull_face = "front"  # GL's front = our back faces (window y is mirrored: docstring)
            vao.render(moderngl.TRIANGLES, vertices=culled, first=0, instances=B)
        if total > culled:
            self.ctx.enable_only(moderngl.DEPTH_TEST)
            vao.render(moderngl.TRIANGLES, vertices=total - culled, first=culled, instances=B)
        full = B // per_row
        for attachment, out, dtype in ((0, depth_out, "f4"), (1, code_out, "i2")):
            nbytes = used[2] * used[3] * out.itemsize
            if self._readback.nbytes < nbytes:
                self._readback = np.empty(nbytes, np.uint8)
            fbo.read_into(self._readback, viewport=used, components=1, dtype=dtype, attachment=attachment)
            atlas = self._readback[:nbytes].view(dtype)
            # (row, y, tile in row, x) -> tiles: one strided copy straight into the output
            grid = atlas.reshape(rows, H, per_row, W).transpose(0, 2, 1, 3)
            out[:full * per_row].reshape(full, per_row, H, W)[:] = grid[:full]
            if B > full * per_row:
                out[full * per_row:] = grid[full, :B - full * per_row]

    def render_views(self, meshes: list[RenderMesh], cameras: list[Camera], world_from_cameras) -> list[RenderResult]:
        """Render V views of one scene state; views with the same camera share one batch.

        Args:
            meshes: the scene at one instant.
            cameras: V pinhole cameras (sizes may differ).
            world_from_cameras: (V, 4, 4) float, OpenCV camera axes.

        Returns:
            V results: depth (H, W) float32 z-depth metres (0 = no hit), instance (H, W) int16 (-1 = none).
        """
        poses = check_view_poses(world_from_cameras, len(cameras))
        world_from_objects = np.stack([np.asarray(m.world_from_object, np.float64) for m in meshes])[None] \
            if meshes else np.zeros((1, 0, 4, 4))
        results: list = [None] * len(cameras)
        groups: dict = {}
        for v, cam in enumerate(cameras):
            groups.setdefault((cam.width, cam.height, cam.intrinsics.tobytes()), []).append(v)
        for views in groups.values():
            depth, instance = self.render_frames(meshes, world_from_objects, cameras[views[0]], poses[views][None])
            for i, v in enumerate(views):
                results[v] = RenderResult(depth=depth[0, i], instance=instance[0, i])
        return results

    def close(self) -> None:
        """Release every GL object and the context."""
        if getattr(self, "ctx", None) is None:
            return
        with self.ctx:
            self._release_geometry()
            self._release_target()
            if self._pose_texture is not None:
                self._pose_texture.release()
                self._pose_texture = None
        self.ctx.release()
        self.ctx = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: GL may already be gone
            pass
