"""The pose estimator used by "ours" in evaluation: two camera-frame clouds -> ``a_from_b`` + a confidence.

``estimator(cloud_a, cloud_b) -> (a_from_b (4, 4) float64, confidence float in [0, 1])``, where ``cloud_a`` is
frame t and ``cloud_b`` frame t + d, each (M, 3) in its own camera frame (OpenCV axes, metres), dense or
sampled (zero rows and non-finite rows are dropped). ``a_from_b`` = cam_t_from_cam_{t+d} maps b's points into
a. The estimator does its own sampling.

Pipeline (``model.pose: match``, the default):

1. sampling: ``num_points`` points per cloud from a voxel grid (``sampling: voxel``, the default: one point
   per occupied voxel, the voxel shrunk until there are enough, then a seeded random subset), so that the
   two frames' points sit at comparable places on the surfaces; ``sampling: random`` draws uniformly from
   the valid points (as the trainer's clouds are drawn);
2. per-point descriptors of both clouds (``MatchPoseNet.features``: PPF/EdgeConv local features, invariant
   to rigid motion);
3. mutual nearest neighbours in descriptor space -> putative correspondences (all b -> a best matches
   when fewer than ``min_matches`` are mutual);
4. RANSAC over the correspondences (Open3D ``registration_ransac_based_on_correspondence``, 3-point samples,
   edge-length and distance checks, inlier distance ``inlier_factor`` x the cloud's median point spacing),
   then a least-squares (SVD) refit on the RANSAC inliers: the *coarse* pose (``last_coarse``);
5. identity fallback: the *fitness* of a pose is the fraction of b's points that land within the inlier
   distance of a point of a; between the coarse pose and the identity (no motion), the one with the higher
   fitness is kept (small motions, where the identity is already right, are not made worse by a poor match);
6. fine stage (``refine: plane``, the default): point-to-plane alignment of ``refine_points`` points drawn
   uniformly from each cloud (normals of a's from 16 neighbours, correspondence distance ``refine_factor`` x
   the coarse points' spacing, at most ``refine_iterations``), started from the coarse pose and (fallback
   on) from the identity, the better result kept (fitness less ``free_space_weight`` x the share of b's points
   the pose puts in space a saw through: :func:`free_space_violations`): a small ICP on the estimator's own
   samples. It turns the coarse pose (a few cm off: sampled points never coincide between frames) into a precise one.
   ``refine: none`` returns the coarse pose. Evaluation reports both (``ours_coarse``, ``ours``) and,
   separately, ICP on the dense clouds (``ours_icp``).

The confidence is the fitness of the returned pose; a caller can fall back to ICP or FPFH when it is low, or let
the estimator do it: with ``classical_below`` > 0, a confidence below it sends the pair to FPFH + RANSAC + ICP on the
dense clouds (``training/baselines.py``), whose pose is returned only where it scores better (as in step 6;
``last_classical`` says which was). Off by default, so ``ours`` is the learned pipeline alone.

``model.pose: regress`` (ablation) returns the regressor's pose, with the same fitness as confidence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from synthseq.config import bounded
from synthseq.geometry import clean_cloud, voxel_points


@dataclass
class EstimatorOptions:
    """Inference options of :class:`Estimator` (defaults used by evaluation)."""

    num_points: int = bounded(2048, ge=3)  # points sampled per cloud (descriptors are in units of the point spacing,
    #                                 so this need not be the trainer's train.num_points)
    sampling: Literal["voxel", "random"] = "voxel"  # one point per voxel (shrunk to give num_points) / uniform
    voxel_m: float = bounded(0.05, gt=0)  # first voxel size tried (metres)
    inlier_factor: float = bounded(1.5, gt=0)  # RANSAC inlier distance, in median point spacings of cloud a
    min_matches: int = bounded(30, ge=3)  # fewer mutual matches: use all b -> a best matches
    ransac_iterations: int = bounded(5_000, gt=0)  # at most; stops early at ransac_confidence
    ransac_confidence: float = bounded(0.999, gt=0, lt=1)
    identity_fallback: bool = True  # return the identity when it fits better than the RANSAC pose
    keypoint_ratio: float = bounded(1.0, gt=0, le=1)  # match only this share of b's points: the least planar
    #                                 ones (salient)
    refine: Literal["plane", "none"] = "plane"  # fine stage: point-to-plane on the sampled points, or none
    refine_factor: float = bounded(2.0, gt=0)  # fine-stage correspondence distance, in median point spacings
    refine_iterations: int = bounded(30, gt=0)
    refine_points: int = bounded(4096, ge=0)  # fine stage on this many points drawn uniformly from each
    #                                 cloud (0: on the num_points sampled points)
    free_space_weight: float = bounded(5.0, ge=0)  # the fine stage (and the fallback) keep the pose with the
    #                                 highest fitness - this x its free-space violations (free_space_violations);
    #                                 0: fitness alone
    classical_below: float = bounded(0.0, ge=0, le=1)  # confidence below which FPFH + RANSAC + ICP on the
    #                                 dense clouds (training/baselines.py) is tried; its pose kept where it
    #                                 scores better (as the fine stage scores); 0: never
    seed: int = 0                   # sampling and RANSAC (evaluation sets it from evaluate.seed)


def sample_points(points, n: int, rng: np.random.Generator) -> np.ndarray:
    """n valid points (finite, not all zero) drawn uniformly from an (M, 3) cloud, in random order; (n, 3)
    float32. Draws indices first and checks only those (a dense frame has ~300 k points); with replacement
    only when the cloud has fewer than n valid points."""
    p = np.asarray(points).reshape(-1, 3)
    m = len(p)
    if m == 0:
        return np.zeros((n, 3), np.float32)
    if m > 4 * n:
        idx = np.unique(rng.integers(0, m, size=3 * n))
        cand = clean_cloud(p[idx])
        if len(cand) >= n:
            return cand[rng.permutation(len(cand))[:n]]
    valid = clean_cloud(p)
    if len(valid) == 0:
        return np.zeros((n, 3), np.float32)
    return valid[rng.choice(len(valid), size=n, replace=len(valid) < n)]


def procrustes(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The (weighted) least-squares rigid transform T with T src ~ dst (Kabsch); (K, 3) x2 -> (4, 4) float64."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
    w = w / max(w.sum(), 1e-12)
    cs, cd = w @ src, w @ dst
    H = (src - cs).T @ ((dst - cd) * w[:, None])
    U, _, Vt = np.linalg.svd(H)
    d = np.sign(np.linalg.det(Vt.T @ U.T)) or 1.0
    R = Vt.T @ np.diag([1.0, 1.0, d]) @ U.T
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = cd - R @ cs
    return T


def mutual_matches(f_a: np.ndarray, f_b: np.ndarray, min_matches: int = 30) -> np.ndarray:
    """Correspondences (K, 2) int32 as (index in b, index in a): mutual nearest neighbours of the descriptor
    similarity f_b @ f_a.T, or every b point's best a when fewer than ``min_matches`` are mutual."""
    import torch

    sim = torch.from_numpy(np.ascontiguousarray(f_b)) @ torch.from_numpy(np.ascontiguousarray(f_a)).T
    ab = sim.argmax(dim=1).numpy()
    ba = sim.t().contiguous().argmax(dim=1).numpy()  # = argmax(dim=0), ~2x faster on a CPU (rows are contiguous)
    ib = np.arange(len(f_b))
    mutual = ba[ab] == ib
    if mutual.sum() < min_matches:
        mutual[:] = True
    return np.stack([ib[mutual], ab[mutual]], axis=1).astype(np.int32)


