"""Tests of `synthseq export`: PLY/PCD/NPZ clouds round trip through open3d.io, TUM trajectories through
two parsers, the overwrite rule and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from synthseq.datasets.shards import FORMAT, FORMAT_VERSION, MANIFEST, ShardWriter, sequence_key, sha256_file
from synthseq.geometry import invert_pose, transform_points
from synthseq.pipelines import cli
from synthseq.types import PointSequence

T, V, N, K = 3, 2, 64, 2


def random_pose(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q @ np.diag(np.sign(np.diag(r)))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    out = np.eye(4)
    out[:3, :3] = q
    out[:3, 3] = rng.normal(size=3)
    return out


def random_sequence(seed: int = 0, normals: bool = True) -> PointSequence:
    """Random points, labels and poses; num_valid < N in some (frame, view) so padding rows exist."""
    rng = np.random.default_rng(seed)
    num_valid = rng.integers(N // 2, N + 20, size=(T, V)).astype(np.int32)
    num_valid[0, 0] = N
    n = rng.normal(size=(T, V, N, 3))
    return PointSequence(
        points=rng.uniform(-1, 1, size=(T, V, N, 3)).astype(np.float32) + np.float32([0, 0, 2]),
        num_valid=num_valid,
        intrinsics=np.tile(np.array([[100.0, 0, 32], [0, 100.0, 24], [0, 0, 1]]), (V, 1, 1)),
        image_size=np.tile(np.array([64, 48], np.int32), (V, 1)),
        timestamps=1000.0 + np.arange(T) / 30.0,
        camera_poses=np.stack([[random_pose(rng) for _ in range(V)] for _ in range(T)]),
        labels=rng.integers(-1, K, size=(T, V, N)).astype(np.int16),
        object_poses=np.stack([[random_pose(rng) for _ in range(K)] for _ in range(T)]),
        normals=(n / np.linalg.norm(n, axis=-1, keepdims=True)).astype(np.float16) if normals else None,
        object_names=("cube", "mug/2"),
        meshes={"cube": (np.eye(3), np.array([[0, 1, 2]])), "mug/2": (np.eye(3), np.array([[0, 2, 1]]))},
        seed=seed, fps=30.0, name="rand")


@pytest.fixture(scope="module")
def seq() -> PointSequence:
    return random_sequence()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, seq) -> Path:
    root = tmp_path_factory.mktemp("export") / "data"
    root.mkdir()
    shard = root / "shard-00000.h5"
    with ShardWriter(shard) as w:
        w.write(sequence_key(0), seq)
        w.write(sequence_key(1), random_sequence(1, normals=False))
    (root / MANIFEST).write_text(json.dumps({
        "format": FORMAT, "format_version": FORMAT_VERSION, "config": {},
        "shards": [{"file": shard.name, "sequence_ids": [sequence_key(0), sequence_key(1)],
                    "bytes": shard.stat().st_size, "sha256": sha256_file(shard)}]}))
    return root


def run_cli(argv, capsys):
    rc = cli.main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def parse_tum_naive(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An independent TUM reader: np.loadtxt + the textbook (x, y, z, w) quaternion -> matrix formula."""
    rows = np.loadtxt(path, comments="#", ndmin=2)
    poses = np.tile(np.eye(4), (len(rows), 1, 1))
    for i, (_, tx, ty, tz, x, y, z, w) in enumerate(rows):
        poses[i, :3, :3] = [[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]]
        poses[i, :3, 3] = (tx, ty, tz)
    return rows[:, 0], poses


@pytest.mark.parametrize("fmt", ["ply", "pcd"])
def test_clouds_round_trip_through_open3d(dataset, seq, tmp_path, capsys, fmt):
    import open3d as o3d

    out = tmp_path / fmt
    rc, stdout, err = run_cli(["export", str(dataset), "--sequence", "0", "--format", fmt, "--out", str(out)],
                              capsys)
    assert rc == 0, err
    assert f"wrote {T * V} {fmt} clouds" in stdout
    for t in range(T):
        for v in range(V):
            n = min(seq.num_valid[t, v], N)
            pcd = o3d.t.io.read_point_cloud(str(out / "clouds" / f"frame-{t:06d}_view-{v}.{fmt}"))
            np.testing.assert_array_equal(pcd.point.positions.numpy(), seq.points[t, v, :n])
            np.testing.assert_array_equal(pcd.point.label.numpy()[:, 0], seq.labels[t, v, :n])
            np.testing.assert_allclose(pcd.point.normals.numpy(), seq.normals[t, v, :n].astype(np.float32))
    # The legacy reader (what most tools use) opens them too.
    legacy = o3d.io.read_point_cloud(str(out / "clouds" / f"frame-000002_view-1.{fmt}"))
    assert len(legacy.points) == min(seq.num_valid[2, 1], N)


