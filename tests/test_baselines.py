"""Tests of training.baselines: known transforms recovered on a synthetic scene, ICP on real TUM / 7-Scenes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

pytest.importorskip("open3d", reason="the baselines need open3d (pip install 'synthseq[render]')")

from synthseq.geometry import transform_points  # noqa: E402
from synthseq.training import baselines as B  # noqa: E402
from synthseq.training import metrics as M  # noqa: E402


def _rot(axis, angle_deg):
    return Rotation.from_rotvec(angle_deg * np.asarray(axis, float) / np.linalg.norm(axis), degrees=True).as_matrix()


def _pose(R, t):
    return np.vstack([np.column_stack([R, t]), [0.0, 0.0, 0.0, 1.0]])


def _corner_scene(rng, n=12000):
    """A room corner (floor + two walls) with a box and a ball: enough structure to pin all 6 DoF."""
    k = n // 6
    floor = np.column_stack([rng.uniform(-1.5, 1.5, k), np.full(k, 1.0), rng.uniform(1.0, 4.0, k)])
    back = np.column_stack([rng.uniform(-1.5, 1.5, k), rng.uniform(-1.0, 1.0, k), np.full(k, 4.0)])
    side = np.column_stack([np.full(k, -1.5), rng.uniform(-1.0, 1.0, k), rng.uniform(1.0, 4.0, k)])
    box = rng.uniform(-1, 1, (2 * k, 3)) * [0.3, 0.2, 0.25]
    face = rng.integers(0, 3, 2 * k)
    box[np.arange(2 * k), face] = np.sign(box[np.arange(2 * k), face]) * np.array([0.3, 0.2, 0.25])[face]
    box += [0.4, 0.8, 2.5]
    ball = rng.normal(size=(k, 3))
    ball = 0.25 * ball / np.linalg.norm(ball, axis=1, keepdims=True) + [-0.6, 0.5, 3.0]
    return np.concatenate([floor, back, side, box, ball]).astype(np.float32)


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(0)
    points_a = _corner_scene(rng)
    a_from_b = _pose(_rot([0.2, 1.0, 0.1], 6.0), [0.03, -0.02, 0.04])
    # Frame b's cloud is the same surfaces sampled again (no identical points), seen from frame b.
    points_b = transform_points(np.linalg.inv(a_from_b), _corner_scene(rng))
    return points_a, points_b, a_from_b


def test_icp_from_identity_recovers_a_small_motion(scene):
    points_a, points_b, gt = scene
    r = B.icp_from_identity(points_a, points_b)
    rot, trans = M.relative_pose_errors(r.a_from_b, gt)
    assert rot < 0.5 and trans < 0.5, (rot, trans)
    assert r.seconds > 0 and r.fitness > 0.8


def test_refine_icp_from_a_perturbed_start(scene):
    points_a, points_b, gt = scene
    init = gt @ _pose(_rot([1, 0, 0], 2.0), [0.01, 0.0, -0.01])
    r = B.refine_icp(points_a, points_b, init)
    rot, trans = M.relative_pose_errors(r.a_from_b, gt)
    assert rot < 0.5 and trans < 0.5, (rot, trans)
    # A non-finite start (a failed network estimate) falls back to identity instead of crashing.
    r2 = B.refine_icp(points_a, points_b, np.full((4, 4), np.nan))
    assert np.all(np.isfinite(r2.a_from_b))


def test_fpfh_ransac_icp_recovers_a_large_motion_repeatably(scene):
    points_a, _, _ = scene
    rng = np.random.default_rng(1)
    gt = _pose(_rot([0.0, 1.0, 0.3], 35.0), [0.3, -0.1, 0.2])
    points_b = transform_points(np.linalg.inv(gt), _corner_scene(rng))
    r1 = B.fpfh_ransac_icp(points_a, points_b, voxel_m=0.05, max_correspondence_m=0.1, seed=3)
    rot, trans = M.relative_pose_errors(r1.a_from_b, gt)
    assert rot < 2.0 and trans < 3.0, (rot, trans)
    # ICP alone from identity cannot bridge 35 deg.
    r_icp = B.icp_from_identity(points_a, points_b, voxel_m=0.05, max_correspondence_m=0.1)
    assert M.relative_pose_errors(r_icp.a_from_b, gt)[0] > 5.0
    r2 = B.fpfh_ransac_icp(points_a, points_b, voxel_m=0.05, max_correspondence_m=0.1, seed=3)
    np.testing.assert_allclose(r2.a_from_b, r1.a_from_b, atol=1e-6)


def test_padding_rows_and_bad_shapes():
    p = np.zeros((10, 3), np.float32)
    r = B.fpfh_ransac_icp(p, p)
    assert np.all(np.isnan(r.a_from_b))  # all padding: no pose, reported as a failure
    with pytest.raises(ValueError, match=r"points: expected shape \(N, 3\)"):
        B.icp_from_identity(np.zeros((5, 2)), np.zeros((5, 3)))


def _pairs_success(path, gap, starts, method=B.icp_from_identity, **kw):
    from synthseq.geometry import relative_pose
    from synthseq.training.evaluation.data import load_real_sequence

    seq = load_real_sequence(path, num_points=256, **kw)
    est = np.stack([method(seq.dense(t), seq.dense(t + gap)).a_from_b for t in starts])
    gt = relative_pose(seq.world_from_camera[starts], seq.world_from_camera[starts + gap])
    rot, trans = M.relative_pose_errors(est, gt)
    return M.success_mask(rot, trans), rot, trans


def test_icp_on_tum_rpy_gap1_succeeds_on_most_pairs(tum_rpy_dir):
    """README: ICP from identity succeeds on ~95% of gap-1 pairs of tum_fr1_rpy (2 cm voxels, 5 cm)."""
    ok, rot, trans = _pairs_success(tum_rpy_dir, 1, np.array([4, 20, 60, 72, 88]), max_depth_m=4.0)
    assert ok.sum() >= 4, (rot, trans)
    assert np.median(rot) < 1.5 and np.median(trans) < 1.5


def test_icp_on_7scenes_gap10(sevenscenes_dir):
    """README: ICP from identity succeeds on 100% of gap-10 pairs of 7scenes_redkitchen."""
    ok, rot, trans = _pairs_success(sevenscenes_dir, 10, np.array([0, 45, 89]))
    assert ok.all(), (rot, trans)
