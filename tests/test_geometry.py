"""Ground truth is geometry: with the ideal sensor every labelled point, moved by its camera pose and then by
the inverse object pose, lies on its canonical mesh; room points lie on the room; a hand-built scene renders
to hand-computed depth and pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from synthseq.generator.assets import ObjectSpec
from synthseq.generator.cameras import CameraSpec
from synthseq.generator.config import load_generate_config
from synthseq.generator.scene import SceneSpec, make_spec
from synthseq.generator.sensor import SensorConfig
from synthseq.generator.sequence import generate_sequence
from synthseq.generator.trajectories import Trajectory
from synthseq.geometry import invert_pose, look_at, project_points, transform_points

CONFIGS = Path(__file__).resolve().parents[1] / "pipelines" / "configs"


def distance_to_mesh(vertices, faces, points):
    """(M,) distance of each point (M, 3) to the triangle mesh (vertices, faces) (Open3D)."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(vertices.astype(np.float32)), o3d.core.Tensor(faces.astype(np.uint32)))
    return scene.compute_distance(o3d.core.Tensor(points.astype(np.float32))).numpy()


def world_points(seq):
    """(T, V, N, 3) float64 points of a sequence in the world frame (through the ground-truth camera poses)."""
    R = seq.camera_poses[..., :3, :3]
    return np.einsum("tvij,tvnj->tvni", R, seq.points.astype(np.float64)) + seq.camera_poses[:, :, None, :3, 3]


def object_mesh_distances(seq) -> dict:
    """Object name -> distances of its labelled points to its canonical mesh, after moving them by the GT
    camera pose and the inverse object pose (object frame): the ground truth, checked as geometry."""
    out = {}
    for k, name in enumerate(seq.object_names):
        pts = []
        for t in range(seq.num_frames):
            for v in range(seq.num_views):
                m = seq.labels[t, v] == k
                if m.any():
                    object_from_camera = invert_pose(seq.object_poses[t, k]) @ seq.camera_poses[t, v]
                    pts.append(transform_points(object_from_camera, seq.points[t, v][m].astype(np.float64)))
        if pts:
            out[name] = distance_to_mesh(*seq.meshes[name], np.concatenate(pts))
    return out


def assert_labelled_points_on_their_meshes(seq) -> None:
    """Every point labelled as object k lies within 1 mm of its mesh (with the ideal sensor)."""
    checked = 0
    for name, d in object_mesh_distances(seq).items():
        assert d.max() < 1e-3, f"{name}: a point {d.max() * 1000:.3f} mm off its mesh"
        checked += len(d)
    assert checked == (seq.labels >= 0).sum()


@pytest.mark.parametrize("index", [0, 1])
def test_labelled_points_lie_on_their_meshes_and_the_room(index, meshes_dir):
    cfg = load_generate_config(CONFIGS / "tiny.yaml", [
        f"generate.objects.mesh_dir={meshes_dir}", "generate.objects.count=4", "generate.sensor=ideal",
        "generate.cameras.handheld.enabled=true", "generate.num_frames=5"])
    spec = make_spec(cfg, 7, index)
    seq = generate_sequence(spec)
    labels = seq.labels
    assert (labels >= 0).sum() > 100 and (labels == -1).sum() > 100
    assert_labelled_points_on_their_meshes(seq)
    # Room points: on the floor (z = 0) or a wall (|x| = sx/2 or |y| = sy/2).
    sx, sy, _ = spec.room_size
    w = world_points(seq)[labels == -1]
    off = np.min(np.abs([w[:, 2], np.abs(w[:, 0]) - sx / 2, np.abs(w[:, 1]) - sy / 2]), axis=0)
    assert off.max() < 1e-3
    # Normals (from the ideal depth image) of floor points point up in the world.
    floor = np.abs(world_points(seq)[..., 2]) < 1e-3
    n_world = np.einsum("tvij,tvnj->tvni", seq.camera_poses[..., :3, :3], seq.normals.astype(np.float64))[floor]
    assert np.median(n_world[:, 2]) > 0.99


