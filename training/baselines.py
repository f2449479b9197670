"""Classical registration baselines (Open3D): point-to-plane ICP, FPFH + RANSAC + ICP, ICP refinement.

Every function takes two camera-frame clouds ``points_a`` (target) and ``points_b`` (source) and returns
a :class:`Registration` whose ``a_from_b`` maps frame-b points into frame a (Open3D's ``transformation``
with source = b and target = a), plus the wall-clock seconds spent on the pair, preprocessing included
(voxel down-sampling, normals, FPFH features). Defaults follow ../shared/data/real/README.md: 2 cm voxels,
normals from a 4 cm / 30-neighbour hybrid search, point-to-plane ICP with 5 cm maximum correspondence.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

VOXEL_M = 0.02
MAX_CORRESPONDENCE_M = 0.05
ICP_MAX_ITERATIONS = 50


@dataclass(frozen=True)
class Registration:
    """The result of registering cloud b onto cloud a.

    Args:
        a_from_b: (4, 4) float64; NaN-filled when the method produced no pose.
        seconds: wall-clock time for the pair, preprocessing included.
        fitness: fraction of b's (down-sampled) points with a correspondence within the ICP distance.
        inlier_rmse: RMSE of those correspondences, metres.
    """

    a_from_b: np.ndarray
    seconds: float
    fitness: float = float("nan")
    inlier_rmse: float = float("nan")


def _o3d():
    try:
        import open3d as o3d
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the ICP baselines need open3d: pip install 'synthseq[render]' (open3d-cpu)") from e
    return o3d


def _check_cloud(name: str, points) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"{name}: expected shape (N, 3), got {p.shape}")
    p = p[np.all(np.isfinite(p), axis=1)]
    # Rows of exact zeros are padding of frames without valid depth (PointSequence convention).
    return p[np.any(p != 0.0, axis=1)]


def normal_radius(pcd, voxel_m: float = VOXEL_M) -> float:
    """Search radius for normals: 2 voxels, or 3x the median point spacing for clouds sparser than the voxel
    grid (synthetic shards store only N points per frame; a 4 cm radius finds no neighbours there)."""
    base = 2.0 * (voxel_m if voxel_m > 0 else VOXEL_M)
    spacing = float(np.median(np.asarray(pcd.compute_nearest_neighbor_distance())))
    if np.isfinite(spacing) and spacing > 0.75 * base:
        return 3.0 * spacing
    return base


def preprocess(points: np.ndarray, voxel_m: float = VOXEL_M, features: bool = False):
    """Voxel down-sample a cloud and estimate normals (and FPFH features).

    Normals use a hybrid search (2 voxels, 30 neighbours; see ``normal_radius`` for sparse clouds) and are
    oriented towards the camera centre, the origin of the cloud's frame.

    Args:
        points: (N, 3) float, metres; zero rows (padding) and non-finite rows are dropped.
        voxel_m: voxel size; 0 keeps every point.
        features: also compute FPFH (radius 5 voxels or 2.5 normal radii, whichever is larger; 100 neighbours).

    Returns:
        (open3d.geometry.PointCloud with normals, open3d.pipelines.registration.Feature or None).
    """
    o3d = _o3d()
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(_check_cloud("points", points)))
    if voxel_m > 0:
        pcd = pcd.voxel_down_sample(voxel_m)
    if len(pcd.points) < 3:  # nothing to register; callers check the size
        return pcd, None
    radius = normal_radius(pcd, voxel_m)
    pcd.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=radius, max_nn=30))
    # Orient normals towards the camera (origin of the camera frame) so both clouds agree on the side.
    pcd.orient_normals_towards_camera_location(np.zeros(3))
    fpfh = None
    if features:
        fpfh = o3d.pipelines.registration.compute_fpfh_feature(
            pcd, o3d.geometry.KDTreeSearchParamHybrid(radius=max(5.0 * (voxel_m or VOXEL_M), 2.5 * radius),
                                                      max_nn=100))
    return pcd, fpfh


def point_to_plane_icp(pcd_a, pcd_b, init: np.ndarray, max_correspondence_m: float, max_iterations: int):
    """Open3D point-to-plane ICP of the cloud b onto the cloud a (which has normals) from ``init``."""
    o3d = _o3d()
    reg = o3d.pipelines.registration
    return reg.registration_icp(
        pcd_b, pcd_a, max_correspondence_m, np.asarray(init, dtype=np.float64),
        reg.TransformationEstimationPointToPlane(),
        reg.ICPConvergenceCriteria(max_iteration=max_iterations))


def _nan_pose() -> np.ndarray:
    return np.full((4, 4), np.nan)


def refine_icp(points_a: np.ndarray, points_b: np.ndarray, init_a_from_b: np.ndarray | None = None,
               voxel_m: float = VOXEL_M, max_correspondence_m: float = MAX_CORRESPONDENCE_M,
               max_iterations: int = ICP_MAX_ITERATIONS) -> Registration:
    """Point-to-plane ICP of cloud b onto cloud a, started from ``init_a_from_b``.

    Args:
        points_a: (N, 3) float, target cloud, camera frame a, metres.
        points_b: (M, 3) float, source cloud, camera frame b.
        init_a_from_b: (4, 4) initial estimate (identity when None; a non-finite one is replaced by identity).
        voxel_m: voxel size for down-sampling both clouds.
        max_correspondence_m: ICP correspondence distance.
        max_iterations: ICP iterations at most.

    Returns:
        Registration (a_from_b, seconds, fitness, inlier_rmse); the input pose when a cloud is too small.
    """
    start = time.perf_counter()
    init = np.eye(4) if init_a_from_b is None else np.asarray(init_a_from_b, dtype=np.float64)
    if not np.all(np.isfinite(init)):
        init = np.eye(4)
    pcd_a, _ = preprocess(points_a, voxel_m)
    pcd_b, _ = preprocess(points_b, voxel_m)
    if len(pcd_a.points) < 3 or len(pcd_b.points) < 3:
        logger.debug("refine_icp: fewer than 3 points after down-sampling; returning the initial pose")
        return Registration(init.copy(), time.perf_counter() - start)
    res = point_to_plane_icp(pcd_a, pcd_b, init, max_correspondence_m, max_iterations)
    return Registration(np.array(res.transformation), time.perf_counter() - start,
                        float(res.fitness), float(res.inlier_rmse))


def icp_from_identity(points_a: np.ndarray, points_b: np.ndarray, voxel_m: float = VOXEL_M,
                      max_correspondence_m: float = MAX_CORRESPONDENCE_M,
                      max_iterations: int = ICP_MAX_ITERATIONS) -> Registration:
    """Point-to-plane ICP of cloud b onto cloud a from the identity (what a user would try first).

    Args and returns as :func:`refine_icp` with ``init_a_from_b`` = identity.
    """
    return refine_icp(points_a, points_b, None, voxel_m, max_correspondence_m, max_iterations)


def fpfh_ransac_icp(points_a: np.ndarray, points_b: np.ndarray, voxel_m: float = VOXEL_M,
                    max_correspondence_m: float = MAX_CORRESPONDENCE_M, seed: int = 0,
                    ransac_iterations: int = 100_000, ransac_confidence: float = 0.999,
                    max_iterations: int = ICP_MAX_ITERATIONS) -> Registration:
    """Global registration (FPFH features + RANSAC on feature matches) refined by point-to-plane ICP.

    RANSAC follows Open3D's global-registration tutorial scaled to the voxel: inlier distance 1.5 voxels,
    3-point samples, edge-length (0.9) and distance checkers, point-to-point estimation. Open3D's RANSAC
    draws from its global generator, seeded here with ``seed`` before every pair
    (``open3d.utility.random.seed``), so a pair gives the same result on every run with one thread.

    Args:
        points_a: (N, 3) float, target cloud, camera frame a, metres.
        points_b: (M, 3) float, source cloud, camera frame b.
        voxel_m: voxel size (features at 5 voxels, normals at 2 voxels).
        max_correspondence_m: ICP correspondence distance of the refinement.
        seed: RANSAC seed.
        ransac_iterations, ransac_confidence: RANSAC convergence criteria.
        max_iterations: ICP iterations at most.

    Returns:
        Registration; NaN pose when a cloud has fewer than 3 points after down-sampling.
    """
    o3d = _o3d()
    reg = o3d.pipelines.registration
    start = time.perf_counter()
    pcd_a, f_a = preprocess(points_a, voxel_m, features=True)
    pcd_b, f_b = preprocess(points_b, voxel_m, features=True)
    if len(pcd_a.points) < 3 or len(pcd_b.points) < 3:
        return Registration(_nan_pose(), time.perf_counter() - start)
    if hasattr(o3d.utility, "random"):
        o3d.utility.random.seed(int(seed))
    dist = 1.5 * voxel_m
    ransac = reg.registration_ransac_based_on_feature_matching(
        pcd_b, pcd_a, f_b, f_a, True, dist,
        reg.TransformationEstimationPointToPoint(False), 3,
        [reg.CorrespondenceCheckerBasedOnEdgeLength(0.9), reg.CorrespondenceCheckerBasedOnDistance(dist)],
        reg.RANSACConvergenceCriteria(ransac_iterations, ransac_confidence))
    res = point_to_plane_icp(pcd_a, pcd_b, ransac.transformation, max_correspondence_m, max_iterations)
    return Registration(np.array(res.transformation), time.perf_counter() - start,
                        float(res.fitness), float(res.inlier_rmse))


BASELINES = {
    "icp": icp_from_identity,
    "fpfh_ransac_icp": fpfh_ransac_icp,
}
