"""Renderers: geometry against hand-computed projections, axis conventions, instance ids, backend agreement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from synthseq.errors import ConfigError
from synthseq.generator.render import RENDERER_NAMES, RenderMesh, make_renderer
from synthseq.geometry import backproject_depth, invert_pose, look_at, transform_points
from synthseq.types import Camera

BACKENDS = ["raycast", "pyrender", "moderngl"]


@pytest.fixture(scope="module")
def renderers():
    made = {}

    def get(name):
        if name not in made:
            made[name] = make_renderer(name)
        return made[name]

    yield get
    for r in made.values():
        r.close()


def box_mesh(extents, world_from_object, instance_id, key) -> RenderMesh:
    m = trimesh.creation.box(extents=extents)
    return RenderMesh(m.vertices, m.faces, np.asarray(world_from_object, float), instance_id, key)


def translation(x, y, z) -> np.ndarray:
    T = np.eye(4)
    T[:3, 3] = (x, y, z)
    return T


def room_mesh(size=(4.0, 4.0, 3.0), key="room") -> RenderMesh:
    """Floor + 4 walls + ceiling as a box, floor at z = 0 (outward normals: seen from inside, every wall is a
    back face, which both backends must draw)."""
    m = trimesh.creation.box(extents=size)
    return RenderMesh(m.vertices, m.faces, translation(0, 0, size[2] / 2), -1, key)


# A camera with a non-trivial pose and a principal point off the image centre, so that K and the pose are
# both exercised.
CAMERA = Camera.from_focal(250.0, 260.0, 157.3, 121.8, 320, 240)
WORLD_FROM_CAMERA = look_at((1.3, -0.7, 1.1), (0.1, 0.2, 0.4))


def test_make_renderer_unknown_name_names_valid_ones():
    with pytest.raises(ConfigError, match=r"generate.renderer: expected one of 'raycast', 'pyrender', 'moderngl', got 'foo'"):
        make_renderer("foo")
    with pytest.raises(ConfigError, match=r"^cfg.render.backend: expected one of"):
        make_renderer("opengl", key="cfg.render.backend")
    assert RENDERER_NAMES == ("raycast", "pyrender", "moderngl")


def test_make_renderer_names():
    r = make_renderer("raycast", nthreads=1)
    assert r.name == "raycast"
    r.close()


def test_open3d_pinhole_rays_give_z_depth_with_half_pixel_centres():
    """Verifies the claim raycast.py relies on: ``t_hit`` of ``create_rays_pinhole`` rays is z-depth (their
    directions have z = 1), not ray length; and documents that Open3D puts pixel centres at col + 0.5."""
    import open3d as o3d

    plane = trimesh.creation.box(extents=(100.0, 100.0, 0.01))
    plane.apply_translation((0, 0, 2.0 + 0.005))  # front face at z = 2 in the camera frame
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(plane.vertices.astype(np.float32)), o3d.core.Tensor(plane.faces.astype(np.uint32)))
    K = CAMERA.intrinsics
    rays = o3d.t.geometry.RaycastingScene.create_rays_pinhole(
        o3d.core.Tensor(K), o3d.core.Tensor(np.eye(4)), CAMERA.width, CAMERA.height
    )
    t_hit = scene.cast_rays(rays)["t_hit"].numpy()
    np.testing.assert_allclose(t_hit, 2.0, atol=1e-5)  # corners: ray length would be ~2.8 m
    d = rays.numpy()[0, 0, 3:]
    np.testing.assert_allclose(d, [(0.5 - K[0, 2]) / K[0, 0], (0.5 - K[1, 2]) / K[1, 1], 1.0], rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_projection_matches_hand_computed_K(renderers, backend):
    """An axis-aligned box in the camera frame: the hit pixels are exactly those whose centres K projects
    inside its front face, and the depth there is the face's z."""
    x0, x1, y0, y1, z_front = -0.21, 0.13, -0.17, 0.09, 0.9
    # corners project to non-integer, non-half pixels (no ties on the silhouette)
    camera_from_box = translation((x0 + x1) / 2, (y0 + y1) / 2, z_front + 0.05)
    mesh = box_mesh((x1 - x0, y1 - y0, 0.1), WORLD_FROM_CAMERA @ camera_from_box, 5, "k-box")
    result = renderers(backend).render([mesh], CAMERA, WORLD_FROM_CAMERA)

    K = CAMERA.intrinsics
    u0, u1 = K[0, 0] * x0 / z_front + K[0, 2], K[0, 0] * x1 / z_front + K[0, 2]
    v0, v1 = K[1, 1] * y0 / z_front + K[1, 2], K[1, 1] * y1 / z_front + K[1, 2]
    cols, rows = np.arange(CAMERA.width), np.arange(CAMERA.height)
    expected = ((rows[:, None] > v0) & (rows[:, None] < v1)) & ((cols[None, :] > u0) & (cols[None, :] < u1))
    hit = result.depth > 0
    assert hit.sum() == expected.sum() and np.array_equal(hit, expected)
    # the box's top-left front vertex (x0, y0, z) lands where K says: the first hit pixel is ceil(u0, v0)
    rr, cc = np.nonzero(hit)
    assert (rr.min(), cc.min()) == (int(np.ceil(v0)), int(np.ceil(u0)))
    np.testing.assert_allclose(result.depth[hit], z_front, atol=1e-4)
    assert np.all(result.instance[hit] == 5) and np.all(result.instance[~hit] == -1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_opencv_axes_x_right_y_down_z_forward(renderers, backend):
    r = renderers(backend)
    cx, cy = CAMERA.cx, CAMERA.cy
    for offset, check in [
        ((0.3, 0.0, 1.5), lambda rr, cc: cc.min() > cx),  # +x: right of centre
        ((-0.3, 0.0, 1.5), lambda rr, cc: cc.max() < cx),
        ((0.0, 0.3, 1.5), lambda rr, cc: rr.min() > cy),  # +y: below centre
        ((0.0, -0.3, 1.5), lambda rr, cc: rr.max() < cy),
    ]:
        mesh = box_mesh((0.1, 0.1, 0.1), WORLD_FROM_CAMERA @ translation(*offset), 0, "axes-box")
        res = r.render([mesh], CAMERA, WORLD_FROM_CAMERA)
        rr, cc = np.nonzero(res.depth > 0)
        assert len(rr) > 0, f"{backend}: object at camera {offset} not seen"
        assert check(rr, cc), f"{backend}: object at camera {offset} seen at rows {rr.min()}-{rr.max()}, cols {cc.min()}-{cc.max()}"
    # behind the camera (-z): nothing
    mesh = box_mesh((0.1, 0.1, 0.1), WORLD_FROM_CAMERA @ translation(0, 0, -1.5), 0, "axes-box")
    assert not np.any(r.render([mesh], CAMERA, WORLD_FROM_CAMERA).depth > 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_instance_ids_and_room(renderers, backend):
    camera = Camera.from_fov(70.0, 160, 120)
    world_from_camera = look_at((1.5, 0.0, 1.2), (0.0, 0.0, 0.3))
    a = box_mesh((0.3, 0.3, 0.3), translation(0.0, -0.4, 0.15), 0, "inst-a")
    b = box_mesh((0.3, 0.3, 0.3), translation(0.0, 0.4, 0.15), 7, "inst-b")
    res = renderers(backend).render([a, b, room_mesh()], camera, world_from_camera)
    assert res.depth.dtype == np.float32 and res.instance.dtype == np.int16
    assert res.depth.shape == res.instance.shape == (120, 160)
    assert np.all(res.depth > 0)  # inside a closed room every ray hits something
    assert set(np.unique(res.instance)) == {-1, 0, 7}
    camera_from_world = invert_pose(world_from_camera)
    for mesh in (a, b):
        # the centre of the top face projects onto a pixel of that object
        top = transform_points(camera_from_world, np.array([[*mesh.world_from_object[:2, 3], 0.3]]))[0]
        u, v = camera.intrinsics[:2] @ (top / top[2])
        assert res.instance[int(round(v)), int(round(u))] == mesh.instance_id
    # every labelled point lies on its box (ground truth is geometry)
    points, pixels = backproject_depth(res.depth, camera.intrinsics)
    world = transform_points(world_from_camera, points.astype(np.float64))
    labels = res.instance[pixels[:, 0], pixels[:, 1]]
    for mesh in (a, b):
        local = world[labels == mesh.instance_id] - mesh.world_from_object[:3, 3]
        assert np.all(np.abs(local).max(axis=1) < 0.15 + 1e-4)
        assert np.all(np.abs(np.abs(local).max(axis=1) - 0.15) < 1e-4)  # on the surface, not inside


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_scene_gives_zeros_and_minus_one(renderers, backend):
    r = renderers(backend)
    empty_mesh = RenderMesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64), np.eye(4), 3, "empty")
    for meshes in ([], [empty_mesh]):
        res = r.render(meshes, CAMERA, WORLD_FROM_CAMERA)
        assert res.depth.shape == (240, 320) and res.depth.dtype == np.float32
        assert res.instance.dtype == np.int16
        assert np.all(res.depth == 0) and np.all(res.instance == -1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_render_views_equals_render_and_meshes_can_leave(renderers, backend):
    r = renderers(backend)
    cams = [CAMERA, Camera.from_fov(60.0, 96, 72)]
    poses = np.stack([WORLD_FROM_CAMERA, look_at((-1.0, 1.0, 1.0), (0.0, 0.0, 0.3))])
    a = box_mesh((0.3, 0.2, 0.3), translation(0.1, 0.0, 0.2), 1, "rv-a")
    b = box_mesh((0.2, 0.2, 0.2), translation(-0.2, 0.3, 0.1), 2, "rv-b")
    many = r.render_views([a, b, room_mesh()], cams, poses)
    for v, res in enumerate(many):
        one = r.render([a, b, room_mesh()], cams[v], poses[v])
        np.testing.assert_array_equal(res.depth, one.depth)
        np.testing.assert_array_equal(res.instance, one.instance)
    # b leaves the scene: it must not be drawn from the cache
    without_b = r.render([a, room_mesh()], cams[0], poses[0])
    assert 2 not in without_b.instance and 2 in many[0].instance


def _normalised(path, size_m: float) -> trimesh.Trimesh:
    mesh = trimesh.load(path, force="mesh")
    mesh.apply_translation(-mesh.bounds.mean(axis=0))
    mesh.apply_scale(size_m / mesh.extents.max())
    return mesh


REAL_MESHES = ["bunny.ply", "teapot.stl", "fandisk.obj", "angle_block.STL", "chair_model.obj", "idler_riser.STL"]


def real_scene(meshes_dir) -> list[RenderMesh]:
    """Six real meshes (0.25-0.45 m) standing on the floor of a 3.5 x 3.5 x 2.6 m room, rotated about z."""
    out = []
    for k, name in enumerate(REAL_MESHES):
        mesh = _normalised(meshes_dir / name, 0.25 + 0.04 * k)
        angle = 0.7 * k
        T = np.eye(4)
        T[:3, :3] = trimesh.transformations.rotation_matrix(angle, (0, 0, 1))[:3, :3]
        ring = 2 * np.pi * k / len(REAL_MESHES)
        T[:3, 3] = (0.6 * np.cos(ring), 0.6 * np.sin(ring), 0.0)
        T[2, 3] = -(mesh.vertices @ T[:3, :3].T)[:, 2].min()  # rest on the floor z = 0
        out.append(RenderMesh(mesh.vertices, mesh.faces, T, k, f"real-{name}"))
    out.append(room_mesh((3.5, 3.5, 2.6), key="real-room"))
    return out


def _agreement(a, b) -> dict:
    both = (a.depth > 0) & (b.depth > 0)
    diff = np.abs(a.depth.astype(np.float64) - b.depth)[both]
    return {
        "both": int(both.sum()),
        "within_1mm": float((diff < 1e-3).mean()),
        "hit_agree": float(((a.depth > 0) == (b.depth > 0)).mean()),
        "instance_agree": float((a.instance[both] == b.instance[both]).mean()),
    }


def _check_agreement(renderers, meshes_dir, width, height, other="pyrender"):
    scene = real_scene(meshes_dir)
    camera = Camera.from_fov(62.0, width, height)
    poses = np.stack(
        [look_at((1.5 * np.cos(a), 1.5 * np.sin(a), 1.3), (0.0, 0.0, 0.2)) for a in (0.3, 2.4, 4.3)]
    )
    ray = renderers("raycast").render_views(scene, [camera] * len(poses), poses)
    gl = renderers(other).render_views(scene, [camera] * len(poses), poses)
    for v, (a, b) in enumerate(zip(ray, gl)):
        stats = _agreement(a, b)
        assert stats["both"] > 0.99 * width * height, stats  # closed room: nearly every pixel is hit by both
        assert stats["within_1mm"] >= 0.999, (v, stats)
        assert stats["hit_agree"] >= 0.999, (v, stats)
        assert stats["instance_agree"] >= 0.999, (v, stats)
        assert len(np.unique(a.instance)) >= 4, "the real objects should be in view"


@pytest.mark.parametrize("other", ["pyrender", "moderngl"])
def test_backends_agree_on_real_meshes_320x240(renderers, meshes_dir, other):
    _check_agreement(renderers, meshes_dir, 320, 240, other)


@pytest.mark.parametrize("other", ["pyrender", "moderngl"])
def test_backends_agree_on_real_meshes_640x480(renderers, meshes_dir, other):
    _check_agreement(renderers, meshes_dir, 640, 480, other)


def test_raycast_bad_pose_shape_is_an_error(renderers):
    with pytest.raises(ValueError, match=r"expected world_from_cameras of shape \(2, 4, 4\)"):
        renderers("raycast").render_views([], [CAMERA, CAMERA], np.eye(4)[None])


@pytest.mark.parametrize("backend", BACKENDS)
def test_key_reused_for_other_geometry_is_not_rendered_stale(renderers, backend):
    """Two sequences may name objects alike; same vertex/face counts, other shape: the cache must notice."""
    r = renderers(backend)
    pose = WORLD_FROM_CAMERA @ translation(0.0, 0.0, 1.0)
    small = r.render([box_mesh((0.1, 0.1, 0.1), pose, 0, "reused")], CAMERA, WORLD_FROM_CAMERA)
    large = r.render([box_mesh((0.3, 0.3, 0.1), pose, 0, "reused")], CAMERA, WORLD_FROM_CAMERA)
    assert (large.depth > 0).sum() > 5 * (small.depth > 0).sum()


def _random_boxes(rng, count: int, key: str) -> list[RenderMesh]:
    out = []
    for k in range(count):
        T = translation(*rng.uniform((-1.2, -1.2, 0.1), (1.2, 1.2, 1.5)))
        T[:3, :3] = trimesh.transformations.random_rotation_matrix(rng.random(3))[:3, :3]
        out.append(box_mesh(rng.uniform(0.05, 0.5, 3), T, k, f"{key}-{k}"))
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_render_frames_equals_render_views_frame_by_frame(renderers, backend):
    """The batched path (raycast: static scene cast once per camera pose, movers only inside their projected
    rectangles; moderngl: every frame and view in one atlas) against the plain one, frame by frame: static
    and moving boxes, a room, two fixed cameras and a moving one, a mover straddling a camera's image plane."""
    from synthseq.generator.render.base import render_frames_by_views

    rng = np.random.default_rng(7)
    r = renderers(backend)
    camera = Camera.from_fov(75.0, 160, 120)
    T = 3
    meshes = _random_boxes(rng, 6, f"frames-{backend}") + [room_mesh((4.0, 4.0, 2.5), key="frames-room")]
    poses = np.stack([m.world_from_object for m in meshes])
    world_from_objects = np.repeat(poses[None], T, axis=0)
    for t in range(1, T):  # boxes 0-2 move, 3-5 and the room stay
        for k in range(3):
            world_from_objects[t, k] = translation(*rng.uniform(-0.3, 0.3, 3)) @ world_from_objects[t - 1, k]
    fixed = [look_at((1.5, -1.2, 1.4), (0.0, 0.0, 0.5)), look_at((-1.8, 0.0, 0.3), (1.0, 0.2, 0.4))]
    world_from_cameras = np.stack([
        np.stack(fixed + [look_at((0.3 * t, 0.2, 2.2), (0.1, 0.0, 0.0))]) for t in range(T)])
    # box 0 straddles the first camera's image plane in the last frame
    world_from_objects[-1, 0] = fixed[0] @ translation(0.3, 0.0, 0.05)
    depth, instance = r.render_frames(meshes, world_from_objects, camera, world_from_cameras)
    ref_depth, ref_instance = render_frames_by_views(r, meshes, world_from_objects, camera, world_from_cameras)
    assert depth.shape == ref_depth.shape == (T, 3, 120, 160) and instance.dtype == np.int16
    assert len(np.unique(instance)) >= 5
    if backend == "raycast":
        np.testing.assert_array_equal(instance, ref_instance)
        np.testing.assert_array_equal(depth, ref_depth)
    else:  # other tile positions: float rounding in the rasteriser may flip a pixel on a silhouette
        assert (instance == ref_instance).mean() > 0.999
        both = (depth > 0) & (ref_depth > 0)
        assert (np.abs(depth - ref_depth)[both] < 1e-4).mean() > 0.999


def test_raycast_casts_the_static_scene_once_per_camera_pose():
    r = make_renderer("raycast", nthreads=1)
    camera = Camera.from_fov(60.0, 80, 60)
    room = room_mesh(key="once-room")
    box = box_mesh((0.2, 0.2, 0.2), translation(0.0, 0.0, 0.5), 0, "once-box")
    T = 4
    world_from_objects = np.repeat(np.stack([box.world_from_object, room.world_from_object])[None], T, axis=0)
    world_from_objects[:, 0, 0, 3] = np.linspace(-0.2, 0.2, T)  # the box moves, the room does not
    pose = look_at((1.5, 0.0, 1.0), (0.0, 0.0, 0.5))
    r.render_frames([box, room], world_from_objects, camera, np.repeat(pose[None, None], T, axis=0))
    pixels = camera.width * camera.height
    # one full image of the static room, then per frame only the rays near the box
    assert pixels < r.last_rays_cast < pixels + T * 0.3 * pixels


@pytest.mark.parametrize("backend", BACKENDS)
def test_room_pixels_lie_on_the_room_planes(renderers, backend):
    """Ground truth is geometry: every background pixel, back-projected and moved to the world, lies on the
    floor or a wall (the raycast backend interpolates most of these pixels)."""
    camera = Camera.from_fov(70.0, 160, 120)
    size = (4.0, 3.0, 2.5)
    world_from_camera = look_at((-1.2, 0.7, 1.6), (1.0, -0.3, 0.6))
    box = box_mesh((0.3, 0.3, 0.3), translation(0.5, 0.0, 0.15), 0, "plane-box")
    res = renderers(backend).render([box, room_mesh(size, key="plane-room")], camera, world_from_camera)
    points, pixels = backproject_depth(res.depth, camera.intrinsics)
    world = transform_points(world_from_camera, points.astype(np.float64))
    room = res.instance[pixels[:, 0], pixels[:, 1]] == -1
    assert room.mean() > 0.8
    half = np.array(size) / 2
    dist = np.min(
        np.stack([np.abs(world[room, 2]), np.abs(world[room, 2] - size[2]),
                  np.abs(np.abs(world[room, 0]) - half[0]), np.abs(np.abs(world[room, 1]) - half[1])]),
        axis=0,
    )
    assert dist.max() < 2e-4, dist.max()  # 0.2 mm: float32 depth at ~4 m, and GL's 24-bit depth buffer


def test_importing_the_backends_imports_no_heavy_dependency():
    import subprocess
    import sys

    code = (
        "import sys, synthseq.generator, synthseq.generator.render, synthseq.generator.render.raycast, "
        "synthseq.generator.render.pyrender, synthseq.generator.render.moderngl, synthseq.generator.sensor\n"
        "heavy = [m for m in ('open3d', 'pyrender', 'OpenGL', 'moderngl', 'torch', 'ray') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(("backend", "module", "package"), [("raycast", "open3d", "open3d-cpu"), ("pyrender", "pyrender", "pyrender==0.1.45"),
                                                            ("moderngl", "moderngl", "moderngl==5.13.0")])
