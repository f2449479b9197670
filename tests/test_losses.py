"""Tests of training/losses.py: Chamfer vs a naive reference, geodesic angles, MMD, KL, distillation modes."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from synthseq.training import losses  # noqa: E402
from synthseq.training.models import Discriminator, rotation_6d_to_matrix  # noqa: E402

torch.set_num_threads(1)


def chamfer_naive(x, y, trunc=None, squared=False):
    """Reference: Python loops over points, float64."""
    out = []
    for xb, yb in zip(x.double(), y.double()):
        def nn_mean(p, q):
            total = 0.0
            for a in p:
                best = min(float(((a - b) ** 2).sum()) for b in q)
                d = best if squared else math.sqrt(best)
                total += d if trunc is None else min(d, trunc)
            return total / len(p)
        out.append(0.5 * (nn_mean(xb, yb) + nn_mean(yb, xb)))
    return torch.tensor(out, dtype=torch.float64)


def axis_angle(axis, angle):
    axis = torch.as_tensor(axis, dtype=torch.float64)
    axis = axis / axis.norm()
    K = torch.tensor([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]], dtype=torch.float64)
    return torch.eye(3, dtype=torch.float64) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


@pytest.mark.parametrize("trunc,squared", [(None, False), (0.3, False), (None, True)])
def test_chamfer_matches_naive_reference(trunc, squared):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 40, 3, generator=g)
    y = torch.rand(3, 25, 3, generator=g) + 0.2
    fast = losses.chamfer_distance(x, y, trunc=trunc, squared=squared)
    assert fast.shape == (3,)
    assert torch.allclose(fast.double(), chamfer_naive(x, y, trunc, squared), atol=1e-5)


def test_chamfer_zero_on_same_cloud_and_finite_gradient():
    x = torch.rand(2, 30, 3, requires_grad=True)
    d = losses.chamfer_distance(x, x.detach().clone())
    assert float(d.detach().max()) < 1e-5
    d.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_6d_to_rotation_is_orthonormal_and_round_trips():
    d6 = torch.randn(100, 6, dtype=torch.float64)
    R = rotation_6d_to_matrix(d6)
    eye = torch.eye(3, dtype=torch.float64).expand(100, 3, 3)
    assert torch.allclose(R.transpose(1, 2) @ R, eye, atol=1e-10)
    assert torch.allclose(torch.linalg.det(R), torch.ones(100, dtype=torch.float64), atol=1e-10)
    from synthseq.training.models import matrix_to_rotation_6d
    assert torch.allclose(rotation_6d_to_matrix(matrix_to_rotation_6d(R)), R, atol=1e-10)


@pytest.mark.parametrize("angle", [0.0, 0.1, 1.0, math.pi / 2, 3.0, math.pi])
def test_geodesic_distance_is_the_rotation_angle(angle):
    R0 = axis_angle([0.3, -1.0, 0.5], 0.7)
    R1 = R0 @ axis_angle([1.0, 2.0, -0.5], angle)
    got = float(losses.geodesic_distance(R0[None], R1[None])[0])
    assert got == pytest.approx(angle, abs=1e-5)
    # symmetric, and with a finite gradient at 0
    assert float(losses.geodesic_distance(R1[None], R0[None])[0]) == pytest.approx(angle, abs=1e-5)
    d6 = torch.randn(4, 6, requires_grad=True)
    losses.geodesic_distance(rotation_6d_to_matrix(d6), rotation_6d_to_matrix(d6.detach())).sum().backward()
    assert torch.isfinite(d6.grad).all()


def test_pose_errors_and_transform_points():
    a_from_b = torch.eye(4).repeat(2, 1, 1)
    a_from_b[:, :3, :3] = axis_angle([0, 0, 1], 0.5).float()
    a_from_b[:, :3, 3] = torch.tensor([0.1, 0.2, 0.3])
    pb = torch.rand(2, 10, 3)
    pa = losses.transform_points(a_from_b, pb)
    # the alignment loss of the true transform is ~0
    assert float(losses.alignment_loss(a_from_b, pa, pb, trunc=0.1)) < 1e-5
    rot, trans = losses.pose_errors(torch.eye(4).repeat(2, 1, 1), a_from_b)
    assert torch.allclose(rot, torch.full((2,), 0.5), atol=1e-5)
    assert torch.allclose(trans, torch.full((2,), math.sqrt(0.14)), atol=1e-6)


def test_mmd_zero_for_identical_samples_positive_otherwise():
    z = torch.randn(64, 2)
    assert abs(float(losses.gaussian_mmd(z, z.clone(), sigma=1.0))) < 1e-6
    assert float(losses.gaussian_mmd(z, z + 2.0, sigma=1.0)) > 0.1


def test_kl_standard_normal():
    assert float(losses.kl_standard_normal(torch.zeros(4, 3), torch.zeros(4, 3))) == pytest.approx(0.0)
    # KL(N(1, 1) || N(0, 1)) = 0.5 per dim
    assert float(losses.kl_standard_normal(torch.ones(4, 3), torch.zeros(4, 3))) == pytest.approx(1.5)


def test_gan_losses_values():
    big = torch.full((4,), 20.0)
    assert float(losses.discriminator_loss(big, -big)) < 1e-6
    assert float(losses.generator_gan_loss(big)) < 1e-6
    assert float(losses.generator_gan_loss(torch.zeros(4))) == pytest.approx(math.log(2), rel=1e-5)


def test_gradient_distillation_runs_reaches_input_and_differs_from_features():
    torch.manual_seed(0)
    D = Discriminator(hidden=16, blocks=1, norm="batch")
    real = torch.rand(4, 32, 3)
    fake = (torch.rand(4, 32, 3) * 0.5).requires_grad_(True)
    logits, feats = D(torch.cat([real, fake]), return_features=True)
    lr, lf = logits[:4], logits[4:]
    fr, ff = feats[:4], feats[4:]
    feat_loss = losses.feature_distillation(lr, lf, fr, ff, alpha=0.5)
    grad_loss = losses.gradient_distillation(lr, lf, list(D.parameters()), alpha=0.5)
    assert torch.isfinite(grad_loss) and float(grad_loss.detach()) > 0
    assert abs(float(grad_loss.detach()) - float(feat_loss.detach())) > 1e-4
    # identical real and refined batches: nothing to distil
    same = losses.gradient_distillation(lr, lr, list(D.parameters()), alpha=0.5)
    assert float(same.detach()) < 1e-6
    (g,) = torch.autograd.grad(grad_loss, fake)  # double backprop reaches the refined cloud
    assert torch.isfinite(g).all() and float(g.abs().sum()) > 0


def _fourier(p, W):
    f = torch.cat([torch.sin(p @ W), torch.cos(p @ W)], -1)
    return torch.nn.functional.normalize(f, dim=-1)


def test_correspondence_loss_is_low_for_matching_descriptors_and_ignores_moving_points():
    from synthseq.training.losses import correspondence_loss

    g = torch.Generator().manual_seed(0)
    B, N = 2, 300
    pa = torch.rand(B, N, 3, generator=g) + torch.tensor([0.0, 0.0, 2.0])
    T = torch.eye(4).repeat(B, 1, 1)
    T[:, :3, 3] = torch.tensor([0.05, -0.02, 0.1])
    pb = pa - T[:, None, :3, 3]                        # the same points seen from b: a = T b
    W = torch.randn(3, 16, generator=g) * 8
    f_a, f_b = _fourier(pa, W), _fourier(pb + T[:, None, :3, 3], W)  # descriptors that follow the geometry
    good, hit = correspondence_loss(f_a, f_b, pa, pb, T, temperature=0.05, generator=torch.Generator().manual_seed(1))
    rand_b = torch.nn.functional.normalize(torch.randn(B, N, 32, generator=g), dim=-1)
    rand_a = torch.nn.functional.normalize(torch.randn(B, N, 32, generator=g), dim=-1)
    bad, hit_bad = correspondence_loss(rand_a, rand_b, pa, pb, T, temperature=0.05,
                                       generator=torch.Generator().manual_seed(1))
    assert float(good) < 0.5 * float(bad)
    assert float(hit) > 0.9 and float(hit_bad) < 0.1
    # points marked invalid (moving objects) are never anchors: all invalid -> zero loss
    none, _ = correspondence_loss(f_a, rand_b, pa, pb, T, valid_b=torch.zeros(B, N, dtype=torch.bool))
    assert float(none) == 0.0


def test_static_points_marks_moving_objects_as_outliers():
    from synthseq.training.losses import static_points

    cam = torch.eye(4)[None]
    moved = torch.eye(4)
    moved[0, 3] = 0.2
    obj = torch.stack([torch.eye(4), moved])[None]             # object 0 still, object 1 moved
    labels = torch.tensor([[-1, 0, 1, 1, -1]])
    assert static_points(labels, obj, torch.tensor([[True, True]]), cam).tolist() == [[True, True, False, False, True]]
