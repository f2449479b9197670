"""Tests of training.metrics: hand-computed pose errors, evo agreement, Chamfer vs naive, 1-NNA/MMD/COV."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from synthseq.geometry import rotation_angle_deg
from synthseq.training import metrics


def _rot(axis, angle_deg):
    return Rotation.from_rotvec(angle_deg * np.asarray(axis, float) / np.linalg.norm(axis), degrees=True).as_matrix()


def _pose(R=np.eye(3), t=(0, 0, 0)):
    return np.vstack([np.column_stack([R, t]), [0.0, 0.0, 0.0, 1.0]])


def _random_poses(rng, n, max_deg=30.0, max_m=0.5):
    out = []
    for _ in range(n):
        out.append(_pose(_rot(rng.normal(size=3), rng.uniform(0, max_deg)), rng.uniform(-max_m, max_m, 3)))
    return np.stack(out)


def test_known_rotation_and_translation_errors():
    gt = _pose(_rot([0, 0, 1], 30.0), [1.0, 2.0, 3.0])
    est = gt.copy()
    est[:3, :3] = gt[:3, :3] @ _rot([1, 1, 0], 10.0)  # 10 deg off, about an arbitrary axis
    est[:3, 3] += [0.03, 0.0, -0.04]  # 5 cm off
    rot, trans = metrics.relative_pose_errors(est[None], gt[None])
    assert rot[0] == pytest.approx(10.0, abs=1e-9)
    assert trans[0] == pytest.approx(5.0, abs=1e-9)
    # The angle is symmetric: R_est^T R_gt has the same angle.
    rot2, _ = metrics.relative_pose_errors(gt[None], est[None])
    assert rot2[0] == pytest.approx(10.0, abs=1e-9)


def test_rotation_angle_is_accurate_near_zero_and_180():
    for angle in (1e-7, 1e-3, 0.5, 90.0, 179.9, 180.0):
        assert rotation_angle_deg(_rot([0.3, -1, 2], angle)) == pytest.approx(angle, rel=1e-7, abs=1e-9)


def test_success_and_summary():
    rot = np.array([1.0, 4.9, 6.0, 1.0, np.nan])
    trans = np.array([1.0, 4.9, 1.0, 7.0, 1.0])
    assert metrics.success_mask(rot, trans).tolist() == [True, True, False, False, False]
    s = metrics.summarize_errors(rot[:4], trans[:4], seconds=[0.1, 0.2, 0.3, 0.4])
    assert s["success_rate"] == pytest.approx(0.5)
    assert s["rot_deg"]["median"] == pytest.approx(np.median(rot[:4]))
    assert s["rot_deg"]["rmse"] == pytest.approx(np.sqrt(np.mean(rot[:4] ** 2)))
    assert s["trans_cm"]["mean"] == pytest.approx(np.mean(trans[:4]))
    assert s["time_s"]["median"] == pytest.approx(0.25)
    failed = metrics.summarize_errors(rot, trans)
    assert failed["num_failed"] == 1 and failed["rot_deg"]["max"] == 180.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same shape"):
        metrics.relative_pose_errors(np.eye(4)[None], np.eye(4)[None].repeat(2, 0))


def test_chained_trajectory_reproduces_frame_to_frame_estimates():
    rng = np.random.default_rng(0)
    rel = _random_poses(rng, 7)
    first = _random_poses(rng, 1)[0]
    traj = metrics.chain_relative_poses(rel, first)
    np.testing.assert_allclose(traj[0], first)
    np.testing.assert_allclose(metrics.relative_poses_at_delta(traj, 1), rel, atol=1e-12)
    # Delta 3: pairs (0, 3), (3, 6).
    np.testing.assert_allclose(metrics.relative_poses_at_delta(traj, 3)[1], rel[3] @ rel[4] @ rel[5], atol=1e-12)


def test_rpe_of_exported_tum_files_equals_evo(tmp_path):
    """Our RPE on the exported TUM files equals evo_rpe's (delta 1 and 3 frames, consecutive pairs)."""
    try:
        from evo.core import metrics as evo_metrics
        from evo.core.metrics import PoseRelation, Unit
        from evo.tools import file_interface
    except ImportError:
        pytest.skip("evo is not importable: pip install -r requirements-dev.txt (evo==1.38.1)")
    from synthseq.datasets.trajectory import read_tum_trajectory

    rng = np.random.default_rng(1)
    T = 25
    gt_rel = _random_poses(rng, T - 1, max_deg=5.0, max_m=0.05)
    gt = metrics.chain_relative_poses(gt_rel, _random_poses(rng, 1)[0])
    noise = _random_poses(rng, T - 1, max_deg=3.0, max_m=0.03)
    est_rel = gt_rel @ noise
    timestamps = 1305031229.5 + np.arange(T) / 30.0
    paths = metrics.export_tum_trajectories(tmp_path, timestamps, gt, {"ours": est_rel}, name="synthetic")
    assert set(paths) == {"groundtruth", "ours"}

    _, gt_read = read_tum_trajectory(paths["groundtruth"])
    _, est_read = read_tum_trajectory(paths["ours"])
    traj_ref = file_interface.read_tum_trajectory_file(paths["groundtruth"])
    traj_est = file_interface.read_tum_trajectory_file(paths["ours"])
    for delta in (1, 3):
        ours_rot, ours_trans = metrics.trajectory_rpe(gt_read, est_read, delta)
        for relation, ours, scale in ((PoseRelation.rotation_angle_deg, ours_rot, 1.0),
                                      (PoseRelation.translation_part, ours_trans, 100.0)):
            rpe = evo_metrics.RPE(relation, delta=delta, delta_unit=Unit.frames, all_pairs=False)
            rpe.process_data((traj_ref, traj_est))
            assert rpe.error.shape == ours.shape
            np.testing.assert_allclose(ours, rpe.error * scale, rtol=0, atol=1e-6)
    # At delta 1 the file's RPE is the per-pair error of the frame-to-frame estimates themselves.
    direct_rot, direct_trans = metrics.relative_pose_errors(est_rel, gt_rel)
    file_rot, file_trans = metrics.trajectory_rpe(gt_read, est_read, 1)
    np.testing.assert_allclose(file_rot, direct_rot, atol=1e-6)
    np.testing.assert_allclose(file_trans, direct_trans, atol=1e-6)


