"""Tests for datasets/transforms.py: resampling, normalisation (and its inverse on poses), rigid augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from synthseq.datasets.transforms import (
    Compose,
    Normalize,
    RandomRigid,
    Resample,
    denormalize_pose,
    normalize_pose,
    random_rigid,
)
from synthseq.geometry import invert_pose, transform_points


def _pair(rng, N=200, K=2):
    """A pair where p_a = a_from_b p_b exactly, plus object poses mapping object-labelled points."""
    a_from_b = random_rigid(rng, 40, 0.3)
    pb = rng.normal(size=(N, 3)).astype(np.float32) + [0, 0, 2]
    pa = transform_points(a_from_b, pb.astype(np.float64)).astype(np.float32)
    obj = np.stack([random_rigid(rng, 30, 0.2) for _ in range(K)])
    return dict(points_a=pa, points_b=pb, labels_a=np.arange(N) % 3 - 1, labels_b=np.arange(N) % 3 - 1,
                a_from_b=a_from_b.astype(np.float32), object_a_from_b=obj.astype(np.float32), gap=1)


def test_resample_keeps_labels_with_points():
    rng = np.random.default_rng(0)
    s = _pair(rng, N=50)
    out = Resample(120)(s, np.random.default_rng(1))
    assert out["points_a"].shape == (120, 3) and out["labels_a"].shape == (120,)
    idx = [np.nonzero((s["points_a"] == p).all(1))[0][0] for p in out["points_a"]]
    np.testing.assert_array_equal(out["labels_a"], s["labels_a"][idx])
    small = Resample(10)(s, np.random.default_rng(1))
    assert len(np.unique(small["points_b"], axis=0)) == 10
    frame = Resample(7)({"points": np.zeros((0, 3), np.float32), "labels": np.zeros(0, np.int64)},
                        np.random.default_rng(0))
    assert frame["points"].shape == (7, 3) and np.all(frame["points"] == 0)
    with pytest.raises(ValueError, match="positive"):
        Resample(0)


@pytest.mark.parametrize("mode", ["a", "both"])
def test_normalize_keeps_pose_consistent_and_inverts(mode):
    rng = np.random.default_rng(2)
    s = _pair(rng)
    out = Normalize(mode)(s, rng)
    assert max(np.linalg.norm(out["points_a"], axis=1).max(), np.linalg.norm(out["points_b"], axis=1).max()) \
        == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(transform_points(out["a_from_b"].astype(np.float64), out["points_b"].astype(np.float64)),
                               out["points_a"], atol=1e-5)
    np.testing.assert_allclose(out["a_from_b"][:3, :3], s["a_from_b"][:3, :3], atol=1e-6)  # rotation unchanged
    back = denormalize_pose(out["a_from_b"].astype(np.float64), out["norm_centre"].astype(np.float64),
                            float(out["norm_scale"]))
    np.testing.assert_allclose(back, s["a_from_b"], atol=1e-5)
    np.testing.assert_allclose(
        normalize_pose(s["object_a_from_b"].astype(np.float64), out["norm_centre"], out["norm_scale"]),
        out["object_a_from_b"], atol=1e-5)


def test_denormalize_pose_batched_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    poses = np.stack([random_rigid(rng, 90, 1.0) for _ in range(4)])
    c = rng.normal(size=(4, 3))
    s = rng.uniform(0.5, 3, size=4)
    normed = np.stack([normalize_pose(poses[i], c[i], s[i]) for i in range(4)])
    back = denormalize_pose(torch.from_numpy(normed), torch.from_numpy(c), torch.from_numpy(s))
    np.testing.assert_allclose(back.numpy(), poses, atol=1e-12)
    np.testing.assert_allclose(denormalize_pose(normed, c, s), poses, atol=1e-12)


@pytest.mark.parametrize("independent", [False, True])
def test_random_rigid_updates_ground_truth(independent):
    rng = np.random.default_rng(4)
    s = _pair(rng)
    out = RandomRigid(180, 0.5, independent=independent)(s, np.random.default_rng(5))
    # The augmented pose still aligns the augmented clouds.
    np.testing.assert_allclose(transform_points(out["a_from_b"].astype(np.float64), out["points_b"].astype(np.float64)),
                               out["points_a"], atol=1e-4)
    assert not np.allclose(out["points_a"], s["points_a"], atol=1e-2)
    A, B = out["aug_a_from_a"].astype(np.float64), out["aug_b_from_b"].astype(np.float64)
    assert np.allclose(A, B) != independent
    np.testing.assert_allclose(out["object_a_from_b"], A @ s["object_a_from_b"] @ invert_pose(B), atol=1e-5)
    np.testing.assert_allclose(transform_points(A, s["points_a"].astype(np.float64)), out["points_a"], atol=1e-5)
    # A chain keeps composing the stored augmentation.
    twice = RandomRigid(30, 0.1, independent=independent)(out, np.random.default_rng(6))
    np.testing.assert_allclose(transform_points(twice["aug_a_from_a"].astype(np.float64),
                                                s["points_a"].astype(np.float64)), twice["points_a"], atol=1e-4)


def test_random_rigid_frame_sample():
    rng = np.random.default_rng(7)
    pts = rng.normal(size=(30, 3)).astype(np.float32)
    w_from_c = random_rigid(rng, 180, 2.0)
    sample = dict(points=pts, world_from_camera=w_from_c.astype(np.float32),
                  camera_from_object=np.eye(4, dtype=np.float32)[None])
    out = RandomRigid(180, 1.0)(sample, rng)
    # World coordinates of the points are unchanged by the augmentation.
    np.testing.assert_allclose(transform_points(out["world_from_camera"].astype(np.float64), out["points"].astype(np.float64)),
                               transform_points(w_from_c, pts.astype(np.float64)), atol=1e-4)


def test_compose_is_deterministic_given_rng():
    s = _pair(np.random.default_rng(8))
    tf = Compose([Resample(64), RandomRigid(90, 0.2, independent=True), Normalize()])
    a = tf(s, np.random.default_rng(9))
    b = tf(s, np.random.default_rng(9))
    for k in ("points_a", "points_b", "a_from_b", "norm_centre"):
        np.testing.assert_array_equal(a[k], b[k])
    # Resampling draws the two clouds independently, so check the pose on the same chain without it.
    c = Compose(tf.transforms[1:])(s, np.random.default_rng(9))
    np.testing.assert_allclose(transform_points(c["a_from_b"].astype(np.float64), c["points_b"].astype(np.float64)),
                               c["points_a"], atol=1e-4)
