"""The pose estimator used by "ours" in evaluation: two camera-frame clouds -> ``a_from_b`` + a confidence.

``estimator(cloud_a, cloud_b) -> (a_from_b (4, 4) float64, confidence float in [0, 1])``, where ``cloud_a`` is
frame t and ``cloud_b`` frame t + d, each (M, 3) in its own camera frame (OpenCV axes, metres), dense or
sampled (zero rows and non-finite rows are dropped). ``a_from_b`` = cam_t_from_cam_{t+d} maps b's points into
a. The estimator does its own sampling: ``num_points`` points drawn uniformly from each cloud (seeded), as the
trainer's clouds are drawn from the valid depth pixels.

Pipeline (``model.pose: match``, the default):

1. per-point descriptors of both clouds (``MatchPoseNet.features``: PPF/EdgeConv local features, invariant
   to rigid motion);
2. mutual nearest neighbours in descriptor space -> putative correspondences (all b -> a best matches
   when fewer than ``min_matches`` are mutual);
3. RANSAC over the correspondences (Open3D ``registration_ransac_based_on_correspondence``, 3-point samples,
   edge-length and distance checks, inlier distance ``inlier_factor`` x the cloud's median point spacing),
   then a least-squares (SVD) refit on the RANSAC inliers;
4. confidence and fallback: the *fitness* of a pose is the fraction of b's points that land within the
   inlier distance of a point of a. Between the RANSAC pose and the identity (no motion), the one with the
   higher fitness is returned (so that small motions, where the identity is already right, are not made
   worse by a poor match), and the confidence is its fitness. A caller can fall back to ICP or FPFH when
   the confidence is low.

``model.pose: regress`` (ablation) returns the regressor's pose, with the same fitness as confidence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np


@dataclass
class EstimatorOptions:
    """Inference options of :class:`Estimator` (defaults used by evaluation)."""

    num_points: int = 1024          # points sampled per cloud (the trainer's train.num_points)
    inlier_factor: float = 1.5      # RANSAC inlier distance, in median point spacings of cloud a
    min_matches: int = 30           # fewer mutual matches: use all b -> a best matches
    ransac_iterations: int = 5_000  # at most; stops early at ransac_confidence
    ransac_confidence: float = 0.999
    identity_fallback: bool = True  # return the identity when it fits better than the RANSAC pose
    keypoint_ratio: float = 1.0     # match only this share of b's points: the least planar ones (salient)
    seed: int = 0


def clean_cloud(points) -> np.ndarray:
    """(M, 3) float32 without non-finite rows and zero rows (padding of frames without valid depth)."""
    p = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    p = p[np.all(np.isfinite(p), axis=1)]
    return p[np.any(p != 0.0, axis=1)]


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
        cand = p[idx].astype(np.float32)
        ok = np.all(np.isfinite(cand), axis=1) & np.any(cand != 0.0, axis=1)
        cand = cand[ok]
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
    ba = sim.argmax(dim=0).numpy()
    ib = np.arange(len(f_b))
    mutual = ba[ab] == ib
    if mutual.sum() < min_matches:
        mutual[:] = True
    return np.stack([ib[mutual], ab[mutual]], axis=1).astype(np.int32)


def fitness(points_a_tree, points_b: np.ndarray, a_from_b: np.ndarray, dist: float) -> float:
    """Fraction of b's points within ``dist`` of a point of a after ``a_from_b`` (scipy cKDTree of a)."""
    pb = points_b @ a_from_b[:3, :3].T + a_from_b[:3, 3]
    d, _ = points_a_tree.query(pb, k=1, distance_upper_bound=dist)
    return float(np.mean(np.isfinite(d)))


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
        pa, pb = sample_points(cloud_a, o.num_points, rng), sample_points(cloud_b, o.num_points, rng)
        if not (pa.any() and pb.any()):  # a frame without valid points
            self.last_seconds = time.perf_counter() - start
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
        self.last_seconds = time.perf_counter() - start
        return T, conf


def load_estimator(checkpoint, device="cpu", ema: bool = False, **options) -> Estimator:
    """The estimator of a training run (run directory or checkpoint file): its P (or EMA teacher) with
    ``num_points`` = the run's ``train.num_points``; ``options`` override :class:`EstimatorOptions`."""
    from synthseq.training.checkpoint import load_pose_model

    model, tcfg = load_pose_model(checkpoint, device=device, ema=ema)
    opts = EstimatorOptions(num_points=tcfg.num_points)
    for k, v in options.items():
        setattr(opts, k, v)
    return Estimator(model, opts, device)


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