def test_chamfer_matrix_matches_naive():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 50, 3))
    y = rng.normal(size=(4, 40, 3)) + 0.3
    d = metrics.chamfer_matrix(x, y)
    naive = np.array([[metrics.chamfer_naive(a, b) for b in y] for a in x])
    np.testing.assert_allclose(d, naive, rtol=1e-9, atol=1e-12)
    d_sym = metrics.chamfer_matrix(x)  # upper triangle mirrored
    np.testing.assert_allclose(d_sym, [[metrics.chamfer_naive(a, b) for b in x] for a in x], rtol=1e-9, atol=1e-12)
    assert np.all(np.diag(d_sym) == 0.0)


def _naive_realism(g, r):
    """Definitions of PointFlow's 1-NNA / MMD / COV written out with loops."""
    D = lambda a, b: metrics.chamfer_naive(a, b)  # noqa: E731
    allc = [(c, 0) for c in g] + [(c, 1) for c in r]
    correct = 0
    for i, (ci, li) in enumerate(allc):
        best, label = np.inf, None
        for j, (cj, lj) in enumerate(allc):
            if i == j:
                continue
            dd = D(ci, cj)
            if dd < best or (dd == best and lj != li):
                best, label = dd, lj
        correct += label == li
    mmd = np.mean([min(D(gc, rc) for gc in g) for rc in r])
    matched = {int(np.argmin([D(gc, rc) for rc in r])) for gc in g}
    return correct / len(allc), mmd, len(matched) / len(r)


def test_realism_matches_naive_reference():
    rng = np.random.default_rng(3)
    g = rng.normal(size=(6, 30, 3))
    r = rng.normal(size=(5, 30, 3)) * 1.2
    out = metrics.realism_metrics(g, r, num_points=30)
    nna, mmd, cov = _naive_realism(g, r)
    assert out["1nna"] == pytest.approx(nna)
    assert out["mmd"] == pytest.approx(mmd, rel=1e-9)
    assert out["cov"] == pytest.approx(cov)


def _planes(rng, n, tilt_deg, points=128):
    """Clouds of a noisy plane z = 2 m tilted by ``tilt_deg`` about x: one 'distribution' per tilt."""
    out = []
    for _ in range(n):
        xy = rng.uniform(-1, 1, size=(points, 2))
        p = np.column_stack([xy, 2.0 + 0.01 * rng.normal(size=points)])
        out.append(p @ _rot([1, 0, 0], tilt_deg + rng.normal(scale=2.0)).T)
    return np.stack(out)


def test_1nna_half_for_same_distribution_and_one_for_different():
    rng = np.random.default_rng(4)
    a = _planes(rng, 30, 0.0)
    b = _planes(rng, 30, 0.0)
    c = _planes(rng, 30, 40.0)
    same = metrics.realism_metrics(a, b, num_points=128)
    diff = metrics.realism_metrics(c, b, num_points=128)
    assert 0.3 <= same["1nna"] <= 0.7
    assert diff["1nna"] >= 0.99
    assert same["mmd"] < diff["mmd"]
    assert same["cov"] > diff["cov"]
