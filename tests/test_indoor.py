"""Indoor scenes (generate.scene: indoor): config errors, plain deterministic specs, furniture and clutter that
rest where they should, cameras never inside geometry and looking at the furniture, motion regimes measured
like the real captures, exact ground truth (points on the meshes), and the bundled config through the Ray
build."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from synthseq.config import from_dict
from synthseq.errors import ConfigError
from synthseq.generator.assets import cluster_vertices, room_geometry
from synthseq.generator.config import GenerateConfig, load_generate_config
from synthseq.generator.indoor import _in_view, point_box_distance, segment_hits_boxes, world_aabb
from synthseq.generator.scene import make_spec
from synthseq.geometry import relative_pose, rotation_angle_deg
from test_geometry import assert_labelled_points_on_their_meshes, distance_to_mesh, world_points

CONFIGS = Path(__file__).resolve().parents[1] / "pipelines" / "configs"
INDOOR = CONFIGS / "indoor.yaml"
SMALL = ["generate.cameras.width=80", "generate.cameras.height=60", "generate.num_frames=6"]


def _indoor(overrides=()):
    return load_generate_config(INDOOR, list(overrides))


# ------------------------------------------------------------------------------------------ config

@pytest.mark.parametrize("data, message", [
    ({"indoor": {"furniture_kinds": ["sofa"]}}, r"^generate\.indoor\.furniture_kinds\[0\]: expected one of table"),
    ({"indoor": {"room_x": [1.0, 3.0]}}, r"^generate\.indoor: rooms must be at least 2 m"),
    ({"indoor": {"camera_height_m": [1.0, 2.6]}}, r"^generate\.indoor\.camera_height_m: cameras up to 2\.6 m"),
    ({"indoor": {"furniture_count": [5, 2]}}, r"^generate\.indoor\.furniture_count: expected \[low, high\]"),
    ({"indoor": {"camera_clearance_m": -1}}, r"^generate\.indoor\.camera_clearance_m: expected a value >= 0"),
    ({"cameras": {"rig": {"num_views": 2}}}, r"^generate\.cameras: an indoor scene is seen by handheld cameras only"),
    ({"room": {"enabled": False}}, r"^generate\.room\.enabled: an indoor scene needs its room"),
    ({"cameras": {"handheld": {"motions": {"rpy": {"distance_m": [2.0, 1.0]}}}}},
     r"^generate\.cameras\.handheld\.motions\.rpy\.distance_m: expected \[low, high\]"),
    ({"cameras": {"handheld": {"motions": {"rpy": {"weight": 0.0}}}}},
     r"^generate\.cameras\.handheld\.motions: expected at least one motion with weight > 0"),
    ({"cameras": {"handheld": {"motions": {"walk": {"walk_speed_m_s": [-1, 1]}}}}},
     r"^generate\.cameras\.handheld\.motions\.walk\.walk_speed_m_s: expected values >= 0"),
    ({"scene": "outdoor"}, r"^generate\.scene: expected one of 'objects', 'indoor'"),
])
def test_bad_indoor_config_one_clear_line(data, message):
    base = {"scene": "indoor", "cameras": {"rig": {"num_views": 0}, "handheld": {"enabled": True}}}
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merged = dict(base[key])
            for k, v in value.items():
                merged[k] = {**merged[k], **v} if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
            base[key] = merged
        else:
            base[key] = value
    with pytest.raises(ConfigError, match=message) as info:
        from_dict(GenerateConfig, base, "generate")
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------ specs

def test_indoor_spec_is_plain_deterministic_and_varied(meshes_dir):
    cfg = _indoor(SMALL)
    a, b = make_spec(cfg, 3, 0), make_spec(cfg, 3, 0)
    assert a == b
    blob = pickle.dumps(a)
    assert b"trimesh" not in blob and b"numpy" not in blob  # names and numbers only
    assert len(blob) < 200_000
    specs = [make_spec(cfg, 3, i) for i in range(6)]
    sizes = np.array([s.room_size for s in specs])
    assert np.all((sizes[:, :2] >= 3.0) & (sizes[:, :2] <= 8.0)) and np.all((sizes[:, 2] >= 2.5) & (sizes[:, 2] <= 3.0))
    assert len({tuple(s) for s in sizes}) == 6
    for s in specs:
        assert s.num_views == 2 and not s.cameras.static_poses
        assert len(s.static_parts) > 20 and 0 <= s.num_objects <= 3
        kinds = {p.obj.name.split("_")[2] for p in s.static_parts if FURNITURE.match(p.obj.name)}
        assert kinds and kinds <= {"table", "desk", "shelf", "cabinet", "counter", "chair"}
    # Real meshes are used: chair meshes as furniture, the rest as clutter.
    parts = [p.obj for s in specs for p in s.static_parts]
    assert any(o.is_mesh_file and o.shape == "chair_model" for o in parts)
    assert any(o.is_mesh_file and o.shape != "chair_model" for o in parts)
    assert any(not o.is_mesh_file for o in parts)


FURNITURE = re.compile(r"^s\d{6}_f\d\d_[a-z]+_(?!c\d+_)")  # s000000_f01_table_top, not ..._table_c0_03_box


def _boxes(spec):
    return [(p.obj, world_aabb(p.obj, p.pose())) for p in spec.static_parts]


def test_clutter_rests_on_furniture_or_floor(meshes_dir):
    cfg = _indoor(SMALL)
    for i in range(4):
        spec = make_spec(cfg, 5, i)
        boxes = _boxes(spec)
        furniture = [b for o, b in boxes if FURNITURE.match(o.name)]
        clutter = [(o, b) for o, b in boxes if not FURNITURE.match(o.name)]
        assert furniture and clutter
        for obj, box in clutter:
            bottom = box[0, 2]
            centre = 0.5 * (box[0, :2] + box[1, :2])
            on_floor = abs(bottom) < 1e-9
            on_top = any(abs(f[1, 2] - bottom) < 1e-6 and np.all(centre >= f[0, :2] - 1e-6)
                         and np.all(centre <= f[1, :2] + 1e-6) for f in furniture)
            assert on_floor or on_top, f"{obj.name} floats at z = {bottom:.3f}"
            if not on_floor:
                assert obj.size <= 0.3 + 1e-9
        # inside the room
        sx, sy, sz = spec.room_size
        for _, box in boxes:
            assert np.all(box[0] >= [-sx / 2 - 1e-6, -sy / 2 - 1e-6, -1e-9]) and np.all(box[1] <= [sx / 2 + 1e-6, sy / 2 + 1e-6, sz])


def test_cameras_never_inside_geometry_and_look_at_the_furniture(meshes_dir):
    cfg = _indoor(SMALL)
    clear = cfg.indoor.camera_clearance_m
    seen = []
    for i in range(6):
        spec = make_spec(cfg, 11, i)
        boxes = np.stack([b for _, b in _boxes(spec)])
        poses = spec.camera_poses()  # (T, V, 4, 4)
        eyes = poses[..., :3, 3].reshape(-1, 3)
        sx, sy, sz = spec.room_size
        assert np.all(np.abs(eyes[:, 0]) <= sx / 2 - clear + 1e-9) and np.all(np.abs(eyes[:, 1]) <= sy / 2 - clear + 1e-9)
        assert np.all(eyes[:, 2] >= clear) and np.all(eyes[:, 2] <= sz - clear)
        assert point_box_distance(eyes, boxes).min() >= clear - 1e-9
        # moving objects' bounding spheres stay off every camera, and each is seen by its view
        for k, traj in enumerate(spec.trajectories):
            pos = traj.positions_at(spec.times())
            d = np.linalg.norm(poses[..., :3, 3] - pos[:, None], axis=-1)
            assert d.min() > spec.objects[k].radius + clear - 1e-9
            seen.append(_in_view(pos, poses[:, k % spec.num_views], cfg.cameras.intrinsics(),
                                 (cfg.cameras.width, cfg.cameras.height)).mean())
        # every view's base looks at a point on the furniture or its clutter, 0.6-2.4 m away, with no box
        # across the line of sight except at its end
        for m in spec.cameras.handheld:
            base = m.base_poses(spec.times()[:1])[0]
            axis = base[:3, 2]
            hits = [b for b in boxes if segment_hits_boxes(base[:3, 3], base[:3, 3] + 3.0 * axis, b[None])[0]]
            assert hits, "the optical axis meets no furniture within 3 m"
            t_hit = min(np.max(np.minimum((b[0] - base[:3, 3]) / np.where(axis == 0, 1e-12, axis),
                                          (b[1] - base[:3, 3]) / np.where(axis == 0, 1e-12, axis))) for b in hits)
            assert 0.3 <= t_hit <= 2.5
    assert len(seen) >= 6 and np.mean(np.array(seen) >= 0.5) >= 0.8, seen


@pytest.mark.parametrize("regime, rot_deg, trans_cm", [
    ("rpy", (15.0, 30.0), (1.5, 4.5)),    # TUM fr1/rpy at gap 10: 22.1 deg, 2.9 cm
    ("xyz", (2.0, 6.0), (8.0, 15.0)),     # fr1/xyz: 2.6-4.5 deg, 10.3-12.2 cm
    ("walk", (1.0, 3.5), (3.5, 7.0)),     # 7-Scenes redkitchen: 2.0 deg, 5.1 cm
])
def test_motion_regimes_match_the_real_captures_at_gap_10(regime, rot_deg, trans_cm, meshes_dir):
    others = [f"generate.cameras.handheld.motions.{r}.weight=0" for r in ("rpy", "xyz", "walk") if r != regime]
    cfg = _indoor(["generate.num_frames=45"] + others)
    rot, trans = [], []
    for i in range(6):
        P = make_spec(cfg, 1, i).camera_poses()
        for v in range(P.shape[1]):
            rel = relative_pose(P[:-10, v], P[10:, v])
            rot.append(rotation_angle_deg(rel[:, :3, :3]))
            trans.append(100 * np.linalg.norm(rel[:, :3, 3], axis=1))
    r, t = np.median(np.concatenate(rot)), np.median(np.concatenate(trans))
    assert rot_deg[0] <= r <= rot_deg[1], f"{regime}: median rotation {r:.2f} deg at gap 10"
    assert trans_cm[0] <= t <= trans_cm[1], f"{regime}: median translation {t:.2f} cm at gap 10"


def test_walking_camera_keeps_its_target_on_the_optical_axis(meshes_dir):
    cfg = _indoor(["generate.cameras.handheld.motions.rpy.weight=0", "generate.cameras.handheld.motions.xyz.weight=0"])
    spec = make_spec(cfg, 2, 0)
    for m in spec.cameras.handheld:
        assert m.target is not None and np.linalg.norm(m.velocity_m_s) > 0.05
        base = m.base_poses(spec.times())
        to_target = np.asarray(m.target) - base[:, :3, 3]
        cos = np.einsum("ti,ti->t", base[:, :3, 2], to_target) / np.linalg.norm(to_target, axis=1)
        assert np.all(cos > 1 - 1e-9)
        assert np.linalg.norm(base[-1, :3, 3] - base[0, :3, 3]) > 0.05


def test_cluster_vertices_simplifies_and_keeps_the_shape(meshes_dir):
    from synthseq.generator.assets import load_mesh

    v, f = load_mesh(meshes_dir / "bunny.ply")
    v2, f2 = cluster_vertices(v, f, 24)
    assert len(f2) < len(f) / 4 and f2.max() < len(v2)
    ext = v.max(0) - v.min(0)
    assert np.allclose(v2.max(0) - v2.min(0), ext, atol=ext.max() / 12)
    assert np.all(f2[:, 0] != f2[:, 1]) and np.all(f2[:, 1] != f2[:, 2])


# ------------------------------------------------------------------------------------------ ground truth

@pytest.mark.parametrize("index, renderer", [(0, "moderngl"), (1, "raycast")])
def test_indoor_points_lie_on_their_meshes_and_the_static_scene(index, renderer, meshes_dir):
    from synthseq.generator.sequence import generate_sequence

    cfg = _indoor(SMALL + ["generate.sensor=ideal", "generate.num_frames=4", "generate.objects.count=3",
                           f"generate.renderer={renderer}"])
    spec = make_spec(cfg, 7, index)
    seq = generate_sequence(spec)
    labels = seq.labels
    assert (labels == -1).sum() > 100 and (labels >= 0).sum() > 100  # the moving objects are in view
    # moving objects: back-projected points moved by the GT camera pose and the inverse object pose
    assert_labelled_points_on_their_meshes(seq)
    # background: on the room or the static furniture/clutter, in world coordinates
    world = world_points(seq)
    rv, rf = room_geometry(spec.room_size, spec.room_ceiling)
    sv, sf = spec.static_geometry()
    d = distance_to_mesh(np.concatenate([rv, sv]), np.concatenate([rf, sf + len(rv)]), world[labels == -1])
    assert d.max() < 1e-3, f"a background point {d.max() * 1000:.3f} mm off the room and furniture"
    # most of what the moving camera sees is furniture and clutter, at real-capture distances
    on_static = distance_to_mesh(sv, sf, world[labels == -1]) < 1e-3
    assert on_static.mean() > 0.3
    z = seq.points[..., 2][seq.points[..., 2] > 0]
    assert 0.5 < np.median(z) < 2.5


def test_indoor_sequence_is_deterministic(meshes_dir):
    from synthseq.generator.sequence import generate_sequence

    cfg = _indoor(SMALL + ["generate.num_frames=3"])
    a, b = generate_sequence(make_spec(cfg, 4, 1)), generate_sequence(make_spec(cfg, 4, 1))
    for name in ("points", "labels", "num_valid", "camera_poses", "object_poses", "normals"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    c = generate_sequence(make_spec(cfg, 4, 2))
    assert not np.array_equal(a.points, c.points)


@pytest.mark.slow
def test_indoor_config_builds_with_ray_and_verifies(tmp_path, capsys, meshes_dir):
    """The bundled config through `synthseq build indoor` (a real local Ray cluster) and `synthseq verify`."""
    from synthseq.datasets.shards import ShardReader, read_manifest
    from synthseq.pipelines.cli import main

    out = tmp_path / "indoor"
    assert main(["build", "indoor", "--out", str(out), "--num-sequences", "2", "--sequences-per-shard", "1",
                 "--no-progress", "--set", "generate.num_frames=4", "--set", "generate.cameras.width=80",
                 "--set", "generate.cameras.height=60"]) == 0
    assert main(["verify", str(out)]) == 0
    assert "OK" in capsys.readouterr().out
    entry = read_manifest(out)["shards"][0]
    with ShardReader(out / entry["file"]) as r:
        seq = r.read(entry["sequence_ids"][0])
    assert seq.points.shape == (4, 2, 2048, 3) and (seq.num_valid > 0).all()
    assert not np.allclose(seq.camera_poses[0], seq.camera_poses[-1])
