"""Scene specs: config validation (one clear line per bad input), seeds, make_spec as plain deterministic data,
objects kept inside the room."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest

from synthseq.config import from_dict
from synthseq.errors import ConfigError, DataError
from synthseq.generator.assets import object_geometry
from synthseq.generator.config import GenerateConfig, load_generate_config, resolve_paths
from synthseq.generator.scene import SceneSpec, make_spec, sequence_seed

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "pipelines" / "configs"


def _cfg(data: dict | None = None) -> GenerateConfig:
    return from_dict(GenerateConfig, data or {}, "generate")


# ------------------------------------------------------------------------------------------ config errors

@pytest.mark.parametrize("data, error, message", [
    ({"bogus": 1}, ConfigError, r"^generate\.bogus: unknown key \(known keys: cameras, fps, "),
    ({"cameras": {"rig": {"radious": 2}}}, ConfigError, r"^generate\.cameras\.rig\.radious: unknown key"),
    ({"num_frames": "ten"}, ConfigError, r"^generate\.num_frames: expected int, got 'ten'$"),
    ({"fps": "fast"}, ConfigError, r"^generate\.fps: expected float, got 'fast'$"),
    ({"num_frames": 0}, ConfigError, r"^generate\.num_frames: expected a value > 0, got 0$"),
    ({"num_points": -5}, ConfigError, r"^generate\.num_points: expected a value > 0, got -5$"),
    ({"objects": {"count": 0}}, ConfigError, r"^generate\.objects\.count: expected a positive int, got 0$"),
    ({"objects": {"count": [-1, 3]}}, ConfigError, r"^generate\.objects\.count: expected a positive int"),
    ({"objects": {"count": [4, 2]}}, ConfigError, r"^generate\.objects\.count: expected \[low, high\] with low"),
    ({"cameras": {"rig": {"num_views": -1}}}, ConfigError, r"^generate\.cameras\.rig\.num_views: expected a value >= 0"),
    ({"cameras": {"rig": {"num_views": 0}}}, ConfigError, r"^generate\.cameras: no views"),
    ({"cameras": {"width": 0}}, ConfigError, r"^generate\.cameras\.width: expected a value > 0, got 0$"),
    ({"cameras": {"height": 0}}, ConfigError, r"^generate\.cameras\.height: expected a value > 0, got 0$"),
    ({"cameras": {"fx": -3.0}}, ConfigError, r"^generate\.cameras\.fx: expected a value > 0"),
    ({"renderer": "blender"}, ConfigError, r"^generate\.renderer: expected one of 'raycast', 'pyrender'(, '[a-z]+')*, got 'blender'$"),
    ({"sensor": "lidar"}, ConfigError, r"^generate\.sensor: expected one of 'ideal', 'kinect'"),
    ({"sensor": {"dropout": 0.1}}, ConfigError, r"^generate\.sensor\.dropout: unknown key"),
    ({"objects": {"primitives": ["blob"]}}, ConfigError, r"^generate\.objects\.primitives\[0\]: expected one of 'box'"),
    ({"objects": {"size": [0.1, 3.0]}}, ConfigError, r"^generate\.objects\.size: objects up to 3\.0 m"),
    ({"objects": {"mesh_ratio": 1.5}}, ConfigError, r"^generate\.objects\.mesh_ratio: expected a value <= 1"),
    ({"objects": {"mesh_detail": 4}}, ConfigError,
     r"^generate\.objects\.mesh_detail: expected 0 \(full geometry\) or at least 8"),
    ({"objects": {"mesh_detail": -1}}, ConfigError, r"^generate\.objects\.mesh_detail: expected a value >= 0"),
    ({"trajectories": {"kind": "teleport"}}, ConfigError, r"^generate\.trajectories\.kind: expected one of"),
    ({"cameras": {"rig": {"radius": 3.5}}}, ConfigError, r"^generate\.cameras\.rig: cameras .* must stay inside"),
    ({"cameras": {"handheld": {"frequency_hz": [-1, 1]}}}, ConfigError,
     r"^generate\.cameras\.handheld\.frequency_hz: expected values >= 0"),
    ({"trajectories": {"num_keyframes": 1}}, ConfigError, r"^generate\.trajectories\.num_keyframes: expected a value >= 2"),
])
def test_bad_config_one_clear_line(data, error, message):
    with pytest.raises(error, match=message) as info:
        _cfg(data)
    assert "\n" not in str(info.value)


def test_missing_mesh_folder_and_file(tmp_path):
    cfg = _cfg({"objects": {"mesh_dir": str(tmp_path / "no_such_dir")}})
    with pytest.raises(FileNotFoundError, match=r"^generate\.objects\.mesh_dir: mesh folder .*no_such_dir not found$"):
        make_spec(cfg, 0, 0)
    cfg = _cfg({"objects": {"mesh_files": [str(tmp_path / "gone.stl")]}})
    with pytest.raises(FileNotFoundError, match=r"^generate\.objects\.mesh_files\[0\]: mesh file .*gone\.stl not found$"):
        make_spec(cfg, 0, 0)


def test_mesh_with_no_faces_fails_in_make_spec(tmp_path):
    p = tmp_path / "points.ply"
    p.write_text("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
                 "end_header\n0 0 0\n1 0 0\n0 1 0\n")
    cfg = _cfg({"objects": {"mesh_files": [str(p)], "primitives": [], "count": 1}})
    with pytest.raises(DataError, match=r"points\.ply: mesh has no faces"):
        make_spec(cfg, 0, 0)


def test_relative_mesh_paths_resolve_against_the_config_file(tmp_path):
    import trimesh

    (tmp_path / "cfg" / "meshes").mkdir(parents=True)
    trimesh.creation.box().export(tmp_path / "cfg" / "meshes" / "cube.stl")
    (tmp_path / "cfg" / "c.yaml").write_text("generate:\n  objects:\n    mesh_dir: meshes\n    primitives: []\n")
    cfg = load_generate_config(tmp_path / "cfg" / "c.yaml")
    assert cfg.objects.mesh_dir == str((tmp_path / "cfg" / "meshes").resolve())
    spec = make_spec(cfg, 0, 0)
    assert all(o.shape == "cube" and o.path.endswith("cube.stl") for o in spec.objects)
    assert resolve_paths(cfg, "/elsewhere").objects.mesh_dir == cfg.objects.mesh_dir  # absolute kept
    with pytest.raises(ConfigError, match=r"c2\.yaml: generate\.num_frames: expected a value > 0"):
        (tmp_path / "cfg" / "c2.yaml").write_text("generate:\n  num_frames: 0\n")
        load_generate_config(tmp_path / "cfg" / "c2.yaml")


def test_bundled_configs_load(meshes_dir):
    tiny = load_generate_config(CONFIGS / "tiny.yaml")
    assert tiny.sensor.model == "ideal" and tiny.cameras.num_views <= 2 and tiny.num_points == 256
    default = load_generate_config(CONFIGS / "default.yaml")
    assert default.cameras.num_views == 5 and (default.cameras.width, default.cameras.height) == (320, 240)
    assert default.room.enabled and default.sensor.model == "kinect" and default.objects.count == (10, 10)
    assert Path(default.objects.mesh_dir).resolve() == meshes_dir.resolve()
    spec = make_spec(default, 0, 3)
    assert spec.num_views == 5 and spec.num_objects == 10
    indoor = load_generate_config(CONFIGS / "indoor.yaml")
    assert indoor.scene == "indoor" and (indoor.cameras.width, indoor.cameras.height) == (320, 240)
    assert indoor.cameras.num_views == 2 and set(indoor.cameras.handheld.motions) == {"rpy", "xyz", "walk"}
    assert Path(indoor.objects.mesh_dir).resolve() == meshes_dir.resolve()
    spec = make_spec(indoor, 0, 3)
    assert spec.num_views == 2 and spec.static_parts and not spec.cameras.static_poses


# ------------------------------------------------------------------------------------------ seeds and specs

def test_sequence_seed_is_stable():
    assert sequence_seed(0, 0) == 3817276669784213659  # pinned: sha256, the same on every machine
    assert sequence_seed(42, 7) == 6240464170564994580
    seeds = {sequence_seed(0, i) for i in range(1000)} | {sequence_seed(1, i) for i in range(1000)}
    assert len(seeds) == 2000 and all(0 <= s < 2 ** 63 for s in seeds)


def _plain(value, path="spec"):
    """Assert ``value`` holds only names and numbers (no arrays, no trimesh objects)."""
    if dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            _plain(getattr(value, f.name), f"{path}.{f.name}")
    elif isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            _plain(v, f"{path}[{i}]")
    else:
        assert value is None or isinstance(value, (str, int, float, bool)), f"{path}: {type(value)}"


def test_make_spec_is_plain_small_and_deterministic():
    cfg = _cfg({"objects": {"count": [2, 6]}, "cameras": {"handheld": {"enabled": True}}})
    a, b = make_spec(cfg, 5, 11), make_spec(cfg, 5, 11)
    assert isinstance(a, SceneSpec) and a == b and hash(a) == hash(b)
    assert a.seed == sequence_seed(5, 11) and a.name == "000011"
    _plain(a)
    blob = pickle.dumps(a)
    assert len(blob) < 20_000
    assert pickle.loads(blob) == a
    assert make_spec(cfg, 5, 12) != a
    names = [o.name for o in a.objects]
    assert len(set(names)) == len(names) and all("/" not in n and n.startswith("s000011_o") for n in names)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.seed = 1  # type: ignore[misc]


def test_make_spec_mixes_meshes_and_primitives(meshes_dir):
    cfg = _cfg({"objects": {"count": 10, "mesh_dir": str(meshes_dir), "mesh_ratio": 0.5}})
    kinds = [o.is_mesh_file for i in range(5) for o in make_spec(cfg, 0, i).objects]
    assert 10 < sum(kinds) < 40


@pytest.mark.parametrize("kind, detail", [("spline", 0), ("constant_velocity", 0), ("spline", 32)])
def test_no_object_intersects_the_room(kind, detail, meshes_dir):
    cfg = _cfg({"num_frames": 60, "objects": {"count": 8, "size": [0.3, 0.7], "mesh_dir": str(meshes_dir),
                                              "region": [3.0, 3.0, 2.0], "mesh_detail": detail},
                "room": {"size": [3.2, 3.4, 2.2], "margin": 0.02},
                "trajectories": {"kind": kind, "speed": [0.5, 1.5], "angular_speed_deg": [90, 180]},
                "cameras": {"rig": {"radius": 1.4, "radius_jitter": 0.1, "height": 1.0}}})
    sx, sy, sz = cfg.room.size
    for index in range(4):
        spec = make_spec(cfg, 1, index)
        poses = spec.object_poses()
        for k, obj in enumerate(spec.objects):
            simplified = obj.is_mesh_file and detail
            assert (obj.detail, obj.simplify) == ((detail, "quadric") if simplified else (0, "cluster"))
            v, _ = object_geometry(obj)
            assert np.linalg.norm(v, axis=1).max() <= obj.radius + 1e-9
            world = np.einsum("tij,mj->tmi", poses[:, k, :3, :3], v) + poses[:, k, None, :3, 3]
            assert world[..., 2].min() >= 0.02 - 1e-9, obj.name                 # above the floor
            assert np.abs(world[..., 0]).max() <= sx / 2 - 0.02 + 1e-9, obj.name  # inside the walls
            assert np.abs(world[..., 1]).max() <= sy / 2 - 0.02 + 1e-9, obj.name
            assert world[..., 2].max() <= sz - 0.02 + 1e-9, obj.name


def test_config_round_trips_through_a_plain_dict(meshes_dir):
    import json

    from synthseq.config import to_dict

    for name in ("tiny.yaml", "default.yaml"):
        cfg = load_generate_config(CONFIGS / name)
        data = json.loads(json.dumps(to_dict(cfg)))  # what the build writes into config.yaml and every shard
        assert from_dict(GenerateConfig, data, "generate") == cfg


def test_cameras_within_reach_of_objects_warn(caplog):
    with caplog.at_level("WARNING", logger="synthseq.generator.config"):
        _cfg({"objects": {"region": [2.0, 2.0, 1.5], "size": [0.2, 0.4]}, "cameras": {"rig": {"radius": 1.2}}})
    assert any("generate.cameras.rig: cameras as close as 1.00 m" in r.getMessage() for r in caplog.records)


def test_objects_are_kept_apart_when_there_is_room():
    cfg = _cfg({"num_frames": 20, "objects": {"count": 4, "size": [0.2, 0.3], "region": [2.0, 2.0, 1.5]}})
    for index in range(10):
        spec = make_spec(cfg, 0, index)
        centres = spec.object_poses()[:, :, :3, 3]  # (T, K, 3)
        radii = np.array([o.radius for o in spec.objects])
        for a in range(spec.num_objects):
            for b in range(a):
                gap = np.linalg.norm(centres[:, a] - centres[:, b], axis=-1) - radii[a] - radii[b]
                assert gap.min() >= 0, (index, a, b)


def test_static_objects_rest_on_the_floor(meshes_dir):
    cfg = _cfg({"num_frames": 5, "objects": {"count": 6, "static_ratio": 1.0, "mesh_dir": str(meshes_dir)}})
    for index in range(3):
        spec = make_spec(cfg, 0, index)
        poses = spec.object_poses()
        for k, obj in enumerate(spec.objects):
            assert spec.trajectories[k].kind == "static"
            np.testing.assert_array_equal(poses[0, k], poses[-1, k])
            np.testing.assert_allclose(poses[0, k, 2, :3], [0, 0, 1], atol=1e-12)  # yaw only: upright
            v, _ = object_geometry(obj)
            lowest = (v @ poses[0, k, :3, :3].T + poses[0, k, :3, 3])[:, 2].min()
            assert -1e-9 <= lowest <= 0.01 * obj.size, (obj.name, lowest)
    mixed = make_spec(_cfg({"objects": {"count": 20, "static_ratio": 0.5}}), 0, 0)
    kinds = [t.kind for t in mixed.trajectories]
    assert 3 <= kinds.count("static") <= 17
