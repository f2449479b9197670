"""Evaluation metrics: relative pose error, success rate, GAN realism (1-NNA, MMD, COV) and TUM export.

Pose errors follow evo's RPE exactly (Sturm et al. 2012; evo ``PoseRelation.rotation_angle_deg`` and
``translation_part``): for an estimated ``a_from_b`` and the ground-truth one, the error transform is
``E = inv(gt_a_from_b) @ est_a_from_b``; the rotation error is the angle of ``E``'s rotation (the
geodesic distance between the two rotations, equal for ``R_est^T R_gt``) and the translation error is the
norm of ``E``'s translation, ``|R_gt^T (t_est - t_gt)| = |t_est - t_gt|``.

GAN realism uses the PointFlow protocol (Yang et al. 2019) under the Chamfer distance, computed on the CPU
with scipy cKDTrees (float64, exact nearest neighbours; ``chamfer_naive`` is the brute-force reference):
clouds are compared as they are (camera frame, metres), not normalised to a unit box.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from synthseq.geometry import relative_pose, rotation_angle_deg

logger = logging.getLogger(__name__)

# The success thresholds of the evaluation (DESIGN.md "Evaluation"): < 5 deg and < 5 cm.
SUCCESS_ROT_DEG = 5.0
SUCCESS_TRANS_CM = 5.0


# ----------------------------------------------------------------------------------------------------
# Relative pose error
# ----------------------------------------------------------------------------------------------------

def relative_pose_errors(est_a_from_b: np.ndarray, gt_a_from_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation and translation error of estimated relative poses against the ground truth (evo's RPE).

    Args:
        est_a_from_b: (P, 4, 4) or (4, 4) float, estimated transforms mapping frame-b points into frame a.
        gt_a_from_b: same shape, ground truth.

    Returns:
        rot_deg: (P,) (or scalar) float64, angle of ``R_gt^T R_est`` in degrees.
        trans_cm: (P,) (or scalar) float64, ``|t_est - t_gt|`` in centimetres.

    Raises:
        ValueError: the shapes differ or are not (..., 4, 4).
    """
    est = np.asarray(est_a_from_b, dtype=np.float64)
    gt = np.asarray(gt_a_from_b, dtype=np.float64)
    if est.shape != gt.shape or est.shape[-2:] != (4, 4):
        raise ValueError(f"expected est and gt of the same shape (..., 4, 4), got {est.shape} and {gt.shape}")
    R_err = np.swapaxes(gt[..., :3, :3], -1, -2) @ est[..., :3, :3]
    rot_deg = rotation_angle_deg(R_err)
    trans_cm = 100.0 * np.linalg.norm(est[..., :3, 3] - gt[..., :3, 3], axis=-1)
    return rot_deg, trans_cm


def success_mask(rot_deg: np.ndarray, trans_cm: np.ndarray, max_rot_deg: float = SUCCESS_ROT_DEG,
                 max_trans_cm: float = SUCCESS_TRANS_CM) -> np.ndarray:
    """(P,) bool: pairs with rotation error < ``max_rot_deg`` and translation error < ``max_trans_cm``
    (non-finite errors, i.e. failed estimates, are failures)."""
    rot = np.asarray(rot_deg, dtype=np.float64)
    trans = np.asarray(trans_cm, dtype=np.float64)
    return np.isfinite(rot) & np.isfinite(trans) & (rot < max_rot_deg) & (trans < max_trans_cm)


def _stats(x: np.ndarray) -> dict:
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return {"median": math.nan, "mean": math.nan, "rmse": math.nan, "max": math.nan}
    return {"median": float(np.median(x)), "mean": float(np.mean(x)), "rmse": float(np.sqrt(np.mean(x * x))),
            "max": float(np.max(x))}


