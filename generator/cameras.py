"""Cameras: pinhole intrinsics, a static rig around the scene and a handheld-like motion.

Every pose here is ``world_from_camera`` with OpenCV camera axes (x right, y down, z forward), world z up.
The handheld camera follows the TUM RGB-D fr1 recordings loosely: a base pose looking at the scene, shaken by
roll (about the optical axis), pitch (about x), yaw (about y) and x/y/z translations in the camera frame, each
a sinusoid with its own random frequency and phase.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from synthseq.geometry import look_at, matmul
from synthseq.types import Camera


def rig_poses(num_views: int, radius, height, target, azimuth0: float = 0.0) -> np.ndarray:
    """A static rig: ``num_views`` cameras evenly spaced in azimuth on a circle, looking at ``target``.

    Args:
        num_views: V.
        radius: scalar or (V,) horizontal distances from the z axis, metres.
        height: scalar or (V,) heights, metres.
        target: (3,) look-at point.
        azimuth0: azimuth of view 0, radians (view v is at azimuth0 + 2 pi v / V).

    Returns:
        (V, 4, 4) float64 world_from_camera.
    """
    radius = np.broadcast_to(np.asarray(radius, dtype=np.float64), (num_views,))
    height = np.broadcast_to(np.asarray(height, dtype=np.float64), (num_views,))
    out = np.zeros((num_views, 4, 4))
    for v in range(num_views):
        a = azimuth0 + 2.0 * math.pi * v / num_views
        eye = (radius[v] * math.cos(a), radius[v] * math.sin(a), height[v])
        out[v] = look_at(eye, target)
    return out


@dataclass(frozen=True)
class HandheldMotion:
    """Sinusoidal shake of a handheld camera around a base pose, optionally walking (plain data).

    Args:
        base: 16 floats, the base world_from_camera at t = 0 (row-major 4x4).
        rpy_amplitude_rad: (roll, pitch, yaw) amplitudes: rotations about camera z, x, y.
        rpy_frequency_hz, rpy_phase: per-axis frequencies and phases (radians).
        xyz_amplitude_m, xyz_frequency_hz, xyz_phase: the same for x, y, z translations (camera frame).
        velocity_m_s: (3,) world-frame velocity of the base position (a walk); zero = a fixed base.
        target: (3,) world point the walking base keeps looking at (``look_at(eye(t), target)``); None with a
            zero velocity.
    """

    base: tuple
    rpy_amplitude_rad: tuple
    rpy_frequency_hz: tuple
    rpy_phase: tuple
    xyz_amplitude_m: tuple
    xyz_frequency_hz: tuple
    xyz_phase: tuple
    velocity_m_s: tuple = (0.0, 0.0, 0.0)
    target: tuple | None = None

    def base_poses(self, times: np.ndarray) -> np.ndarray:
        """(T, 4, 4) float64 world_from_camera of the base (before the shake) at ``times`` (T,)."""
        t = np.asarray(times, dtype=np.float64)
        base = np.asarray(self.base, dtype=np.float64).reshape(4, 4)
        if self.target is None or not any(self.velocity_m_s):
            return np.broadcast_to(base, (len(t), 4, 4)).copy()
        eyes = base[:3, 3][None] + t[:, None] * np.asarray(self.velocity_m_s, dtype=np.float64)[None]
        return np.stack([look_at(e, self.target) for e in eyes])

    def poses(self, times: np.ndarray) -> np.ndarray:
        """world_from_camera at ``times`` (T,): (T, 4, 4) float64.

        Each offset is amplitude * sin(2 pi f t + phase): within +-amplitude of the base pose.
        """
        t = np.asarray(times, dtype=np.float64)[:, None]

        def wave(amp, freq, phase):
            amp, freq, phase = (np.asarray(x, dtype=np.float64)[None] for x in (amp, freq, phase))
            return amp * np.sin(2 * np.pi * freq * t + phase)

        roll, pitch, yaw = wave(self.rpy_amplitude_rad, self.rpy_frequency_hz, self.rpy_phase).T
        xyz = wave(self.xyz_amplitude_m, self.xyz_frequency_hz, self.xyz_phase)
        R = Rotation.from_euler("ZXY", np.stack([roll, pitch, yaw], -1)).as_matrix()  # R_z(roll) R_x(pitch) R_y(yaw)
        delta = np.zeros((len(t), 4, 4))
        delta[:, :3, :3] = R
        delta[:, :3, 3] = xyz
        delta[:, 3, 3] = 1.0
        if self.target is None or not any(self.velocity_m_s):
            return matmul(np.asarray(self.base, dtype=np.float64).reshape(4, 4), delta)
        return matmul(self.base_poses(t[:, 0]), delta)


@dataclass(frozen=True)
class CameraSpec:
    """Every camera of a sequence as plain data: shared intrinsics, static poses and optional handheld views.

    Args:
        width, height: image size, pixels.
        fx, fy, cx, cy: intrinsics, pixels.
        static_poses: V_s tuples of 16 floats, world_from_camera (row-major).
        handheld: the moving cameras (the last views), possibly none.
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    static_poses: tuple = ()
    handheld: tuple = ()

    @property
    def num_views(self) -> int:
        return len(self.static_poses) + len(self.handheld)

    def camera(self) -> Camera:
        """The shared pinhole camera."""
        return Camera.from_focal(self.fx, self.fy, self.cx, self.cy, self.width, self.height)

    def poses(self, times: np.ndarray) -> np.ndarray:
        """world_from_camera of every view at ``times`` (T,): (T, V, 4, 4) float64, OpenCV axes."""
        T = len(times)
        out = np.zeros((T, self.num_views, 4, 4))
        if self.static_poses:
            out[:, : len(self.static_poses)] = np.asarray(self.static_poses, dtype=np.float64).reshape(-1, 4, 4)
        for i, motion in enumerate(self.handheld):
            out[:, len(self.static_poses) + i] = motion.poses(times)
        return out


