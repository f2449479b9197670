"""Tiny in-memory pair datasets of real geometry for the trainer tests: points sampled on an asymmetric shape
(a box with a sphere on one corner), placed in front of a camera and moved by known rigid transforms."""

from __future__ import annotations

import numpy as np


def random_rotation(rng, max_angle_rad: float) -> np.ndarray:
    """A rotation about a uniformly random axis by an angle uniform in [0, max_angle_rad]; (3, 3) float64."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = rng.uniform(0, max_angle_rad)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K


def sample_shape(rng, n: int) -> np.ndarray:
    """n points on the surface of a 0.4 x 0.2 x 0.1 m box plus a 5 cm sphere on one corner; (n, 3), object frame."""
    n_sphere = n // 4
    n_box = n - n_sphere
    half = np.array([0.2, 0.1, 0.05])
    p = rng.uniform(-1, 1, size=(n_box, 3)) * half
    face = rng.integers(0, 3, size=n_box)
    sign = rng.choice([-1.0, 1.0], size=n_box)
    p[np.arange(n_box), face] = sign * half[face]
    s = rng.normal(size=(n_sphere, 3))
    s = 0.05 * s / np.linalg.norm(s, axis=1, keepdims=True) + np.array([0.2, 0.1, 0.05])
    return np.concatenate([p, s])


class ToyPairs:
    """Pairs (points_a, points_b, a_from_b) with a_from_b = cam_t_from_cam_{t+d} exact.

    Args:
        num_pairs: dataset length.
        num_points: N.
        seed: geometry seed.
        max_angle_deg: largest relative rotation between the two frames.
        offset: (3,) added to both clouds after the transform (a "sensor bias": real = synthetic + offset).
        noise: std (m) of Gaussian noise added to every point.
        nan_at: index of a sample whose points are NaN (a corrupt frame).
        orientation_deg: the object's orientation in frame t varies by up to this angle (a scene seen from
            roughly one side, as in a capture).
        depth_range: (low, high) metres of the object's depth in frame t.
    """

    def __init__(self, num_pairs: int = 32, num_points: int = 128, seed: int = 0, max_angle_deg: float = 30.0,
                 offset=(0.0, 0.0, 0.0), noise: float = 0.0, nan_at: int | None = None,
                 orientation_deg: float = 45.0, depth_range=(1.5, 2.5)):
        rng = np.random.default_rng(seed)
        self.samples = []
        for i in range(num_pairs):
            a_from_obj = np.eye(4)
            a_from_obj[:3, :3] = random_rotation(rng, np.deg2rad(orientation_deg))
            a_from_obj[:3, 3] = [rng.uniform(-0.2, 0.2), rng.uniform(-0.2, 0.2), rng.uniform(*depth_range)]
            b_from_a = np.eye(4)
            b_from_a[:3, :3] = random_rotation(rng, np.deg2rad(max_angle_deg))
            b_from_a[:3, 3] = rng.uniform(-0.1, 0.1, size=3)
            b_from_obj = b_from_a @ a_from_obj
            pa = sample_shape(rng, num_points) @ a_from_obj[:3, :3].T + a_from_obj[:3, 3]
            pb = sample_shape(rng, num_points) @ b_from_obj[:3, :3].T + b_from_obj[:3, 3]
            pa = pa + np.asarray(offset) + noise * rng.normal(size=pa.shape)
            pb = pb + np.asarray(offset) + noise * rng.normal(size=pb.shape)
            if nan_at == i:
                pa[:] = np.nan
            self.samples.append(dict(points_a=pa.astype(np.float32), points_b=pb.astype(np.float32),
                                     a_from_b=np.linalg.inv(b_from_a).astype(np.float32), gap=1, has_pose=True))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in self.samples[i].items()}