def summarize_errors(rot_deg: np.ndarray, trans_cm: np.ndarray, seconds: np.ndarray | None = None,
                     groups: np.ndarray | None = None, block_lengths: dict | int = 1,
                     num_resamples: int = 2000, seed: int = 0, confidence: np.ndarray | None = None) -> dict:
    """Summary of per-pair errors: median / mean / RMSE / max of each, success rate with its 95% block
    bootstrap interval, time per pair.

    Args:
        rot_deg: (P,) rotation errors, degrees (inf/NaN = the method failed to return a pose).
        trans_cm: (P,) translation errors, centimetres.
        seconds: (P,) wall-clock seconds per pair, or None.
        groups, block_lengths, num_resamples: the bootstrap (``block_bootstrap_ci``); pairs in start order
            within each group (sequence).
        seed: bootstrap seed.
        confidence: (P,) the estimator's confidence per pair, or None.

    Returns:
        ``{"num_pairs", "rot_deg": {median, mean, rmse, max}, "trans_cm": {...}, "success_rate" (0..1),
        "success_ci": [low, high] (95%), "num_failed", "time_s": {median, mean} or None,
        "confidence": {median, mean} or None}``. Statistics are over all pairs; a failed pair
        (non-finite error) counts as 180 deg / its non-finite translation replaced by 1e4 cm so it hurts the
        statistics rather than vanishing from them.
    """
    rot = np.asarray(rot_deg, dtype=np.float64).copy()
    trans = np.asarray(trans_cm, dtype=np.float64).copy()
    failed = ~(np.isfinite(rot) & np.isfinite(trans))
    ok = success_mask(rot, trans)
    rot[~np.isfinite(rot)] = 180.0
    trans[~np.isfinite(trans)] = 1e4
    out = {
        "num_pairs": int(rot.size),
        "rot_deg": _stats(rot),
        "trans_cm": _stats(trans),
        "success_rate": float(ok.mean()) if rot.size else math.nan,
        "success_ci": list(block_bootstrap_ci(ok, groups, block_lengths, num_resamples,
                                              rng=np.random.default_rng(seed))),
        "num_failed": int(failed.sum()),
        "time_s": None,
        "confidence": None,
    }
    if confidence is not None:
        c = np.asarray(confidence, dtype=np.float64)
        c = c[np.isfinite(c)]
        if c.size:
            out["confidence"] = {"median": float(np.median(c)), "mean": float(np.mean(c))}
    if seconds is not None:
        s = np.asarray(seconds, dtype=np.float64)
        out["time_s"] = {"median": float(np.median(s)) if s.size else math.nan,
                         "mean": float(np.mean(s)) if s.size else math.nan}
    return out


def block_length(num_pairs: int, gap: int = 1, spacing_frames: float = 1.0) -> int:
    """Block length of the moving-block bootstrap for ``num_pairs`` pairs (t, t + gap) whose starts are
    ``spacing_frames`` apart: at least the number of neighbouring pairs whose frame windows overlap
    (``ceil(gap / spacing)``: they share frames, so their outcomes are correlated), and at least
    ``ceil(P ** (1/3))`` (the usual order for bootstrap variance/interval estimates, Hall, Horowitz & Jing
    1995); at most P."""
    if num_pairs <= 1:
        return 1
    overlap = math.ceil(gap / max(float(spacing_frames), 1e-9))
    return int(min(num_pairs, max(1, overlap, math.ceil(num_pairs ** (1.0 / 3.0)))))


def pairs_block_length(starts, gap: int = 1) -> int:
    """:func:`block_length` of the pairs (t, t + gap) starting at ``starts`` (frame numbers in order), spaced by
    their mean spacing."""
    P = len(starts)
    spacing = (float(starts[-1] - starts[0]) / (P - 1)) if P > 1 else 1.0
    return block_length(P, gap, spacing)


def effective_sample_size(groups: np.ndarray, block_lengths: dict | int = 1) -> float:
    """Independent blocks among the values: sum over groups of P_g / L_g (L_g clamped to 1..P_g).

    Args:
        groups: (P,) group label of each value.
        block_lengths: one L for all groups, or {group: L} (missing groups: 1).
    """
    g = np.asarray(groups)
    n_eff = 0.0
    for label in set(g.tolist()):
        n = int(np.sum(g == label))
        L = block_lengths if isinstance(block_lengths, int) else block_lengths.get(label, 1)
        n_eff += n / max(1, min(int(L), n))
    return n_eff


