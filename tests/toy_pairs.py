"""Tiny in-memory pair datasets of real geometry for the trainer tests: points sampled on an asymmetric shape
(a box with a sphere on one corner), placed in front of a camera and moved by known rigid transforms."""

from __future__ import annotations

import numpy as np

from synthseq.geometry import random_rotation


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


def toy_room(rng, n: int = 20000) -> np.ndarray:
    """A camera-frame scene like an indoor capture: floor, back and side wall, three boxes and a sphere, 1-3.5 m
    in front of the camera (OpenCV axes: y down, z forward); (n, 3) float64 points on the surfaces."""
    q = n // 8
    parts = [np.c_[rng.uniform(-1.5, 1.5, 2 * q), np.full(2 * q, 0.8), rng.uniform(1.0, 3.5, 2 * q)],
             np.c_[rng.uniform(-1.5, 1.5, 2 * q), rng.uniform(-1.0, 0.8, 2 * q), np.full(2 * q, 3.5)],
             np.c_[np.full(q, -1.5), rng.uniform(-1.0, 0.8, q), rng.uniform(1.0, 3.5, q)]]
    for centre, half in (((0.3, 0.55, 2.0), (0.25, 0.25, 0.15)), ((-0.6, 0.4, 2.8), (0.2, 0.4, 0.2)),
                         ((0.9, 0.6, 3.0), (0.3, 0.2, 0.3))):
        half = np.asarray(half)
        b = rng.uniform(-1, 1, (q // 2, 3)) * half
        f = rng.integers(0, 3, len(b))
        b[np.arange(len(b)), f] = rng.choice([-1.0, 1.0], len(b)) * half[f]
        parts.append(b + np.asarray(centre))
    s = rng.normal(size=(q // 2, 3))
    parts.append(0.2 * s / np.linalg.norm(s, axis=1, keepdims=True) + np.array([-0.2, 0.2, 1.8]))
    return np.concatenate(parts)


def toy_room_pair(rng, angle_deg: float = 10.0, translation_m: float = 0.1, outliers: float = 0.2,
                  n: int = 20000, scale: float = 1.0):
    """(cloud_a, cloud_b, a_from_b): two views of ``toy_room`` (its size times ``scale``: 0.5 is a desk-sized
    corner 0.5-1.75 m away, like the real captures' frames) related by a known motion, each sampled
    independently, with ``outliers`` x n uniform points added to b (moving things, sensor junk)."""
    T = np.eye(4)
    T[:3, :3] = random_rotation(rng, np.deg2rad(angle_deg))
    T[:3, 3] = rng.normal(size=3) / np.sqrt(3) * translation_m
    a = scale * toy_room(rng, n)
    b_in_a = scale * toy_room(rng, n)
    b = (b_in_a - T[:3, 3]) @ T[:3, :3]            # b = inv(a_from_b) applied to points of a's frame
    junk = scale * rng.uniform([-1.5, -1.0, 1.0], [1.5, 0.8, 3.5], size=(int(outliers * n), 3))
    return a, np.concatenate([b, junk]), T
