"""Core types and geometry: shape/dtype validation, pose helpers, projection vs a hand-computed K, rotations."""

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from synthseq.geometry import (OPENCV_FROM_OPENGL, backproject_depth, invert_pose, project_points, random_rotation,
                               relative_pose, rotation_angle_deg, transform_points)
from synthseq.types import Camera, PointSequence, sample_fixed


def _pose(R, t):
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


def test_invert_and_relative_pose():
    a = _pose(Rotation.from_euler("XZ", [30, 50], degrees=True).as_matrix(), [1, 2, 3])
    b = _pose(Rotation.from_euler("Y", -20, degrees=True).as_matrix(), [0.5, -1, 2])
    assert np.allclose(invert_pose(a) @ a, np.eye(4))
    a_from_b = relative_pose(a, b)
    p_b = np.array([[0.1, 0.2, 0.3]])
    # a point in frame b, taken to world through b, then into a, equals a_from_b applied to it
    p_world = transform_points(b, p_b)
    assert np.allclose(transform_points(invert_pose(a), p_world), transform_points(a_from_b, p_b))


def test_projection_matches_hand_computed_K():
    cam = Camera.from_focal(500.0, 400.0, 320.0, 240.0, 640, 480)
    uv = project_points(cam.intrinsics, np.array([0.2, -0.1, 2.0]))
    assert np.allclose(uv, [320 + 500 * 0.1, 240 + 400 * -0.05])


def test_backproject_inverts_projection():
    cam = Camera.from_fov(60.0, 64, 48)
    depth = np.zeros((48, 64), np.float32)
    depth[10, 20] = 2.5
    depth[30, 5] = np.nan
    pts, pix = backproject_depth(depth, cam.intrinsics)
    assert pts.shape == (1, 3) and pix.tolist() == [[10, 20]]
    assert np.allclose(project_points(cam.intrinsics, pts.astype(np.float64)), [[20, 10]], atol=1e-4)
    assert pts[0, 2] == pytest.approx(2.5)


def test_opencv_opengl_flip():
    # a point in front of an OpenCV camera (+z) is behind-negative z in OpenGL, and y flips
    p = np.array([0.1, 0.2, 1.0, 1.0])
    q = OPENCV_FROM_OPENGL @ p
    assert np.allclose(q, [0.1, -0.2, -1.0, 1.0])
    assert np.allclose(OPENCV_FROM_OPENGL @ OPENCV_FROM_OPENGL, np.eye(4))


def test_rotvec_round_trip_and_handedness():
    """The rotation-vector convention the trajectories use (scipy's): exp/log round trip up to pi, right-handed."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(200, 3))
    w *= (rng.uniform(0, math.pi - 1e-4, size=200) / np.linalg.norm(w, axis=1))[:, None]
    w[0] = 0.0
    w[1] = [math.pi - 1e-5, 0, 0]
    w[2] = [0, 1e-10, 0]
    R = Rotation.from_rotvec(w).as_matrix()
    np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
    log = Rotation.from_matrix(R).as_rotvec()
    np.testing.assert_allclose(Rotation.from_rotvec(log).as_matrix(), R, atol=1e-6)
    np.testing.assert_allclose(log[3:], w[3:], atol=1e-8)
    # exp of a rotation about z by 90 deg maps x to y (right-handed).
    np.testing.assert_allclose(Rotation.from_rotvec([0, 0, math.pi / 2]).as_matrix() @ [1, 0, 0], [0, 1, 0],
                               atol=1e-12)


@pytest.mark.parametrize("max_angle_rad", [None, 0.3])
def test_random_rotation_is_a_rotation(max_angle_rad):
    rng = np.random.default_rng(1)
    for _ in range(10):
        R = random_rotation(rng, max_angle_rad)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) == pytest.approx(1.0)
        assert max_angle_rad is None or rotation_angle_deg(R) <= math.degrees(max_angle_rad) + 1e-9


def test_sample_fixed():
    rng = np.random.default_rng(0)
    idx = sample_fixed(10, 100, rng)
    assert len(set(idx.tolist())) == 10
    idx = sample_fixed(10, 3, rng)
    assert set(idx.tolist()) == {0, 1, 2} and len(idx) == 10
    assert (sample_fixed(5, 0, rng) == 0).all()


def test_point_sequence_validation_messages():
    ok = dict(points=np.zeros((2, 1, 4, 3), np.float32), num_valid=np.zeros((2, 1), np.int32),
              intrinsics=np.eye(3)[None], image_size=np.array([[4, 3]], np.int32), timestamps=np.zeros(2))
    PointSequence(**ok)
    with pytest.raises(ValueError, match=r"points: expected dtype float32, got float64"):
        PointSequence(**{**ok, "points": np.zeros((2, 1, 4, 3))})
    with pytest.raises(ValueError, match=r"num_valid: expected shape \(2, 1\), got \(3, 1\)"):
        PointSequence(**{**ok, "num_valid": np.zeros((3, 1), np.int32)})
    with pytest.raises(ValueError, match="'box' has no entry in meshes"):
        PointSequence(**ok, object_names=("box",))
    with pytest.raises(ValueError, match="image size must be positive"):
        Camera(np.eye(3), 0, 10)