def refine_point_to_plane(points_a: np.ndarray, points_b: np.ndarray, inits: list[np.ndarray], dist: float,
                          iterations: int = 30) -> list[np.ndarray]:
    """Point-to-plane alignment of the sampled cloud b onto the sampled cloud a from each pose of ``inits``
    (``baselines.point_to_plane_icp``; normals of a from its 16 nearest neighbours, oriented towards the
    camera, estimated once for all starts); a list of (4, 4) float64."""
    import open3d as o3d

    from synthseq.training.baselines import point_to_plane_icp

    pcd_a = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points_a.astype(np.float64)))
    pcd_b = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points_b.astype(np.float64)))
    pcd_a.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(16))
    pcd_a.orient_normals_towards_camera_location(np.zeros(3))
    return [np.array(point_to_plane_icp(pcd_a, pcd_b, np.asarray(T0, np.float64), float(dist),
                                        int(iterations)).transformation) for T0 in inits]


def fitness(points_a_tree, points_b: np.ndarray, a_from_b: np.ndarray, dist: float) -> float:
    """Fraction of b's points within ``dist`` of a point of a after ``a_from_b`` (scipy cKDTree of a)."""
    pb = points_b @ a_from_b[:3, :3].T + a_from_b[:3, 3]
    d, _ = points_a_tree.query(pb, k=1, distance_upper_bound=dist)
    return float(np.mean(np.isfinite(d)))