def choose_motion(handheld, rng: np.random.Generator):
    """Draw one motion regime of a :class:`~synthseq.generator.config.HandheldConfig` by weight.

    Returns:
        (name, MotionConfig), or (None, None) when ``handheld.motions`` is empty (the single regime of the
        handheld section's own fields; nothing is drawn, so older configs keep their random streams).
    """
    if not handheld.motions:
        return None, None
    names = list(handheld.motions)
    weights = np.array([handheld.motions[n].weight for n in names], dtype=np.float64)
    i = int(rng.choice(len(names), p=weights / weights.sum()))
    return names[i], handheld.motions[names[i]]


def draw_shake(base: np.ndarray, rpy_amplitude_deg, xyz_amplitude_m, frequency_hz, rng: np.random.Generator,
               velocity_m_s=(0.0, 0.0, 0.0), target=None) -> HandheldMotion:
    """A :class:`HandheldMotion` around ``base`` with random per-axis frequencies in ``frequency_hz`` and phases.

    Draw order (fixed: it is part of what a seed means): rpy frequencies, rpy phases, xyz frequencies, phases.
    """
    lo, hi = frequency_hz
    draws = [tuple(float(x) for x in rng.uniform(a, b, size=3))
             for a, b in ((lo, hi), (0.0, 2.0 * math.pi), (lo, hi), (0.0, 2.0 * math.pi))]
    return HandheldMotion(
        base=tuple(float(x) for x in np.asarray(base, dtype=np.float64).ravel()),
        rpy_amplitude_rad=tuple(math.radians(a) for a in rpy_amplitude_deg),
        rpy_frequency_hz=draws[0], rpy_phase=draws[1],
        xyz_amplitude_m=tuple(float(a) for a in xyz_amplitude_m),
        xyz_frequency_hz=draws[2], xyz_phase=draws[3],
        velocity_m_s=tuple(float(x) for x in velocity_m_s),
        target=None if target is None else tuple(float(x) for x in target))


def sample_camera_spec(cfg, rng: np.random.Generator) -> CameraSpec:
    """Draw a sequence's cameras from a :class:`~synthseq.generator.config.CamerasConfig`.

    Args:
        cfg: the ``generate.cameras`` config.
        rng: the sequence's generator.
    """
    fx, fy, cx, cy = cfg.intrinsics()
    rig = cfg.rig
    static = ()
    if rig.num_views:
        V = rig.num_views
        az0 = math.radians(float(rng.uniform(-rig.azimuth_jitter_deg, rig.azimuth_jitter_deg)))
        radius = rig.radius + rng.uniform(-rig.radius_jitter, rig.radius_jitter, size=V)
        height = rig.height + rng.uniform(-rig.height_jitter, rig.height_jitter, size=V)
        poses = rig_poses(V, radius, height, rig.look_at, az0)
        static = tuple(tuple(float(x) for x in p.ravel()) for p in poses)
    handheld = []
    h = cfg.handheld
    for _ in range(h.num_views if h.enabled else 0):
        _, regime = choose_motion(h, rng)
        az = float(rng.uniform(0.0, 2.0 * math.pi))
        target = np.asarray(h.look_at, dtype=np.float64)
        eye = np.array([h.radius * math.cos(az), h.radius * math.sin(az), h.height])
        base = look_at(eye, target)
        if regime is None:
            handheld.append(draw_shake(base, h.rpy_amplitude_deg, h.xyz_amplitude_m, h.frequency_hz, rng))
            continue
        velocity = walk_velocity(eye, target, regime.walk_speed_m_s, rng)
        handheld.append(draw_shake(base, regime.rpy_amplitude_deg, regime.xyz_amplitude_m, regime.frequency_hz,
                                   rng, velocity, target if any(velocity) else None))
    return CameraSpec(cfg.width, cfg.height, fx, fy, cx, cy, static, tuple(handheld))


def walk_velocity(eye, target, speed_m_s, rng: np.random.Generator) -> np.ndarray:
    """(3,) horizontal walking velocity: roughly sideways to the view (within +-30 deg of perpendicular to
    the horizontal eye -> target direction, either side), speed drawn in ``speed_m_s`` = (lo, hi) m/s.
    Draws nothing and returns zeros when ``speed_m_s`` is (0, 0)."""
    lo, hi = speed_m_s
    if hi <= 0:
        return np.zeros(3)
    d = np.asarray(target, dtype=np.float64)[:2] - np.asarray(eye, dtype=np.float64)[:2]
    heading = math.atan2(d[1], d[0]) if np.linalg.norm(d) > 1e-9 else 0.0
    side = 1.0 if rng.random() < 0.5 else -1.0
    a = heading + side * math.pi / 2 + math.radians(float(rng.uniform(-30.0, 30.0)))
    s = float(rng.uniform(lo, hi))
    return np.array([s * math.cos(a), s * math.sin(a), 0.0])
