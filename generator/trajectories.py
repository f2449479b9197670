"""SE(3) object motion: keyframes joined by natural cubic splines, and the room-safe sampler.

A trajectory is plain data (:class:`Trajectory`): keyframe times, positions and rotation vectors, and a base
rotation. The pose at time t is

    world_from_object(t) = [ R_base @ exp(theta(t)) | p(t) ]

where p(t) and theta(t) are natural cubic splines through the keyframes (C2: continuous acceleration, and the
exponential map is smooth, so angular velocity and acceleration are continuous too). The pose passes exactly
through every keyframe. With two keyframes both splines are linear: constant linear velocity and constant
body-frame angular velocity (``constant_velocity``). Rotation vectors are not wrapped to [0, pi], so a spinning
object never jumps.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from synthseq.geometry import random_unit_vector

_MAX_TRIES = 20


# ------------------------------------------------------------------------------------------ splines

def _solve_tridiagonal(A: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve A x = rhs for a diagonally dominant tridiagonal (m, m) A (Thomas algorithm, no LAPACK: the same
    bits on every machine). rhs: (m, d)."""
    m = len(A)
    diag = A.diagonal().copy()
    lower = np.concatenate([[0.0], A.diagonal(-1)])
    upper = np.concatenate([A.diagonal(1), [0.0]])
    y = np.array(rhs, dtype=np.float64)
    for i in range(1, m):
        w = lower[i] / diag[i - 1]
        diag[i] = diag[i] - w * upper[i - 1]
        y[i] = y[i] - w * y[i - 1]
    x = np.empty_like(y)
    x[-1] = y[-1] / diag[-1]
    for i in range(m - 2, -1, -1):
        x[i] = (y[i] - upper[i] * x[i + 1]) / diag[i]
    return x