def free_space_violations(points_a: np.ndarray, points_b_in_a: np.ndarray, spacing: float,
                          bins: tuple[int, int] = (48, 36), relative: float = 0.02, spacings: float = 3.0) -> float:
    """Fraction of b's points (already mapped into a's frame by a candidate pose) that lie clearly *in front of*
    the nearest surface a saw in their direction: in space the sensor at a's origin saw through, where no
    surface can be. A right pose puts almost none there (noise, moving things: ~1% on real pairs); a wrong pose
    that still fits by sliding along planes usually puts many (the classic free-space check of range-scan
    registration). Directions are binned by azimuth and elevation about a's origin (``bins``, over the 0.5-99.5%
    range of a's directions, so a camera's frustum and a spinning LiDAR's sweep both work), each bin keeping the
    nearest range of a's points in it; "clearly in front" = closer than that by ``spacings`` point spacings plus
    ``relative`` x the range. Points in directions a did not observe count as no violation. To test several
    poses against one a, build the test once: :func:`free_space_test`."""
    return free_space_test(points_a, spacing, bins, relative, spacings)(points_b_in_a)


def _directions(p: np.ndarray):
    """Azimuth, elevation (about the z axis's forward direction) and range of points (M, 3)."""
    p = np.asarray(p, np.float64)
    return np.arctan2(p[:, 0], p[:, 2]), np.arctan2(p[:, 1], np.hypot(p[:, 0], p[:, 2])), np.linalg.norm(p, axis=1)


def free_space_test(points_a: np.ndarray, spacing: float, bins: tuple[int, int] = (48, 36), relative: float = 0.02,
                    spacings: float = 3.0):
    """:func:`free_space_violations` against ``points_a`` as a function of b's mapped points: a's direction bins
    and nearest ranges are computed once, for every pose tested."""
    if len(points_a) == 0:
        return lambda points_b_in_a: 0.0
    az, el, r = _directions(points_a)
    (a0, a1), (e0, e1) = np.percentile(az, [0.5, 99.5]), np.percentile(el, [0.5, 99.5])
    W, H = bins

    def cell(az, el):
        i = np.floor((az - a0) / max(a1 - a0, 1e-9) * W).astype(np.int64)
        j = np.floor((el - e0) / max(e1 - e0, 1e-9) * H).astype(np.int64)
        return j * W + i, (i >= 0) & (i < W) & (j >= 0) & (j < H)

    c, inside = cell(az, el)
    nearest = np.full(W * H, np.inf)
    np.minimum.at(nearest, c[inside], r[inside])

    def violations(points_b_in_a) -> float:
        if len(points_b_in_a) == 0:
            return 0.0
        qaz, qel, qr = _directions(points_b_in_a)
        qc, qin = cell(qaz, qel)
        near = nearest[qc[qin]]
        seen = np.isfinite(near)
        clearly_in_front = qr[qin][seen] < near[seen] - (spacings * spacing + relative * near[seen])
        return float(clearly_in_front.sum() / len(points_b_in_a))

    return violations


def ransac_correspondences(points_a: np.ndarray, points_b: np.ndarray, corres: np.ndarray, dist: float,
                           iterations: int = 20_000, confidence: float = 0.999, seed: int = 0) -> np.ndarray:
    """Open3D RANSAC over given correspondences (b -> a), then an SVD refit on its inliers; (4, 4) float64."""
    import open3d as o3d

    reg = o3d.pipelines.registration
    if hasattr(o3d.utility, "random"):
        o3d.utility.random.seed(int(seed))
    pcd_a = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points_a.astype(np.float64)))
    pcd_b = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points_b.astype(np.float64)))
    res = reg.registration_ransac_based_on_correspondence(
        pcd_b, pcd_a, o3d.utility.Vector2iVector(corres), dist,
        reg.TransformationEstimationPointToPoint(False), 3,
        [reg.CorrespondenceCheckerBasedOnEdgeLength(0.9), reg.CorrespondenceCheckerBasedOnDistance(dist)],
        reg.RANSACConvergenceCriteria(int(iterations), float(confidence)))
    T = np.array(res.transformation)
    src, dst = points_b[corres[:, 0]], points_a[corres[:, 1]]
    r = np.linalg.norm(src @ T[:3, :3].T + T[:3, 3] - dst, axis=1)
    inl = r < dist
    if inl.sum() >= 3:
        T = procrustes(src[inl], dst[inl])
    return T