def test_missing_backend_dependency_names_the_pip_package(monkeypatch, backend, module, package):
    import sys

    monkeypatch.setitem(sys.modules, module, None)  # what Python does for a package that is not installed
    with pytest.raises(ImportError, match=package):
        make_renderer(backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_depth_precision_on_planes_across_the_scene_range(renderers, backend):
    """Fronto-parallel planes from 0.3 to 8 m: z-depth error well under 1 mm, growing like z^2 for pyrender
    (24-bit depth buffer, znear 0.1 m / zfar 20 m: ~0.1 mm at 8 m); raycast is float32-exact."""
    camera = Camera.from_fov(60.0, 64, 48)
    for z in (0.3, 1.0, 3.0, 6.0, 8.0):
        plane = box_mesh((40.0, 40.0, 0.01), WORLD_FROM_CAMERA @ translation(0.0, 0.0, z + 0.005), 0, "precision")
        res = renderers(backend).render([plane], camera, WORLD_FROM_CAMERA)
        assert np.all(res.depth > 0)
        tolerance = 2e-5 + 2.5e-6 * z**2  # 0.18 mm at 8 m
        assert np.abs(res.depth - z).max() < tolerance, (z, np.abs(res.depth - z).max())


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_geometry_placed_twice(renderers, backend):
    """One key (one geometry) at two poses in one scene: both drawn, each with its own instance id."""
    camera = Camera.from_fov(60.0, 160, 120)
    left = box_mesh((0.2, 0.2, 0.2), WORLD_FROM_CAMERA @ translation(-0.3, 0.0, 1.5), 1, "twice")
    right = RenderMesh(left.vertices, left.faces, WORLD_FROM_CAMERA @ translation(0.3, 0.0, 1.5), 2, "twice")
    r = renderers(backend)
    res = r.render([left, right], camera, WORLD_FROM_CAMERA)
    cols = {k: np.nonzero(res.instance == k)[1] for k in (1, 2)}
    assert len(cols[1]) > 100 and len(cols[2]) > 100
    assert cols[1].max() < camera.cx < cols[2].min()
    # and back to one: the second copy is not drawn
    assert 2 not in r.render([left], camera, WORLD_FROM_CAMERA).instance


def test_raycast_is_bit_identical_across_thread_counts_and_calls(meshes_dir):
    """The build promises identical arrays with 1 or 2 workers: rendering must not depend on threads."""
    scene = real_scene(meshes_dir)
    camera = Camera.from_fov(62.0, 160, 120)
    poses = np.stack([look_at((1.5 * np.cos(a), 1.5 * np.sin(a), 1.3), (0.0, 0.0, 0.2)) for a in (0.3, 2.4)])
    one = make_renderer("raycast", nthreads=1).render_views(scene, [camera] * 2, poses)
    two = make_renderer("raycast", nthreads=2)
    for again in (two.render_views(scene, [camera] * 2, poses), two.render_views(scene, [camera] * 2, poses)):
        for a, b in zip(one, again):
            assert np.array_equal(a.depth, b.depth) and np.array_equal(a.instance, b.instance)


def test_moderngl_is_bit_identical_across_llvmpipe_thread_counts():
    """Build workers set llvmpipe's thread count from their CPU share (make_renderer(threads=...)); the
    build promises the same bytes with 1 or 2 workers, so the rendering must not depend on it. Mesa reads
    LP_NUM_THREADS once per process: one fresh interpreter per thread count."""
    import subprocess
    import sys

    code = (
        "import sys, hashlib, numpy as np\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from pathlib import Path\n"
        "from test_render import _random_boxes, room_mesh\n"
        "from synthseq.geometry import look_at\n"
        "from synthseq.types import Camera\n"
        "from synthseq.generator.render import make_renderer\n"
        "scene = _random_boxes(np.random.default_rng(3), 8, 'lp') + [room_mesh()]\n"
        "poses = np.stack([look_at((1.5 * np.cos(a), 1.5 * np.sin(a), 1.3), (0.0, 0.0, 0.2)) for a in (0.3, 2.4)])\n"
        "r = make_renderer('moderngl', threads=int(sys.argv[1]))\n"
        "h = hashlib.sha256()\n"
        "for res in r.render_views(scene, [Camera.from_fov(62.0, 320, 240)] * 2, poses):\n"
        "    h.update(res.depth.tobytes()); h.update(res.instance.tobytes())\n"
        "print(h.hexdigest())\n"
    )
    tests_dir = str(Path(__file__).resolve().parent)
    digests = {subprocess.run([sys.executable, "-c", code, str(t), tests_dir], check=True,
                              capture_output=True, text=True).stdout.strip() for t in (1, 2)}
    assert len(digests) == 1, digests


def test_shared_renderer_is_one_per_process_and_survives_close():
    a = make_renderer("raycast", threads=1, shared=True)
    a.close()  # a build task closing its handle
    b = make_renderer("raycast", threads=1, shared=True)
    assert b._renderer is a._renderer and b.name == "raycast"
    res = b.render([box_mesh((0.2, 0.2, 0.2), translation(0, 0, 0.5), 3, "shared-box")], CAMERA, WORLD_FROM_CAMERA)
    assert 3 in res.instance
    assert make_renderer("raycast", threads=2, shared=True)._renderer is not a._renderer


def test_moderngl_without_egl_says_what_to_install(monkeypatch):
    moderngl = pytest.importorskip("moderngl")

    def no_egl(*args, **kwargs):
        raise Exception("libEGL.so: cannot open shared object file")  # what glcontext raises

    monkeypatch.setattr(moderngl, "create_context", no_egl)
    with pytest.raises(RuntimeError, match=r"could not create an OpenGL 3.3 EGL context.*libegl1.*generate.renderer=raycast"):
        make_renderer("moderngl")


# ------------------------------------------------------------------------------------------ moderngl culling

def test_closed_outward_finds_solids_with_outward_faces(meshes_dir):
    from synthseq.generator.assets import make_primitive, room_geometry, unit_mesh
    from synthseq.generator.render.moderngl import closed_outward

    for kind, params in [("box", (0.3, 0.2, 0.1)), ("sphere", (0.2,)), ("cylinder", (0.1, 0.3)), ("cone", (0.1, 0.3)),
                         ("capsule", (0.05, 0.2)), ("torus", (0.2, 0.05))]:
        assert closed_outward(*make_primitive(kind, params)), kind
    v, f = make_primitive("box", (0.3, 0.2, 0.1))
    assert not closed_outward(v, f[:, ::-1])  # wound inwards
    assert not closed_outward(v, f[1:])  # a face missing
    assert not closed_outward(*room_geometry((4.0, 4.0, 3.0)))  # open (no ceiling)
    assert not closed_outward(*room_geometry((4.0, 4.0, 3.0), ceiling=True))  # closed, faces inwards
    assert not closed_outward(*unit_mesh(meshes_dir / "bunny.ply"))  # a scan with holes
    assert closed_outward(*unit_mesh(meshes_dir / "angle_block.STL"))  # a watertight CAD part


def test_moderngl_culling_changes_no_image():
    """Back faces of closed meshes are culled: the same images as drawing both sides, also when a camera is
    inside a closed mesh (a closed box as the room) or a pose mirrors a mesh (culling is then skipped)."""
    from synthseq.generator.assets import make_primitive
    from synthseq.generator.render.moderngl import ModernglRenderer

    rng = np.random.default_rng(11)
    meshes = _random_boxes(rng, 6, "cull")
    for k, (kind, params) in enumerate([("sphere", (0.2,)), ("torus", (0.25, 0.08)), ("capsule", (0.1, 0.3))]):
        T = translation(*rng.uniform((-1.0, -1.0, 0.3), (1.0, 1.0, 1.2)))
        T[:3, :3] = trimesh.transformations.random_rotation_matrix(rng.random(3))[:3, :3]
        meshes.append(RenderMesh(*make_primitive(kind, params), T, 6 + k, f"cull-{kind}"))
    camera = Camera.from_fov(62.0, 320, 240)
    T = 2
    poses = np.stack([m.world_from_object for m in meshes])
    world_from_cameras = np.stack([np.stack([look_at((2.4 * np.cos(a + t), 2.4 * np.sin(a + t), 1.4), (0.0, 0.0, 0.6))
                                             for a in (0.0, 1.5, 3.0, 4.5)]) for t in range(T)])
    mirrored = poses.copy()
    mirrored[:, :3, 0] *= -1  # every mesh mirrored in its own x: GL sees its outward faces clockwise
    culled, plain = ModernglRenderer(), ModernglRenderer(cull_closed=False)
    try:
        for scene, pose in [(meshes, poses), (meshes + [room_mesh((6.0, 6.0, 3.0), key="cull-room")],
                                              np.concatenate([poses, translation(0, 0, 1.5)[None]])),
                            (meshes, mirrored)]:
            world_from_objects = np.repeat(pose[None], T, axis=0)
            a = culled.render_frames(scene, world_from_objects, camera, world_from_cameras)
            b = plain.render_frames(scene, world_from_objects, camera, world_from_cameras)
            assert len(np.unique(a[1])) >= 8
            np.testing.assert_array_equal(a[1], b[1])
            # grazing silhouettes: front and back face meet, float rounding may pick the other (both on the mesh)
            assert (a[0] == b[0]).mean() > 0.9999
        # a closed box around the cameras (a room) alone: still drawn, every pixel hits it
        inside = culled.render_frames([room_mesh((6.0, 6.0, 3.0), key="cull-room-alone")],
                                      translation(0, 0, 1.5)[None, None], camera, world_from_cameras[:1])
        assert np.all(inside[0] > 0) and np.all(inside[1] == -1)
    finally:
        culled.close()
        plain.close()