def _box_spec(store_depth=True) -> SceneSpec:
    """A 1 m cube centred at (0, 0, 0.5), seen head-on from (0, -3, 0.5): its front face y = -0.5 is 2.5 m away."""
    box = ObjectSpec(name="s000000_o00_box", shape="box", params=(1.0, 1.0, 1.0), size=1.0, radius=0.87)
    static = Trajectory(times=(0.0,), positions=((0.0, 0.0, 0.5),), rotvecs=((0.0, 0.0, 0.0),))
    pose = look_at([0.0, -3.0, 0.5], [0.0, 0.0, 0.5])
    cams = CameraSpec(width=81, height=61, fx=50.0, fy=50.0, cx=40.0, cy=30.0,
                      static_poses=(tuple(pose.ravel()),))
    return SceneSpec(name="box", index=0, root_seed=0, seed=1, num_frames=2, fps=10.0, num_points=100,
                     objects=(box,), trajectories=(static,), room_size=None, room_ceiling=False, cameras=cams,
                     renderer="raycast", sensor=SensorConfig(model="ideal"), store_normals=True,
                     store_depth=store_depth, store_instance=True)


def test_hand_built_scene_matches_hand_computed_depth_and_pixels():
    seq = generate_sequence(_box_spec())
    # Pixel (u, v) sees the front face when |u - 40| < 10 and |v - 30| < 10: 0.5 m at 2.5 m is 50 * 0.2 = 10 px.
    u, v = np.meshgrid(np.arange(81), np.arange(61))
    inside = (np.abs(u - 40) < 10) & (np.abs(v - 30) < 10)
    outside = (np.abs(u - 40) > 10) | (np.abs(v - 30) > 10)
    for t in range(2):
        assert np.all(seq.depth[t, 0][inside] == 2500) and np.all(seq.instance[t, 0][inside] == 0)
        assert np.all(seq.depth[t, 0][outside] == 0) and np.all(seq.instance[t, 0][outside] == -1)
    # The 19 x 19 interior, plus edge pixels whose rays graze the cube's edges exactly at 10 px (hit or not).
    assert 19 * 19 <= seq.num_valid[0, 0] <= 21 * 21
    pts = seq.points[0, 0].astype(np.float64)
    np.testing.assert_allclose(pts[:, 2], 2.5, atol=1e-6)
    uv = project_points(seq.intrinsics[0], pts)
    np.testing.assert_allclose(uv, np.rint(uv), atol=1e-4)  # back-projected from pixel centres
    assert np.all(np.abs(uv - [40, 30]) <= 10 + 1e-4)
    # The front face's normal is -y in the world: toward the camera, -z in the camera frame.
    np.testing.assert_allclose(seq.normals[0, 0].astype(np.float64), np.tile([0, 0, -1.0], (100, 1)), atol=2e-3)
    # World points of the face: y = -0.5, x and z within the cube.
    w = pts @ seq.camera_poses[0, 0, :3, :3].T + seq.camera_poses[0, 0, :3, 3]
    np.testing.assert_allclose(w[:, 1], -0.5, atol=1e-6)
    assert np.all(np.abs(w[:, 0]) <= 0.5 + 1e-6) and np.all((w[:, 2] >= -1e-6) & (w[:, 2] <= 1.0 + 1e-6))


def test_kinect_points_stay_near_their_meshes():
    """With sensor noise the labels still name the right object: points lie within the noise of its surface."""
    cfg = load_generate_config(CONFIGS / "tiny.yaml", ["generate.sensor=kinect", "generate.objects.count=3"])
    seq = generate_sequence(make_spec(cfg, 2, 0))
    d = np.concatenate(list(object_mesh_distances(seq).values()))
    assert len(d) > 50
    # Axial sigma at 2-3 m is 5-15 mm (Nguyen 2012) plus disparity steps of ~1-2 cm; lateral shifts add a few
    # points off silhouettes. The bulk stays close; a wrong label would put points decimetres away.
    assert np.median(d) < 0.02 and np.percentile(d, 90) < 0.06


def test_depth_mm_to_points_is_backprojection_in_metres_with_a_depth_limit():
    from synthseq.geometry import backproject_depth, depth_mm_to_points

    K = np.array([[100.0, 0, 8], [0, 100.0, 6], [0, 0, 1]])
    depth_mm = np.zeros((12, 16), np.uint16)
    depth_mm[2:5, 3:9] = 1500
    depth_mm[7:9, 10:14] = 3500
    full = depth_mm_to_points(depth_mm, K)
    np.testing.assert_array_equal(full, backproject_depth(depth_mm.astype(np.float32) / 1000.0, K)[0])
    assert full.shape == (26, 3) and full.dtype == np.float32
    near = depth_mm_to_points(depth_mm, K, max_depth_m=3.0)
    assert near.shape == (18, 3) and np.allclose(near[:, 2], 1.5)