def block_bootstrap_ci(values: np.ndarray, groups: np.ndarray | None = None, block_lengths: dict | int = 1,
                       num_resamples: int = 2000, level: float = 0.95,
                       rng: np.random.Generator | None = None, binary: bool = True) -> tuple[float, float]:
    """Percentile confidence interval of the mean of ``values`` (e.g. 0/1 success per pair) under a moving-block
    bootstrap: within each group (a sequence), blocks of ``L`` consecutive values (in the given order, i.e.
    by start frame) are drawn with replacement until the group's length is filled; groups are resampled
    separately (stratified) and pooled. Neighbouring pairs of one capture are correlated, so an iid bootstrap
    would give intervals that are too narrow.

    Args:
        values: (P,) float (or bool), in pair order within each group.
        groups: (P,) group labels (None: one group). Values of a group must be contiguous or at least in order.
        block_lengths: one L for all groups, or {group: L}.
        num_resamples: bootstrap resamples.
        level: coverage of the interval.
        rng: random generator (default seeded 0: the interval is reproducible).
        binary: for 0/1 values, widen the interval to at least the Wilson score interval at the effective
            sample size sum over groups of P_g / L_g (the bootstrap alone collapses with few blocks).

    Returns:
        (low, high), NaN when there are no values.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        return math.nan, math.nan
    rng = rng if rng is not None else np.random.default_rng(0)
    g = np.zeros(v.size, dtype=np.int64) if groups is None else np.asarray(groups)
    sums = np.zeros(num_resamples)
    for label in list(dict.fromkeys(g.tolist())):
        x = v[g == label]
        n = len(x)
        L = block_lengths if isinstance(block_lengths, int) else block_lengths.get(label, 1)
        L = int(max(1, min(int(L), n)))
        num_blocks = -(-n // L)
        starts = rng.integers(0, n - L + 1, size=(num_resamples, num_blocks))
        # sum of the first n values of the concatenated blocks: whole blocks, then a partial last one
        csum = np.concatenate([[0.0], np.cumsum(x)])
        block_sums = csum[starts + L] - csum[starts]
        last = n - (num_blocks - 1) * L
        total = block_sums[:, :-1].sum(axis=1) + (csum[starts[:, -1] + last] - csum[starts[:, -1]])
        sums += total
    means = sums / v.size
    alpha = 0.5 * (1.0 - level)
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    if binary and np.all((v == 0) | (v == 1)):
        # With only a few blocks per sequence the bootstrap distribution collapses (one block = the whole
        # sequence gives a zero-width interval); never report less uncertainty than a Wilson score interval
        # at the effective sample size sum(P_g / L_g) (independent blocks).
        w_lo, w_hi = wilson_interval(float(v.mean()), effective_sample_size(g, block_lengths), level)
        lo, hi = min(lo, w_lo), max(hi, w_hi)
    return float(lo), float(hi)


def wilson_interval(rate: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``rate`` observed on ``n`` (possibly fractional, effective)
    independent trials."""
    from statistics import NormalDist

    if n <= 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + 0.5 * level)
    denom = 1.0 + z * z / n
    centre = (rate + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(rate * (1 - rate) / n + z * z / (4 * n * n), 0.0)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def relative_poses_at_delta(world_from_camera: np.ndarray, delta: int = 1) -> np.ndarray:
    """Relative poses between frames (i, i + delta) for i = 0, delta, 2 delta, ... (evo's consecutive pairs,
    ``all_pairs=False``, ``delta_unit=frames``).

    Args:
        world_from_camera: (T, 4, 4) float trajectory.
        delta: frame gap >= 1.

    Returns:
        (P, 4, 4) float64 ``cam_i_from_cam_{i+delta}``, P = (T - 1) // delta.
    """
    T = np.asarray(world_from_camera, dtype=np.float64)
    if delta < 1:
        raise ValueError(f"delta: expected >= 1, got {delta}")
    ids = np.arange(0, T.shape[0], delta)
    return relative_pose(T[ids[:-1]], T[ids[1:]])


def trajectory_rpe(gt_world_from_camera: np.ndarray, est_world_from_camera: np.ndarray,
                   delta: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """RPE of an estimated trajectory against the ground truth, as evo_rpe computes it (frame deltas,
    consecutive pairs).

    Args:
        gt_world_from_camera: (T, 4, 4) ground truth.
        est_world_from_camera: (T, 4, 4) estimate, same timestamps.
        delta: frame gap.

    Returns:
        rot_deg, trans_cm: (P,) float64, P = (T - 1) // delta.
    """
    gt = np.asarray(gt_world_from_camera, dtype=np.float64)
    est = np.asarray(est_world_from_camera, dtype=np.float64)
    if gt.shape != est.shape:
        raise ValueError(f"expected trajectories of the same shape, got {gt.shape} and {est.shape}")
    return relative_pose_errors(relative_poses_at_delta(est, delta), relative_poses_at_delta(gt, delta))


# ----------------------------------------------------------------------------------------------------
# Trajectories
# ----------------------------------------------------------------------------------------------------

def chain_relative_poses(a_from_b: np.ndarray, world_from_first: np.ndarray | None = None) -> np.ndarray:
    """Chain frame-to-frame estimates into a trajectory: ``world_from_{t+1} = world_from_t @ t_from_{t+1}``.

    Args:
        a_from_b: (T - 1, 4, 4) float, estimate of ``cam_t_from_cam_{t+1}`` for t = 0 .. T - 2.
        world_from_first: (4, 4) pose of frame 0 (the evaluation passes the ground-truth first pose, so the
            estimate and the ground truth share a start and evo_ape needs no alignment); None = identity.

    Returns:
        (T, 4, 4) float64 world_from_camera.
    """
    rel = np.asarray(a_from_b, dtype=np.float64)
    if rel.ndim != 3 or rel.shape[1:] != (4, 4):
        raise ValueError(f"a_from_b: expected shape (T - 1, 4, 4), got {rel.shape}")
    out = np.empty((rel.shape[0] + 1, 4, 4))
    out[0] = np.eye(4) if world_from_first is None else np.asarray(world_from_first, dtype=np.float64)
    for t in range(rel.shape[0]):
        out[t + 1] = out[t] @ rel[t]
    return out


def export_tum_trajectories(out_dir, timestamps: np.ndarray, gt_world_from_camera: np.ndarray,
                            estimates: dict[str, np.ndarray], name: str = "") -> dict[str, str]:
    """Write ``groundtruth.tum`` and one ``<method>.tum`` per chained estimate into ``out_dir``.

    Args:
        out_dir: folder (created).
        timestamps: (T,) float seconds.
        gt_world_from_camera: (T, 4, 4) ground truth.
        estimates: method name -> (T - 1, 4, 4) frame-to-frame ``cam_t_from_cam_{t+1}`` estimates; each is
            chained from the ground-truth first pose (``chain_relative_poses``). Non-finite steps (a
            failed estimate) are replaced by identity, and logged.
        name: sequence name for the file headers.

    Returns:
        file stem ("groundtruth" or the method) -> path written.
    """
    from synthseq.datasets.trajectory import write_tum_trajectory

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    gt = np.asarray(gt_world_from_camera, dtype=np.float64)
    paths = {}
    p = out_dir / "groundtruth.tum"
    write_tum_trajectory(p, timestamps, gt, header=f"ground truth of {name}, world_from_camera")
    paths["groundtruth"] = str(p)
    for method, rel in estimates.items():
        rel = np.array(rel, dtype=np.float64)
        bad = ~np.all(np.isfinite(rel), axis=(1, 2))
        if bad.any():
            logger.warning("%s %s: %d failed frame-to-frame estimates replaced by identity in the trajectory",
                           name, method, int(bad.sum()))
            rel[bad] = np.eye(4)
        traj = chain_relative_poses(rel, gt[0])
        p = out_dir / f"{method}.tum"
        write_tum_trajectory(p, timestamps, traj,
                             header=f"{method} on {name}: frame-to-frame estimates chained from the "
                                    "ground-truth first pose, world_from_camera")
        paths[method] = str(p)
    return paths


# ----------------------------------------------------------------------------------------------------
# GAN realism (PointFlow protocol, Chamfer distance)
# ----------------------------------------------------------------------------------------------------

def subsample_clouds(clouds: np.ndarray, num_points: int, rng: np.random.Generator) -> np.ndarray:
    """Pick ``num_points`` of each cloud's points without replacement (all of them when fewer).

    Args:
        clouds: (S, N, 3) float.
        num_points: points to keep per cloud.
        rng: random generator.

    Returns:
        (S, min(N, num_points), 3) float64.
    """
    clouds = np.asarray(clouds, dtype=np.float64)
    S, N, _ = clouds.shape
    if N <= num_points:
        return clouds
    idx = np.stack([rng.choice(N, size=num_points, replace=False) for _ in range(S)])
    return np.take_along_axis(clouds, idx[:, :, None], axis=1)


def chamfer_matrix(x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    """Chamfer distances between every cloud of ``x`` and every cloud of ``y`` (PointFlow's definition:
    mean squared nearest-neighbour distance from x to y plus from y to x).

    Uses one scipy cKDTree per cloud, built once (~0.7 ms per pair of 512-point clouds on one core, 3-4x
    faster than dense float64 distance matrices); with ``y`` None only the upper triangle of the symmetric
    matrix is computed.

    Args:
        x: (A, N, 3) float clouds, metres.
        y: (B, M, 3) float clouds, or None for ``x`` against itself.

    Returns:
        (A, B) float64, square metres.
    """
    from scipy.spatial import cKDTree

    x = np.asarray(x, dtype=np.float64)
    sym = y is None
    y = x if sym else np.asarray(y, dtype=np.float64)
    if x.ndim != 3 or y.ndim != 3 or x.shape[-1] != 3 or y.shape[-1] != 3:
        raise ValueError(f"expected clouds of shape (A, N, 3) and (B, M, 3), got {x.shape} and {y.shape}")
    A, B = len(x), len(y)
    tx = [cKDTree(c) for c in x]
    ty = tx if sym else [cKDTree(c) for c in y]
    out = np.zeros((A, B))
    for a in range(A):
        for b in range(a + 1 if sym else 0, B):
            d_ab, _ = ty[b].query(x[a])
            d_ba, _ = tx[a].query(y[b])
            out[a, b] = np.mean(d_ab ** 2) + np.mean(d_ba ** 2)
            if sym:
                out[b, a] = out[a, b]
    return out


def chamfer_naive(x: np.ndarray, y: np.ndarray) -> float:
    """Chamfer distance of two clouds from the full (N, M) distance matrix: the reference ``chamfer_matrix``
    is tested against. x: (N, 3), y: (M, 3). Returns square metres."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    d2 = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    return float(d2.min(axis=1).mean() + d2.min(axis=0).mean())


def realism_from_distances(d_gr: np.ndarray, d_gg: np.ndarray, d_rr: np.ndarray) -> dict:
    """1-NNA, MMD and COV from distance matrices (PointFlow, Yang et al. 2019, Sec. 5.1).

    Args:
        d_gr: (G, R) distances generated-to-reference.
        d_gg: (G, G) generated-to-generated.
        d_rr: (R, R) reference-to-reference.

    Returns:
        ``{"1nna": accuracy of the leave-one-out 1-nearest-neighbour classifier telling the two sets apart
        (0.5 = indistinguishable, 1.0 = fully separable), "1nna_generated", "1nna_reference" (per-set
        accuracies), "mmd": mean over reference clouds of the distance to the closest generated cloud
        (m^2), "cov": fraction of reference clouds that are the nearest neighbour of some generated cloud}``.
    """
    d_gr = np.asarray(d_gr, dtype=np.float64)
    G, R = d_gr.shape
    d_gg = np.array(d_gg, dtype=np.float64)
    d_rr = np.array(d_rr, dtype=np.float64)
    np.fill_diagonal(d_gg, np.inf)
    np.fill_diagonal(d_rr, np.inf)
    # Leave-one-out 1-NN: a generated cloud is classified correctly when its nearest other cloud is generated.
    # Ties go to the other set (the conservative choice: identical sets give 1-NNA <= 0.5).
    correct_g = d_gg.min(axis=1) < d_gr.min(axis=1)
    correct_r = d_rr.min(axis=1) < d_gr.min(axis=0)
    return {
        "1nna": float((correct_g.sum() + correct_r.sum()) / (G + R)),
        "1nna_generated": float(correct_g.mean()),
        "1nna_reference": float(correct_r.mean()),
        "mmd": float(d_gr.min(axis=0).mean()),
        "cov": float(np.unique(d_gr.argmin(axis=1)).size / R),
    }


def realism_metrics(generated: np.ndarray, reference: np.ndarray, num_points: int = 512,
                    max_clouds: int = 100, rng: np.random.Generator | None = None) -> dict:
    """1-NNA, MMD and COV under the Chamfer distance between two sets of clouds (PointFlow protocol).

    Each set is cut to at most ``max_clouds`` clouds (evenly spaced) and each cloud subsampled to
    ``num_points`` points, so the cost stays ~ (G + R)^2 * num_points^2.

    Args:
        generated: (G, N, 3) float clouds (e.g. refined synthetic frames), metres.
        reference: (R, M, 3) float clouds (real frames).
        num_points: points per cloud after subsampling.
        max_clouds: clouds per set at most.
        rng: generator for the subsampling (default seed 0).

    Returns:
        ``realism_from_distances``'s dict plus ``num_generated``, ``num_reference``, ``num_points``.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    g = np.asarray(generated)
    r = np.asarray(reference)
    if g.ndim != 3 or r.ndim != 3 or len(g) < 2 or len(r) < 2:
        raise ValueError(f"expected two sets of >= 2 clouds (S, N, 3), got {g.shape} and {r.shape}")
    g = g[np.unique(np.linspace(0, len(g) - 1, min(len(g), max_clouds)).round().astype(int))]
    r = r[np.unique(np.linspace(0, len(r) - 1, min(len(r), max_clouds)).round().astype(int))]
    g = subsample_clouds(g, num_points, rng)
    r = subsample_clouds(r, num_points, rng)
    out = realism_from_distances(chamfer_matrix(g, r), chamfer_matrix(g), chamfer_matrix(r))
    out.update(num_generated=int(len(g)), num_reference=int(len(r)), num_points=int(g.shape[1]))
    return out