class Estimator:
    """``estimator(cloud_a, cloud_b) -> (a_from_b, confidence)`` around a trained pose network P.

    Args:
        model: ``MatchPoseNet`` (correspondences + RANSAC) or ``PoseNet`` (regression), in eval mode.
        options: :class:`EstimatorOptions`.
        device: torch device of the model.
    """

    def __init__(self, model, options: EstimatorOptions | None = None, device="cpu"):
        self.model = model
        self.options = options or EstimatorOptions()
        self.device = device
        self.last_seconds = 0.0
        self.last_coarse = (np.eye(4), 0.0, 0.0)  # (pose, confidence, seconds) before the fine stage
        self.last_classical = False  # whether the last pose came from the classical fallback (it scored better)
        self._judge = lambda a_from_b: (0.0, 0.0)  # judge(): the last pair's (score, fitness) of a pose

    def judge(self, a_from_b) -> tuple[float, float]:
        """(score, fitness) of any pose for the last pair the estimator was called on, as its fine stage and
        fallback compare poses: the fitness (the confidence) less ``free_space_weight`` x the share of b's points
        the pose puts in a's free space. Lets a caller weigh another method's pose (evaluation's
        ``ours_fallback``). (0, 0) before the first pair and after a pair without valid points."""
        return self._judge(a_from_b)

    def descriptors(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3) -> ((N, C) float32 unit descriptors, (N,) saliency: 1 - planarity of the neighbourhood)."""
        import torch

        from synthseq.training.models import local_geometry

        with torch.no_grad():
            x = torch.as_tensor(points, dtype=torch.float32, device=self.device)[None]
            f = self.model.features(x)[0].float().cpu().numpy()
            if self.options.keypoint_ratio >= 1.0:
                return f, np.ones(len(points), np.float32)
            _, shape, _ = local_geometry(x, self.model.features.k)
            return f, (1.0 - shape[0, :, 1]).float().cpu().numpy()

    def __call__(self, cloud_a, cloud_b) -> tuple[np.ndarray, float]:
        from scipy.spatial import cKDTree

        start = time.perf_counter()
        o = self.options
        rng = np.random.default_rng(o.seed)
        if o.sampling == "voxel":
            pa = voxel_points(cloud_a, o.num_points, rng, o.voxel_m)
            pb = voxel_points(cloud_b, o.num_points, rng, o.voxel_m)
        else:
            pa, pb = sample_points(cloud_a, o.num_points, rng), sample_points(cloud_b, o.num_points, rng)
        if len(pa) < 3 or len(pb) < 3 or not (pa.any() and pb.any()):  # a frame without valid points
            self.last_seconds = time.perf_counter() - start
            self.last_coarse = (np.eye(4), 0.0, self.last_seconds)
            self.last_classical = False
            self._judge = lambda a_from_b: (0.0, 0.0)
            return np.eye(4), 0.0
        tree = cKDTree(pa)
        spacing = float(np.median(tree.query(pa, k=2)[0][:, 1]))
        dist = max(o.inlier_factor * spacing, 1e-3)
        if hasattr(self.model, "features"):
            (f_a, _), (f_b, sal_b) = self.descriptors(pa), self.descriptors(pb)
            keep = np.arange(len(pb))
            if o.keypoint_ratio < 1.0:
                keep = np.argsort(-sal_b)[:max(int(o.keypoint_ratio * len(pb)), o.min_matches)]
            corres = mutual_matches(f_a, f_b[keep], o.min_matches)
            corres[:, 0] = keep[corres[:, 0]]
            T = ransac_correspondences(pa, pb, corres, dist, o.ransac_iterations, o.ransac_confidence, o.seed)
        else:
            import torch

            with torch.no_grad():
                a = torch.as_tensor(pa, dtype=torch.float32, device=self.device)[None]
                b = torch.as_tensor(pb, dtype=torch.float32, device=self.device)[None]
                T = self.model(a, b)[0].double().cpu().numpy()
        conf = fitness(tree, pb, T, dist)
        if o.identity_fallback:
            conf_id = fitness(tree, pb, np.eye(4), dist)
            if conf_id > conf:
                T, conf = np.eye(4), conf_id
        self.last_coarse = (T, conf, time.perf_counter() - start)
        fa, fb = pa, pb
        if o.refine == "plane" and o.refine_points > 0:
            fa, fb = sample_points(cloud_a, o.refine_points, rng), sample_points(cloud_b, o.refine_points, rng)

        in_free_space = free_space_test(fa, spacing) if o.free_space_weight > 0 else None

        def judged(Tr):  # (score, fitness): fitness less the weighted share of b's points in a's free space
            Tr = np.asarray(Tr, np.float64)
            fit = fitness(tree, pb, Tr, dist)
            if in_free_space is None:
                return fit, fit
            return fit - o.free_space_weight * in_free_space(fb @ Tr[:3, :3].T + Tr[:3, 3]), fit

        self._judge = judged

        best = None
        if o.refine == "plane":
            # refine the coarse pose and, with the fallback on, the identity; keep the better result (a wrong
            # coarse pose can out-fit the identity by sliding along planes, its refinement should not out-score
            # the refined identity; at low overlap a wrong pose can fit as well as the right one, and the
            # free-space check tells them apart)
            starts = [T] + ([np.eye(4)] if o.identity_fallback and not np.array_equal(T, np.eye(4)) else [])
            refined = refine_point_to_plane(fa, fb, starts, o.refine_factor * spacing, o.refine_iterations)
            T, (score, conf) = max(((Tr, judged(Tr)) for Tr in refined), key=lambda tj: tj[1][0])
            best = score
        self.last_classical = conf < o.classical_below
        if self.last_classical:
            from synthseq.training.baselines import fpfh_ransac_icp

            Tc = fpfh_ransac_icp(cloud_a, cloud_b, seed=o.seed).a_from_b
            score_c, conf_c = judged(Tc) if np.all(np.isfinite(Tc)) else (-np.inf, -1.0)
            self.last_classical = score_c > (judged(T)[0] if best is None else best)  # only where it is better
            if self.last_classical:
                T, conf = Tc, conf_c
        self.last_seconds = time.perf_counter() - start
        return T, conf


def load_estimator(checkpoint, device="cpu", ema: bool = False, **options) -> Estimator:
    """The estimator of a training run (run directory or checkpoint file): its P (or EMA teacher);
    ``options`` override :class:`EstimatorOptions`."""
    from synthseq.training.checkpoint import load_pose_model

    model, _ = load_pose_model(checkpoint, device=device, ema=ema)
    return Estimator(model, EstimatorOptions(**options), device)


def export_pose_weights(run_dir, out_path, note: str = "") -> "Path":
    """Write a small checkpoint with only the pose network (P, EMA teacher), the run's config, step and last
    metrics, and the provenance of its training data (the dataset's manifest config, when readable): what
    the repository ships as ``training/weights/pose_match_small.pt``. Loadable wherever a training
    checkpoint is (``synthseq evaluate --checkpoint``, ``train.init``).
    """
    import json
    from pathlib import Path

    from synthseq.training.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(run_dir)
    data = state["config"].get("train", {}).get("data")
    provenance = {"note": note, "train_data": data}
    manifest = Path(data) / "manifest.json" if data else None
    if manifest is not None and manifest.is_file():
        m = json.loads(manifest.read_text())
        provenance["data_config_json"] = json.dumps(m.get("config", {}), sort_keys=True)
        provenance["data_num_sequences"] = sum(len(s.get("sequences", [])) for s in m.get("shards", []))
    slim = {k: state[k] for k in ("format", "version", "step", "config", "metrics")}
    slim["models"] = {k: state["models"][k] for k in ("P", "P_ema")}
    slim["provenance"] = provenance
    return save_checkpoint(slim, out_path)
