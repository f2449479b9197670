"""Trajectories: natural cubic splines, smooth room-safe SE(3) motion."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scipy.spatial.transform import Rotation

from synthseq.generator.trajectories import Trajectory, natural_cubic_spline, sample_trajectory
from synthseq.geometry import rotation_angle_deg


def _angle(Ra, Rb):
    return np.radians(rotation_angle_deg(np.swapaxes(Ra, -1, -2) @ Rb))


def test_natural_cubic_spline_interpolates_and_is_c2():
    rng = np.random.default_rng(2)
    t = np.array([0.0, 0.4, 1.1, 1.5, 2.0])
    y = rng.normal(size=(5, 3))
    np.testing.assert_allclose(natural_cubic_spline(t, y, t), y, atol=1e-12)
    # Second derivative continuous across knots, zero at the ends.
    h = 1e-4
    for knot in t[1:-1]:
        q = np.array([knot - 2 * h, knot - h, knot, knot + h, knot + 2 * h])
        s = natural_cubic_spline(t, y, q)
        left = (s[2] - 2 * s[1] + s[0]) / h ** 2
        right = (s[4] - 2 * s[3] + s[2]) / h ** 2
        np.testing.assert_allclose(left, right, atol=1e-2)
    s = natural_cubic_spline(t, y, np.array([0.0, h, 2 * h]))
    np.testing.assert_allclose((s[2] - 2 * s[1] + s[0]) / h ** 2, 0.0, atol=1e-2)
    # Two knots: a straight line. One knot: constant.
    np.testing.assert_allclose(natural_cubic_spline(t[:2], y[:2], np.array([0.2]))[0], 0.5 * (y[0] + y[1]))
    np.testing.assert_allclose(natural_cubic_spline(t[:1], y[:1], np.array([0.0, 1.0])), y[[0, 0]])


def _check_smooth(traj: Trajectory, duration: float, max_acc: float, max_ang_acc: float):
    dt = 1e-3
    times = np.arange(0.0, duration + 1e-12, dt)
    poses = traj.poses(times)
    p = poses[:, :3, 3]
    acc = np.linalg.norm(np.diff(p, 2, axis=0), axis=1) / dt ** 2
    assert acc.max() < max_acc, acc.max()
    # Angular velocity from consecutive rotations; its rate of change bounded too (no slerp kinks).
    omega = _angle(poses[:-1, :3, :3], poses[1:, :3, :3]) / dt
    assert np.abs(np.diff(omega)).max() / dt < max_ang_acc
    return times, poses


@pytest.mark.parametrize("seed", range(5))
def test_spline_trajectory_smooth_inside_box_and_through_keyframes(seed):
    rng = np.random.default_rng(seed)
    lo, hi = np.array([-1.0, -1.0, 0.3]), np.array([1.0, 1.0, 1.2])
    frames = np.arange(60) / 30.0
    traj = sample_trajectory("spline", lo, hi, frames, (0.2, 0.6), (30.0, 90.0), 5, rng)
    assert traj.kind == "spline" and len(traj.times) == 5
    p = traj.poses(frames)[:, :3, 3]
    assert np.all(p >= lo - 1e-9) and np.all(p <= hi + 1e-9)
    key = traj.poses(np.asarray(traj.times))
    np.testing.assert_allclose(key[:, :3, 3], np.asarray(traj.positions), atol=1e-12)
    R_key = Rotation.from_rotvec(traj.base_rotvec).as_matrix() @ Rotation.from_rotvec(traj.rotvecs).as_matrix()
    np.testing.assert_allclose(key[:, :3, :3], R_key, atol=1e-12)
    # Speeds up to 0.6 m/s with keyframes 0.5 s apart: accelerations stay within a few m/s^2.
    _check_smooth(traj, frames[-1], max_acc=20.0, max_ang_acc=200.0)


def test_constant_velocity_trajectory():
    rng = np.random.default_rng(7)
    lo, hi = np.array([-1.0, -1.0, 0.3]), np.array([1.0, 1.0, 1.2])
    frames = np.arange(40) / 20.0
    traj = sample_trajectory("constant_velocity", lo, hi, frames, (0.3, 0.3), (45.0, 45.0), 4, rng)
    assert traj.kind == "constant_velocity"
    poses = traj.poses(frames)
    p = poses[:, :3, 3]
    assert np.all(p >= lo - 1e-9) and np.all(p <= hi + 1e-9)
    np.testing.assert_allclose(np.diff(p, 2, axis=0), 0.0, atol=1e-12)
    speed = np.linalg.norm(np.diff(p, axis=0), axis=1) * 20.0
    assert speed.max() <= 0.3 + 1e-9
    omega = _angle(poses[:-1, :3, :3], poses[1:, :3, :3]) * 20.0
    np.testing.assert_allclose(np.degrees(omega), 45.0, rtol=1e-6)


def test_single_frame_is_static():
    traj = sample_trajectory("spline", [0, 0, 0], [1, 1, 1], np.zeros(1), (0.1, 0.2), (1.0, 2.0), 4,
                             np.random.default_rng(0))
    assert traj.poses(np.zeros(1)).shape == (1, 4, 4)


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown trajectory kind 'teleport'"):
        sample_trajectory("teleport", [0, 0, 0], [1, 1, 1], np.arange(3) / 30, (0.1, 0.2), (1.0, 2.0), 4,
                          np.random.default_rng(0))


def test_cached_spline_weights_match_the_direct_evaluation():
    from synthseq.generator.trajectories import _natural_cubic_spline_direct

    rng = np.random.default_rng(4)
    for n in (1, 2, 3, 6):
        t = np.sort(rng.uniform(0, 3, size=n)) + np.arange(n)
        y = rng.normal(size=(n, 3))
        q = np.linspace(t[0] - 0.5, t[-1] + 0.5, 57)
        np.testing.assert_allclose(natural_cubic_spline(t, y, q), _natural_cubic_spline_direct(t, y, q),
                                   rtol=1e-12, atol=1e-12)
