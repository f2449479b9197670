"""Quaternion conventions (synthseq/geometry.py), TUM trajectory read/write, association."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synthseq.datasets.trajectory import associate_timestamps, read_tum_trajectory, write_tum_trajectory
from synthseq.errors import DataError
from synthseq.geometry import matrix_to_quaternion, quaternion_to_matrix, relative_pose, rotation_angle_deg


def _random_rotations(rng, n):
    q = rng.normal(size=(n, 4))
    return quaternion_to_matrix(q / np.linalg.norm(q, axis=1, keepdims=True))


def test_quaternion_known_values():
    # 90 deg about z, scalar last: (0, 0, sin45, cos45) maps x to y.
    R = quaternion_to_matrix([0.0, 0.0, math.sqrt(0.5), math.sqrt(0.5)])
    np.testing.assert_allclose(R @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-15)
    # 180 deg about x.
    np.testing.assert_allclose(quaternion_to_matrix([1.0, 0, 0, 0]), np.diag([1.0, -1.0, -1.0]), atol=1e-15)
    np.testing.assert_allclose(quaternion_to_matrix([0, 0, 0, 1.0]), np.eye(3))


def test_quaternion_matrix_round_trip_including_near_180_degrees():
    rng = np.random.default_rng(0)
    R = _random_rotations(rng, 500)
    # Rotations near 180 deg, where the trace branch would be ill-conditioned.
    axes = rng.normal(size=(50, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    near_pi = quaternion_to_matrix(np.concatenate([axes, np.full((50, 1), 1e-9)], axis=1))
    R = np.concatenate([R, near_pi])
    q = matrix_to_quaternion(R)
    assert q.shape == (550, 4)
    assert np.all(q[:, 3] >= 0)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(quaternion_to_matrix(q), R, atol=1e-12)
    assert matrix_to_quaternion(np.eye(3)).tolist() == [0.0, 0.0, 0.0, 1.0]


def test_write_read_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    T = 40
    poses = np.tile(np.eye(4), (T, 1, 1))
    poses[:, :3, :3] = _random_rotations(rng, T)
    poses[:, :3, 3] = rng.normal(size=(T, 3)) * 3
    ts = 1305031229.528784 + np.arange(T) / 30.0
    path = tmp_path / "sub" / "traj.txt"
    write_tum_trajectory(path, ts, poses, header="estimate\nsecond line")
    assert path.read_text().startswith("# estimate\n# second line\n# timestamp tx ty tz qx qy qz qw\n")
    ts2, poses2 = read_tum_trajectory(path)
    np.testing.assert_array_equal(ts2, ts)
    np.testing.assert_array_equal(poses2[:, :3, 3], poses[:, :3, 3])
    np.testing.assert_allclose(poses2, poses, atol=1e-12)


def test_write_rejects_bad_shapes(tmp_path):
    with pytest.raises(ValueError, match=r"\(T, 4, 4\)"):
        write_tum_trajectory(tmp_path / "x.txt", np.zeros(3), np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="finite"):
        write_tum_trajectory(tmp_path / "x.txt", [np.nan], np.eye(4)[None])


def test_reads_tum_groundtruth_and_matches_provenance(tum_xyz_pair_dir):
    ts, poses = read_tum_trajectory(tum_xyz_pair_dir / "groundtruth.txt")
    assert ts.shape == (50,) and poses.shape == (50, 4, 4)
    # First row: 1305031102.0060 1.3814 0.6327 1.7013 0.6655 0.6018 -0.2831 -0.3389
    assert ts[0] == pytest.approx(1305031102.006)
    np.testing.assert_allclose(poses[0, :3, 3], [1.3814, 0.6327, 1.7013])
    np.testing.assert_allclose(poses[:, :3, :3] @ np.swapaxes(poses[:, :3, :3], 1, 2), np.tile(np.eye(3), (50, 1, 1)),
                               atol=1e-12)
    # PROVENANCE.md: relative motion depth 1 -> 2 = 2.14 deg, t = (-0.0044, 0.0072, 0.0392) m.
    idx = associate_timestamps([1305031102.160407, 1305031102.262886], ts, 0.02)
    assert np.all(idx >= 0)
    rel = relative_pose(poses[idx[0]], poses[idx[1]])
    angle = rotation_angle_deg(rel[:3, :3])
    assert angle == pytest.approx(2.14, abs=0.02)
    np.testing.assert_allclose(rel[:3, 3], [-0.0044, 0.0072, 0.0392], atol=3e-4)


def test_reads_evo_trajectories(real_dir):
    ts, poses = read_tum_trajectory(real_dir / "trajectories_evo" / "freiburg1_xyz-groundtruth.txt")
    assert poses.shape == (3000, 4, 4)
    ts2, poses2 = read_tum_trajectory(real_dir / "trajectories_evo" / "freiburg1_xyz-rgbdslam.txt")
    assert poses2.shape == (788, 4, 4) and ts2[0] == 1305031102.160407


@pytest.mark.parametrize("text, match", [
    ("1 2 3 4 0 0 0 1 9\n", r":1: expected 8 numbers"),
    ("# c\n1 2 3 4 0 0 0\n", r":2: expected 8 numbers"),
    ("1 2 3 x 0 0 0 1\n", r":1: expected 8 numbers"),
    ("1 2 3 nan 0 0 0 1\n", r":1: non-finite"),
    ("1 2 3 4 0 0 0 2\n", r":1: quaternion .* norm 2"),
    ("1 0 0 0 0 0 0 1\n1 0 0 0 0 0 0 1\n", r":2: timestamp 1.0 not after"),
    ("# only comments\n\n", r"no poses"),
])
def test_malformed_rows_name_file_and_line(tmp_path, text, match):
    path = tmp_path / "gt.txt"
    path.write_text(text)
    with pytest.raises(DataError, match=match) as e:
        read_tum_trajectory(path)
    assert str(path) in str(e.value)


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_tum_trajectory(tmp_path / "nope.txt")
    p = tmp_path / "bin.txt"
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match="UTF-8"):
        read_tum_trajectory(p)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300) | st.text(alphabet="0123456789.-+eE #\n\tnaif,x", max_size=300))
def test_property_malformed_trajectory_only_raises_data_error(tmp_path, data):
    path = tmp_path / "gt.txt"
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    try:
        ts, poses = read_tum_trajectory(path)
    except DataError as e:
        assert str(path) in str(e)
    else:
        assert poses.shape == (ts.shape[0], 4, 4) and np.all(np.isfinite(poses))


def test_associate_timestamps():
    ref = np.array([0.0, 0.1, 0.2, 0.3])
    idx = associate_timestamps([-0.5, 0.01, 0.149, 0.151, 0.31, 0.5], ref, 0.02)
    assert idx.tolist() == [-1, 0, -1, -1, 3, -1]
    assert associate_timestamps([0.04, 0.06], ref, 0.05).tolist() == [0, 1]
    assert associate_timestamps([1.0], np.array([1.01]), 0.02).tolist() == [0]
    assert associate_timestamps([1.0], np.array([]), 0.02).tolist() == [-1]