def natural_cubic_spline(times: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Evaluate the natural cubic spline through (times, values) at ``query`` (clamped to the time range).

    The spline is linear in the values: it is evaluated as ``W @ values`` with the (m, n) weights ``W`` of
    (times, query) cached (every object of a sequence shares its keyframe and frame times).

    Args:
        times: (n,) strictly increasing knot times, n >= 1.
        values: (n, d) knot values.
        query: (m,) times.

    Returns:
        (m, d) float64. n = 1: constant; n = 2: linear; n >= 3: C2 cubic with zero end curvature.
    """
    W = _spline_weights(tuple(np.asarray(times, dtype=np.float64).tolist()),
                        tuple(np.asarray(query, dtype=np.float64).tolist()))
    return np.einsum("mn,nd->md", W, np.asarray(values, dtype=np.float64))


@functools.lru_cache(maxsize=64)
def _spline_weights(times: tuple, query: tuple) -> np.ndarray:
    """(m, n) read-only weights of the natural cubic spline with knots ``times`` evaluated at ``query``."""
    W = _natural_cubic_spline_direct(np.asarray(times), np.eye(len(times)), np.asarray(query))
    W.setflags(write=False)
    return W


def _natural_cubic_spline_direct(times: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """The textbook evaluation of :func:`natural_cubic_spline` (second derivatives at the knots, then the
    cubic of each interval): (n,), (n, d), (m,) -> (m, d)."""
    t = np.asarray(times, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    q = np.clip(np.asarray(query, dtype=np.float64), t[0], t[-1])
    n = len(t)
    if n == 1:
        return np.repeat(y, len(q), axis=0)
    h = np.diff(t)
    M = np.zeros_like(y)  # second derivatives at the knots; natural: M[0] = M[-1] = 0
    if n > 2:
        A = np.zeros((n - 2, n - 2))
        idx = np.arange(n - 2)
        A[idx, idx] = 2.0 * (h[:-1] + h[1:])
        A[idx[1:], idx[:-1]] = h[1:-1]
        A[idx[:-1], idx[1:]] = h[1:-1]
        slope = np.diff(y, axis=0) / h[:, None]
        M[1:-1] = _solve_tridiagonal(A, 6.0 * np.diff(slope, axis=0))
    i = np.clip(np.searchsorted(t, q, side="right") - 1, 0, n - 2)
    hi = h[i][:, None]
    a = (t[i + 1][:, None] - q[:, None]) / hi
    b = 1.0 - a
    return (a * y[i] + b * y[i + 1]
            + ((a ** 3 - a) * M[i] + (b ** 3 - b) * M[i + 1]) * hi ** 2 / 6.0)


# ------------------------------------------------------------------------------------------ trajectories

@dataclass(frozen=True)
class Trajectory:
    """A smooth SE(3) trajectory as plain data.

    Args:
        times: (n,) keyframe times, seconds, increasing.
        positions: (n,) of (x, y, z) keyframe positions, metres, world frame.
        rotvecs: (n,) of rotation vectors theta_i (body frame, relative to ``base_rotvec``), radians.
        base_rotvec: rotation vector of R_base, radians.
        kind: "spline" or "constant_velocity" (informational; both evaluate the same way).
    """

    times: tuple
    positions: tuple
    rotvecs: tuple
    base_rotvec: tuple = (0.0, 0.0, 0.0)
    kind: str = "spline"

    def positions_at(self, times: np.ndarray) -> np.ndarray:
        """(m, 3) float64 positions at ``times`` (m,)."""
        return natural_cubic_spline(np.asarray(self.times), np.asarray(self.positions), times)

    def poses(self, times: np.ndarray) -> np.ndarray:
        """world_from_object at ``times``: (m, 4, 4) float64."""
        times = np.asarray(times, dtype=np.float64)
        p = self.positions_at(times)
        theta = natural_cubic_spline(np.asarray(self.times), np.asarray(self.rotvecs), times)
        out = np.zeros((len(times), 4, 4))
        out[:, :3, :3] = (Rotation.from_rotvec(self.base_rotvec) * Rotation.from_rotvec(theta)).as_matrix()
        out[:, :3, 3] = p
        out[:, 3, 3] = 1.0
        return out


def _tuples(a: np.ndarray) -> tuple:
    return tuple(tuple(float(x) for x in row) for row in np.asarray(a))


def _inside(points: np.ndarray, lo: np.ndarray, hi: np.ndarray, tol: float = 1e-9) -> bool:
    return bool(np.all(points >= lo - tol) and np.all(points <= hi + tol))


def _reflect(p: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Mirror p into [lo, hi] at the walls (then clip, for steps longer than the box)."""
    p = np.where(p < lo, 2 * lo - p, p)
    p = np.where(p > hi, 2 * hi - p, p)
    return np.clip(p, lo, hi)


def sample_trajectory(kind: str, lo, hi, times: np.ndarray, speed: tuple, angular_speed_deg: tuple,
                      num_keyframes: int, rng: np.random.Generator) -> Trajectory:
    """A random trajectory whose position stays inside the box [lo, hi] at every frame time.

    Args:
        kind: "spline" or "constant_velocity".
        lo, hi: (3,) bounds for the object's origin (the room box shrunk by its bounding radius + margin).
        times: (T,) frame times, seconds, starting at 0.
        speed: (low, high) linear speed, m/s.
        angular_speed_deg: (low, high) angular speed, deg/s.
        num_keyframes: keyframes of a spline (>= 2).
        rng: the sequence's generator.

    Returns:
        A :class:`Trajectory`. A spline whose interpolation leaves the box (overshoot between keyframes) is
        redrawn; after 20 tries it falls back to constant velocity, which a convex box always contains.
    """
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    duration = float(times[-1] - times[0]) if len(times) > 1 else 0.0
    base = tuple(float(x) for x in Rotation.random(None, rng).as_rotvec())  # uniform over SO(3)
    p0 = rng.uniform(lo, hi)
    s = float(rng.uniform(*speed))
    w = math.radians(float(rng.uniform(*angular_speed_deg)))
    if duration <= 0:
        return Trajectory((0.0,), _tuples(p0[None]), ((0.0, 0.0, 0.0),), base, kind)
    if kind == "spline":
        n = max(2, int(num_keyframes))
        key_times = np.linspace(0.0, duration, n)
        dt = duration / (n - 1)
        for _ in range(_MAX_TRIES):
            pos = [p0]
            rot = [np.zeros(3)]
            for _i in range(1, n):
                pos.append(_reflect(pos[-1] + s * dt * random_unit_vector(rng), lo, hi))
                rot.append(rot[-1] + w * dt * random_unit_vector(rng))
            traj = Trajectory(tuple(float(x) for x in key_times), _tuples(np.array(pos)), _tuples(np.array(rot)),
                              base, "spline")
            if _inside(traj.positions_at(times), lo, hi):
                return traj
            p0 = rng.uniform(lo, hi)
        kind = "constant_velocity"
    if kind != "constant_velocity":
        raise ValueError(f"unknown trajectory kind {kind!r} (expected 'spline' or 'constant_velocity')")
    # Constant velocity: the segment p0 -> p1 lies in the box when both ends do (the box is convex).
    direction = random_unit_vector(rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_hi = np.where(direction > 0, (hi - p0) / direction, np.where(direction < 0, (lo - p0) / direction, np.inf))
    travel = min(s * duration, float(np.min(t_hi)))
    p1 = np.clip(p0 + travel * direction, lo, hi)
    theta1 = w * duration * random_unit_vector(rng)
    return Trajectory((0.0, duration), _tuples(np.stack([p0, p1])), _tuples(np.stack([np.zeros(3), theta1])),
                      base, "constant_velocity")