def test_trajectories_round_trip_through_tum_parsers(dataset, seq, tmp_path, capsys):
    from synthseq.datasets.trajectory import read_tum_trajectory

    out = tmp_path / "traj"
    rc, _, err = run_cli(["export", str(dataset / "shard-00000.h5"), "--sequence", "000000", "--format", "npz",
                          "--out", str(out)], capsys)
    assert rc == 0, err
    files = sorted(p.name for p in (out / "trajectories").iterdir())
    assert files == ["camera_view-0.txt", "camera_view-1.txt", "object-0_cube.txt", "object-1_mug_2.txt"]
    for name, expected in [("camera_view-0.txt", seq.camera_poses[:, 0]), ("camera_view-1.txt", seq.camera_poses[:, 1]),
                           ("object-0_cube.txt", seq.object_poses[:, 0]), ("object-1_mug_2.txt", seq.object_poses[:, 1])]:
        for reader in (read_tum_trajectory, parse_tum_naive):
            stamps, poses = reader(out / "trajectories" / name)
            np.testing.assert_allclose(stamps, seq.timestamps, rtol=0, atol=1e-9)
            np.testing.assert_allclose(poses, expected, rtol=0, atol=1e-9)
    meta = json.loads((out / "sequence.json").read_text())
    assert meta["frame"] == "camera" and meta["object_names"] == ["cube", "mug/2"]
    np.testing.assert_array_equal(meta["intrinsics"], seq.intrinsics)


def test_npz_world_frame(dataset, seq, tmp_path, capsys):
    out = tmp_path / "world"
    rc, _, err = run_cli(["export", str(dataset), "--sequence", "0", "--format", "npz", "--world", "--out", str(out)],
                         capsys)
    assert rc == 0, err
    with np.load(out / "clouds" / "frame-000001_view-1.npz") as z:
        n = min(seq.num_valid[1, 1], N)
        expected = transform_points(seq.camera_poses[1, 1], seq.points[1, 1, :n].astype(np.float64))
        np.testing.assert_allclose(z["points"], expected, atol=1e-5)
        np.testing.assert_array_equal(z["labels"], seq.labels[1, 1, :n])
        np.testing.assert_array_equal(z["world_from_camera"], seq.camera_poses[1, 1])
        rotated = seq.normals[1, 1, :n].astype(np.float64) @ seq.camera_poses[1, 1, :3, :3].T
        np.testing.assert_allclose(z["normals"].astype(np.float64), rotated, atol=2e-3)
        # Back to the camera frame with the stored pose.
        back = transform_points(invert_pose(z["world_from_camera"]), z["points"].astype(np.float64))
        np.testing.assert_allclose(back, seq.points[1, 1, :n], atol=1e-5)
    assert json.loads((out / "sequence.json").read_text())["frame"] == "world"


def test_refuses_to_overwrite(dataset, tmp_path, capsys):
    out = tmp_path / "again"
    argv = ["export", str(dataset), "--sequence", "1", "--format", "npz", "--out", str(out)]
    assert run_cli(argv, capsys)[0] == 0
    stamp = (out / "sequence.json").stat().st_mtime_ns
    rc, _, err = run_cli(argv, capsys)
    assert rc == 1 and err.count("\n") == 1 and "exist already" in err and "--overwrite" in err
    assert (out / "sequence.json").stat().st_mtime_ns == stamp
    # Other files in the folder are no obstacle, and --overwrite replaces the export.
    (out / "notes.txt").write_text("mine")
    assert run_cli(argv + ["--overwrite"], capsys)[0] == 0
    assert (out / "notes.txt").read_text() == "mine"


def test_bad_input(dataset, tmp_path, capsys):
    out = str(tmp_path / "x")
    rc, _, err = run_cli(["export", str(dataset), "--out", out], capsys)
    assert rc == 1 and err.count("\n") == 1 and "choose one with --sequence" in err and "000000, 000001" in err
    rc, _, err = run_cli(["export", str(dataset), "--sequence", "9", "--out", out], capsys)
    assert rc == 1 and err.count("\n") == 1 and "no sequence '9' (available: 000000, 000001)" in err
    rc, _, err = run_cli(["export", str(tmp_path / "missing"), "--sequence", "0", "--out", out], capsys)
    assert rc == 1 and err.count("\n") == 1 and "missing: no such file or directory" in err
    assert not Path(out).exists()


def test_exports_a_point_cloud_capture_without_poses(tmp_path, capsys):
    pytest.importorskip("synthseq.datasets.real.pointcloud_folder")
    folder = tmp_path / "clouds"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        np.save(folder / f"{i:03d}.npy", rng.uniform(0.5, 1.5, size=(200, 3)).astype(np.float32))
    out = tmp_path / "out"
    rc, stdout, err = run_cli(["export", str(folder), "--format", "ply", "--out", str(out), "--num-points", "100"],
                              capsys)
    assert rc == 0, err
    assert "wrote 2 ply clouds" in stdout and "0 TUM trajectories" in stdout
    rc, _, err = run_cli(["export", str(folder), "--world", "--out", str(tmp_path / "w")], capsys)
    assert rc == 1 and "--world needs camera poses" in err


@pytest.mark.parametrize("fmt", ["ply", "pcd", "npz"])
def test_frames_without_valid_points_give_empty_files(tmp_path, fmt):
    import open3d as o3d

    from synthseq.pipelines.export import export_sequence

    seq = random_sequence(2)
    num_valid = seq.num_valid.copy()
    num_valid[1, 0] = 0
    seq = seq.replace(num_valid=num_valid)
    export_sequence(seq, tmp_path, fmt)
    path = tmp_path / "clouds" / f"frame-000001_view-0.{fmt}"
    if fmt == "npz":
        with np.load(path) as z:
            assert z["points"].shape == (0, 3) and z["labels"].shape == (0,)
    else:
        pcd = o3d.t.io.read_point_cloud(str(path))
        assert "positions" not in pcd.point or len(pcd.point.positions) == 0
        assert len(o3d.io.read_point_cloud(str(path)).points) == 0
