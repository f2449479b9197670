"""Cameras: OpenCV-axes look-at, intrinsics and projection, the static rig, the handheld motion."""

from __future__ import annotations

import math

import numpy as np
import pytest

from synthseq.config import from_dict
from synthseq.generator.cameras import HandheldMotion, rig_poses, sample_camera_spec
from synthseq.generator.config import CamerasConfig
from synthseq.geometry import OPENCV_FROM_OPENGL, invert_pose, look_at, project_points, rotation_angle_deg
from synthseq.types import Camera


def test_look_at_gives_opencv_axes():
    # From (2, 0, 1) looking at (0, 0, 1) with z up: forward = -x, right = +y, down = -z.
    T = look_at([2.0, 0.0, 1.0], [0.0, 0.0, 1.0])
    np.testing.assert_allclose(T[:3, 2], [-1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(T[:3, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(T[:3, 1], [0, 0, -1], atol=1e-12)
    np.testing.assert_allclose(T[:3, 3], [2, 0, 1])
    np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-12)
    assert np.linalg.det(T[:3, :3]) == pytest.approx(1.0)
    K = Camera.from_focal(100.0, 100.0, 50.0, 40.0, 101, 81).intrinsics
    cam_from_world = invert_pose(T)

    def pixel(p_world):
        p = cam_from_world[:3, :3] @ p_world + cam_from_world[:3, 3]
        return project_points(K, p[None])[0], p[2]

    uv, z = pixel(np.array([0.0, 0.0, 1.0]))
    np.testing.assert_allclose(uv, [50, 40])
    assert z == pytest.approx(2.0)
    uv_up, _ = pixel(np.array([0.0, 0.0, 1.5]))       # above the target: higher in the image (smaller v)
    assert uv_up[1] < 40 and uv_up[0] == pytest.approx(50)
    uv_right, _ = pixel(np.array([0.0, 0.5, 1.0]))    # +y is on the camera's right (larger u)
    assert uv_right[0] > 50 and uv_right[1] == pytest.approx(40)


def test_look_at_opengl_conversion_and_degenerate_up():
    T = look_at([0.0, 0.0, 3.0], [0.0, 0.0, 0.0])  # straight down, parallel to up
    np.testing.assert_allclose(T[:3, 2], [0, 0, -1], atol=1e-12)
    assert np.linalg.det(T[:3, :3]) == pytest.approx(1.0)
    # The OpenGL camera (pyrender) looks down its -z: the same optical axis.
    T_gl = T @ OPENCV_FROM_OPENGL
    np.testing.assert_allclose(-T_gl[:3, 2], T[:3, 2], atol=1e-12)
    np.testing.assert_allclose(T_gl[:3, 1], -T[:3, 1], atol=1e-12)  # OpenGL y up = OpenCV -y
    with pytest.raises(ValueError, match="eye and target coincide"):
        look_at([1, 1, 1], [1, 1, 1])


def test_projection_matches_hand_computed_K():
    K = Camera.from_focal(500.0, 400.0, 160.0, 120.0, 320, 240).intrinsics
    # u = fx x / z + cx = 500 * 0.1 / 2 + 160 = 185; v = fy y / z + cy = 400 * -0.2 / 2 + 120 = 80.
    np.testing.assert_allclose(project_points(K, np.array([[0.1, -0.2, 2.0]])), [[185.0, 80.0]])
    cfg = from_dict(CamerasConfig, {"width": 320, "height": 240, "fov_deg": 90.0}, "generate.cameras")
    fx, fy, cx, cy = cfg.intrinsics()
    assert fx == pytest.approx(160.0) and fy == pytest.approx(160.0)  # 0.5 * 320 / tan(45 deg)
    assert (cx, cy) == (159.5, 119.5)
    cfg = from_dict(CamerasConfig, {"fx": 525.0, "fy": 520.0, "cx": 319.5, "cy": 239.5, "width": 640,
                                    "height": 480}, "generate.cameras")
    assert cfg.intrinsics() == (525.0, 520.0, 319.5, 239.5)


def test_rig_looks_at_target_evenly_spaced():
    target = np.array([0.0, 0.0, 0.6])
    poses = rig_poses(4, 2.5, 1.5, target, azimuth0=0.3)
    for T in poses:
        eye = T[:3, 3]
        assert math.hypot(eye[0], eye[1]) == pytest.approx(2.5) and eye[2] == pytest.approx(1.5)
        d = (target - eye) / np.linalg.norm(target - eye)
        np.testing.assert_allclose(T[:3, 2], d, atol=1e-12)
        assert T[2, 0] == pytest.approx(0.0, abs=1e-12)  # image rows stay level (x axis horizontal)
    az = np.arctan2(poses[:, 1, 3], poses[:, 0, 3])
    np.testing.assert_allclose(np.diff(np.unwrap(az)), math.pi / 2)
    assert az[0] == pytest.approx(0.3)


def test_handheld_motion_rates_like_tum_fr1():
    cfg = from_dict(CamerasConfig, {"rig": {"num_views": 0}, "handheld": {"enabled": True}}, "generate.cameras")
    rates = []
    for seed in range(5):
        spec = sample_camera_spec(cfg, np.random.default_rng(seed))
        assert spec.num_views == 1 and spec.static_poses == () and len(spec.handheld) == 1
        hh: HandheldMotion = spec.handheld[0]
        times = np.arange(0, 10.0, 1 / 30)
        poses = spec.poses(times)[:, 0]
        base = np.asarray(hh.base).reshape(4, 4)
        delta = invert_pose(base) @ poses
        assert np.abs(delta[:, :3, 3]).max() <= 0.1 + 1e-9  # xyz amplitude
        rel = np.swapaxes(poses[:-1, :3, :3], 1, 2) @ poses[1:, :3, :3]
        ang = rotation_angle_deg(rel) * 30
        rates.append(ang)
        # Peak rate per axis 2 pi f A with A = 12 deg, f in [0.25, 0.5] Hz: 19..38 deg/s.
        peak_axis = 2 * math.pi * np.asarray(hh.rpy_frequency_hz) * np.degrees(hh.rpy_amplitude_rad)
        assert np.all((peak_axis >= 18.8) & (peak_axis <= 37.8))
    rates = np.concatenate(rates)
    assert 15.0 < np.mean(rates) < 50.0 and rates.max() < 90.0


def test_several_handheld_cameras_follow_the_rig():
    cfg = from_dict(CamerasConfig, {"rig": {"num_views": 2}, "handheld": {"enabled": True, "num_views": 3}},
                    "generate.cameras")
    assert cfg.num_views == 5
    spec = sample_camera_spec(cfg, np.random.default_rng(0))
    poses = spec.poses(np.arange(10) / 30.0)
    assert poses.shape == (10, 5, 4, 4)
    np.testing.assert_array_equal(poses[0, :2], poses[-1, :2])  # static first
    for v in range(2, 5):
        assert not np.allclose(poses[0, v], poses[-1, v])       # then the moving ones, each its own
    assert not np.allclose(poses[:, 2], poses[:, 3])
