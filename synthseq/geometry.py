"""Geometry shared by the generator, the datasets, the trainer and the viewer: 4x4 poses, pinhole projection
and back-projection, the OpenCV look-at, rotations (through ``scipy.spatial.transform.Rotation``), and
sampling a fixed number of points from a cloud on a voxel grid.

Conventions are those of :mod:`synthseq.types`: poses ``a_from_b`` act on column vectors, camera axes are
OpenCV (x right, y down, z forward), depth is z-depth, and pixel (u, v) = (col, row) is the centre of that
pixel (integer coordinates are pixel centres; renderers with another convention convert at their boundary).
Quaternions are (x, y, z, w), scalar last, as TUM files and scipy write them.
"""

from __future__ import annotations

import numpy as np

# Flips y and z: maps OpenGL camera coordinates (x right, y up, z backward) to OpenCV ones (x right,
# y down, z forward). It is its own inverse, so it also maps OpenCV to OpenGL.
OPENCV_FROM_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])


# ------------------------------------------------------------------------------------------ 4x4 poses

def _rotation():
    """scipy's Rotation, imported on first use (importing this module stays light: evaluation's config
    checks run before any heavy import)."""
    from scipy.spatial.transform import Rotation

    return Rotation


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(..., i, j) @ (..., j, k) without BLAS.

    numpy's ``@`` calls the BLAS library, whose kernels (FMA or not) vary with the CPU, so pose products could
    differ in the last bit between machines; ``einsum`` without ``optimize`` uses numpy's own fixed-order
    loops. Used for every pose product that ends up in a generated sequence.
    """
    return np.einsum("...ij,...jk->...ik", a, b)


def invert_pose(a_from_b: np.ndarray) -> np.ndarray:
    """Invert rigid transforms: (..., 4, 4) a_from_b -> b_from_a, using R^T rather than a general inverse."""
    a_from_b = np.asarray(a_from_b, dtype=np.float64)
    R = a_from_b[..., :3, :3]
    t = a_from_b[..., :3, 3:]
    out = np.zeros_like(a_from_b)
    Rt = np.swapaxes(R, -1, -2)
    out[..., :3, :3] = Rt
    out[..., :3, 3:] = -Rt @ t
    out[..., 3, 3] = 1.0
    return out


def transform_points(a_from_b: np.ndarray, points_b: np.ndarray) -> np.ndarray:
    """Apply a (4, 4) transform to (..., 3) points: returns points in frame a (in the points' dtype)."""
    a_from_b = np.asarray(a_from_b)
    return points_b @ a_from_b[:3, :3].T.astype(points_b.dtype) + a_from_b[:3, 3].astype(points_b.dtype)


def relative_pose(world_from_a: np.ndarray, world_from_b: np.ndarray) -> np.ndarray:
    """a_from_b = inv(world_from_a) @ world_from_b; broadcasts over leading dimensions."""
    return invert_pose(world_from_a) @ np.asarray(world_from_b, dtype=np.float64)


# ------------------------------------------------------------------------------------------ pinhole camera

def project_points(intrinsics: np.ndarray, points_camera: np.ndarray) -> np.ndarray:
    """Project (..., 3) OpenCV camera-frame points to (..., 2) pixel coordinates (u, v)."""
    z = points_camera[..., 2:3]
    uv1 = (points_camera / z) @ np.asarray(intrinsics).T
    return uv1[..., :2]


def backproject(rows: np.ndarray, cols: np.ndarray, z: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """(..., 3) float64 OpenCV camera-frame points of pixels (rows, cols) at z-depths ``z`` (equal shapes).

    The one back-projection of the project: pixel centres at integer (col, row), ``x = (col - cx) / fx * z``.
    """
    K = np.asarray(intrinsics, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    return np.stack([(cols - K[0, 2]) / K[0, 0] * z, (rows - K[1, 2]) / K[1, 1] * z, z], axis=-1)


def backproject_depth(depth_m: np.ndarray, intrinsics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Back-project a z-depth image to camera-frame points.

    Args:
        depth_m: (H, W) float, metres; 0 or NaN = invalid.
        intrinsics: (3, 3).

    Returns:
        points: (M, 3) float32, OpenCV camera frame, for the M valid pixels in row-major order.
        pixels: (M, 2) int64, (row, col) of each point.
    """
    depth_m = np.asarray(depth_m)
    rows, cols = np.nonzero(np.isfinite(depth_m) & (depth_m > 0))
    points = backproject(rows, cols, depth_m[rows, cols], intrinsics).astype(np.float32)
    return points, np.stack([rows, cols], axis=-1)


def depth_mm_to_points(depth_mm: np.ndarray, intrinsics: np.ndarray, max_depth_m: float | None = None) -> np.ndarray:
    """The camera-frame cloud of a stored depth image: (H, W) uint16 millimetres (0 invalid) -> (M, 3) float32 of
    the valid pixels (row-major), pixels beyond ``max_depth_m`` dropped."""
    d = np.asarray(depth_mm).astype(np.float32) / 1000.0
    if max_depth_m is not None:
        d[d > max_depth_m] = 0.0
    return backproject_depth(d, intrinsics)[0]


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """world_from_camera of a camera at ``eye`` looking at ``target``, OpenCV axes.

    The camera's z axis points from ``eye`` to ``target``, its x axis to the right (perpendicular to ``up``),
    its y axis down (the image's "down" is the world's ``-up`` as far as possible). When the viewing
    direction is parallel to ``up``, the world x axis (or y) is used as the up hint instead.

    Args:
        eye, target: (3,) world points, metres (distinct).
        up: (3,) world up direction.

    Returns:
        (4, 4) float64.

    Raises:
        ValueError: ``eye`` and ``target`` coincide.
    """
    eye = np.asarray(eye, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - eye
    norm = np.linalg.norm(forward)
    if norm < 1e-12:
        raise ValueError(f"look_at: eye and target coincide at {eye.tolist()}")
    z = forward / norm
    x = None
    for hint in (np.asarray(up, dtype=np.float64), np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])):
        c = np.cross(z, hint)
        if np.linalg.norm(c) > 1e-6:
            x = c / np.linalg.norm(c)
            break
    y = np.cross(z, x)
    out = np.eye(4)
    out[:3, 0], out[:3, 1], out[:3, 2], out[:3, 3] = x, y, z, eye
    return out


# ------------------------------------------------------------------------------------------ rotations

def random_unit_vector(rng: np.random.Generator) -> np.ndarray:
    """A uniformly distributed direction (3,) (a normalised Gaussian: draws 3 normals)."""
    v = rng.normal(size=3)
    return v / max(np.linalg.norm(v), 1e-12)


def random_rotation(rng: np.random.Generator, max_angle_rad: float | None = None) -> np.ndarray:
    """A random (3, 3) rotation: uniform over SO(3) when ``max_angle_rad`` is None (a normalised Gaussian
    quaternion: 4 normals), otherwise about a ``random_unit_vector`` axis by an angle uniform in
    [0, max_angle_rad] (3 normals, then 1 uniform)."""
    if max_angle_rad is None:
        return _rotation().random(None, rng).as_matrix()
    axis = random_unit_vector(rng)
    return _rotation().from_rotvec(axis * rng.uniform(0.0, max_angle_rad)).as_matrix()


def quaternion_to_matrix(quaternion_xyzw: np.ndarray) -> np.ndarray:
    """(..., 4) quaternions (x, y, z, w), normalised here (finite, non-zero) -> (..., 3, 3) float64 rotations."""
    q = np.asarray(quaternion_xyzw, dtype=np.float64)
    if q.shape[-1:] != (4,):
        raise ValueError(f"quaternion_xyzw: expected shape (..., 4), got {q.shape}")
    if not np.all(np.isfinite(q)) or np.any(np.linalg.norm(q, axis=-1) < 1e-12):
        raise ValueError("quaternion_xyzw: expected finite, non-zero quaternions")
    return _rotation().from_quat(q.reshape(-1, 4)).as_matrix().reshape(q.shape[:-1] + (3, 3))


def matrix_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotations -> (..., 4) float64 unit quaternions (x, y, z, w) with w >= 0 (q and -q are the
    same rotation). A slightly non-orthonormal R (7-Scenes) gives the quaternion of the nearest rotation."""
    R = np.asarray(rotation, dtype=np.float64)
    if R.shape[-2:] != (3, 3):
        raise ValueError(f"rotation: expected shape (..., 3, 3), got {R.shape}")
    q = _rotation().from_matrix(R.reshape(-1, 3, 3)).as_quat()
    q[q[:, 3] < 0] *= -1.0
    return q.reshape(R.shape[:-2] + (4,))


def rotation_angle_deg(rotation: np.ndarray) -> np.ndarray:
    """The rotation angle of (..., 3, 3) rotation matrices: (...,) float64 degrees in [0, 180], accurate
    near 0 and 180 (from the quaternion, not an arccos of the trace); NaN where the input is not finite."""
    R = np.asarray(rotation, dtype=np.float64)
    if R.shape[-2:] != (3, 3):
        raise ValueError(f"rotation: expected shape (..., 3, 3), got {R.shape}")
    flat = R.reshape(-1, 3, 3)
    ok = np.isfinite(flat).all(axis=(1, 2))
    out = np.full(len(flat), np.nan)
    out[ok] = np.degrees(_rotation().from_matrix(flat[ok]).magnitude())
    return out.reshape(R.shape[:-2])[()]


# ----------------------------------------------------------------------------------------- sampling clouds

def clean_cloud(points) -> np.ndarray:
    """(M, 3) float32 without non-finite rows and zero rows (padding of frames without valid depth); the input
    itself (not a copy) when it is float32 and every row is valid."""
    p = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    x, y, z = p[:, 0], p[:, 1], p[:, 2]  # per column: ~5x faster than row reductions over (M, 3) on a dense frame
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(z) & ((x != 0.0) | (y != 0.0) | (z != 0.0))
    return p if ok.all() else p[ok]


def voxel_points(points, n: int, rng: np.random.Generator, voxel_m: float = 0.05) -> np.ndarray:
    """n points of an (M, 3) cloud, one per occupied voxel (Open3D's voxel centroids), in random order; (n, 3)
    float32. The voxel starts at ``voxel_m`` and shrinks by a quarter until the grid has at least n points, at
    most 6 times; fewer points when even then the cloud is too small (never repeated points), zeros when it has
    none."""
    import open3d as o3d  # its voxel grid is ~10x faster than numpy's unique on a dense frame

    p = clean_cloud(points)
    if len(p) == 0:
        return np.zeros((n, 3), np.float32)
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(p.astype(np.float64)))
    v = float(voxel_m)
    for _ in range(6):
        q = np.asarray(pcd.voxel_down_sample(v).points, dtype=np.float32)
        if len(q) >= n:
            break
        v *= 0.75
    return q[rng.permutation(len(q))[:n]]
