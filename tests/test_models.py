"""Tests of training/models.py: shapes, conventions (P(a, b) -> a_from_b), set invariance, initial behaviour."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from synthseq.training.config import ModelConfig  # noqa: E402
from synthseq.training.losses import transform_points  # noqa: E402
from synthseq.training.models import (Discriminator, PoseNet, Refiner, ResnetBlockFC,  # noqa: E402
                                      build_models, rotation_6d_to_matrix)

torch.set_num_threads(1)


def clouds(B=3, N=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, N, 3, generator=g) * 0.5 + torch.tensor([0.0, 0.0, 2.0])


def test_build_models_from_config_sizes():
    m = build_models(ModelConfig(zdim=4, g_hidden=8, g_global=16, d_hidden=8, d_blocks=3, d_norm="none",
                                 p_hidden=8, p_global=16, pose="regress"))
    assert isinstance(m["G"], Refiner) and m["G"].zdim == 4
    assert isinstance(m["D"], Discriminator) and len(m["D"].blocks) == 3
    assert not any(isinstance(x, torch.nn.BatchNorm1d) for x in m["D"].modules())
    assert any(isinstance(x, torch.nn.BatchNorm1d) for x in build_models(ModelConfig())["D"].modules())
    assert isinstance(m["P"], PoseNet)
    from synthseq.training.models import MatchPoseNet

    assert isinstance(build_models(ModelConfig())["P"], MatchPoseNet)  # the default: correspondences


def test_refiner_shapes_latent_and_near_identity_start():
    torch.manual_seed(0)
    G = Refiner(zdim=6, hidden=16, global_dim=32)
    x = clouds()
    out = G(x, generator=torch.Generator().manual_seed(1))
    assert out.points.shape == x.shape and out.offsets.shape == x.shape
    assert out.mu.shape == out.logvar.shape == out.z.shape == (3, 6)
    assert torch.allclose(out.points, x + out.offsets)
    assert float(out.offsets.detach().abs().max()) < 0.01  # an untrained G barely moves points (GT stays valid)
    # z is stochastic (reparameterised), and a given z is used as is
    again = G(x, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(out.z, again.z)
    z = torch.zeros(3, 6)
    assert torch.equal(G(x, z=z).z, z)
    # the reparameterised sample carries gradients to mu/logvar
    out.z.sum().backward()
    assert G.q_head.weight.grad is not None and G.q_head.weight.grad.abs().sum() > 0


def test_discriminator_logits_features_and_point_order_invariance():
    torch.manual_seed(0)
    D = Discriminator(hidden=16, blocks=2, norm="batch").eval()
    x = clouds()
    logits, f = D(x, return_features=True)
    assert logits.shape == (3,) and f.shape == (3, 16)
    assert torch.allclose(D.features(x), f)
    perm = torch.randperm(x.shape[1])
    assert torch.allclose(D(x[:, perm]), logits, atol=1e-5)


def test_resnet_block_fc_shapes():
    blk = ResnetBlockFC(8, 12, norm="none")
    assert blk(torch.rand(2, 5, 8)).shape == (2, 5, 12)
    with pytest.raises(ValueError, match="norm"):
        ResnetBlockFC(8, norm="group")


def test_pose_net_convention_and_initial_prediction():
    """P(points_a, points_b) -> a_from_b maps b's coordinates into a's; untrained: the identity."""
    torch.manual_seed(0)
    P = PoseNet(hidden=16, global_dim=32).eval()
    a = clouds(B=2)
    b = a - torch.tensor([0.1, -0.2, 0.3])
    a_from_b = P(a, b)
    assert a_from_b.shape == (2, 4, 4) and a_from_b.dtype == torch.float32
    assert torch.allclose(a_from_b, torch.eye(4).expand(2, 4, 4), atol=1e-6)
    # outputs are rigid transforms for any weights
    for p in P.parameters():
        torch.nn.init.normal_(p, std=0.3)
    a_from_b = P(a, b)
    R = a_from_b[:, :3, :3]
    assert torch.allclose(R.transpose(1, 2) @ R, torch.eye(3).expand(2, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(R), torch.ones(2), atol=1e-5)
    assert torch.equal(a_from_b[:, 3], torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(2, 4))


def test_pose_net_convention_matches_the_pair_samples():
    """A P whose last layer is set to a known transform returns exactly it, and that transform maps
    points_b onto points_a (the convention of SyntheticPairs / RealPairs a_from_b)."""
    from synthseq.training.models import matrix_to_rotation_6d
    from toy_pairs import ToyPairs

    s = ToyPairs(1, 256, seed=3)[0]
    a_from_b = torch.from_numpy(s["a_from_b"])[None]
    pa, pb = torch.from_numpy(s["points_a"])[None], torch.from_numpy(s["points_b"])[None]
    P = PoseNet(hidden=8, global_dim=16).eval()
    with torch.no_grad():
        c = torch.cat([pa - pa.mean(1, keepdim=True), pb - pb.mean(1, keepdim=True)], 1)
        size = float((0.5 * (c[:, :256].pow(2).sum(-1).mean() + c[:, 256:].pow(2).sum(-1).mean())).sqrt())
        P.head[-1].bias.copy_(torch.cat([matrix_to_rotation_6d(a_from_b[0, :3, :3]), a_from_b[0, :3, 3] / size]))
    pred = P(pa, pb)
    assert torch.allclose(pred, a_from_b, atol=1e-4)
    # the ground truth maps frame b's cloud onto frame a's surface (Chamfer ~ sampling density)
    from synthseq.training.losses import chamfer_distance

    assert float(chamfer_distance(transform_points(pred, pb), pa).detach()) < 0.02
    assert float(chamfer_distance(pb, pa)) > 0.05


def test_pose_net_point_order_invariance_and_batch_independence():
    torch.manual_seed(0)
    P = PoseNet(hidden=16, global_dim=32).eval()
    for p in P.parameters():
        torch.nn.init.normal_(p, std=0.3)
    a, b = clouds(B=3, seed=1), clouds(B=3, seed=2)
    out = P(a, b)
    perm = torch.randperm(a.shape[1])
    assert torch.allclose(P(a[:, perm], b[:, perm]), out, atol=1e-5)
    assert torch.allclose(P(a[:1], b[:1]), out[:1], atol=1e-5)  # LayerNorm: no batch statistics


def test_rotation_6d_identity():
    assert torch.allclose(rotation_6d_to_matrix(torch.tensor([1.0, 0, 0, 0, 1, 0])), torch.eye(3))


def test_refiner_offsets_are_not_squashed_so_their_gradient_stays_alive():
    """No tanh cap (it saturated at +-max_offset with a zero gradient); the trainer penalises the excess."""
    torch.manual_seed(0)
    G = Refiner(zdim=4, hidden=16, global_dim=16, max_offset=0.05)
    for p in G.parameters():
        torch.nn.init.normal_(p, std=2.0)  # a G that wants to move points by metres
    out = G(clouds())
    assert float(out.offsets.detach().abs().max()) > 0.1
    out.offsets.abs().mean().backward()
    assert float(G.decoder[-1].weight.grad.abs().sum()) > 0
    # the latent-recovery head sees the refined cloud and its offsets
    assert G.recover_z(out.points.detach(), out.offsets.detach()).shape == (3, 4)


def test_local_patches_match_a_naive_knn_around_random_centres():
    from synthseq.training.models import local_patches

    x = clouds(B=2, N=40)
    p = local_patches(x, num_patches=5, k=6, generator=torch.Generator().manual_seed(3))
    pick = torch.rand(2, 40, generator=torch.Generator().manual_seed(3)).argsort(dim=1)[:, :5]
    assert p.shape == (2, 5, 6, 3)
    for b in range(2):
        for m in range(5):
            c = x[b, pick[b, m]]
            d = ((x[b] - c) ** 2).sum(-1)
            want = x[b][d.argsort()[:6]] - c
            got = p[b, m]
            assert torch.allclose(torch.sort(got.norm(dim=-1)).values, torch.sort(want.norm(dim=-1)).values, atol=1e-6)
    assert torch.allclose(p[:, :, 0], torch.zeros(2, 5, 3))  # the centre itself comes first


def test_patch_centres_are_spatially_random_on_a_raster_ordered_cloud():
    """On a cloud stored in image-row order, patch centres must cover the whole image, not its top rows."""
    from synthseq.training.models import local_patches

    rows = torch.linspace(0, 1, 400)
    x = torch.stack([torch.rand(400), rows, torch.full((400,), 2.0)], -1)[None]  # sorted by y (raster)
    p, centres = local_patches(x, num_patches=40, k=4, generator=torch.Generator().manual_seed(0),
                               return_centres=True)
    assert p.shape == (1, 40, 4, 3) and centres.shape == (1, 40, 3)
    assert float(centres[0, :, 1].max() - centres[0, :, 1].min()) > 0.7  # the first 40 rows span 0.1
    # each patch is made of the centre's neighbours
    assert torch.allclose((p[0] + centres[0, :, None])[:, 0], centres[0])


def test_patch_discriminator_shapes_and_gradients():
    torch.manual_seed(0)
    D = Discriminator(hidden=16, blocks=1, norm="batch", patches=8, patch_points=10)
    x = clouds(B=3, N=60).requires_grad_(True)
    logits, f = D(x, return_features=True)
    assert logits.shape == (3,) and f.shape == (3, 16)
    logits.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


# ----------------------------------------------------------------------------------- correspondence P

def rigid(angle_deg: float, axis, t) -> torch.Tensor:
    from scipy.spatial.transform import Rotation

    axis = np.asarray(axis, dtype=np.float64)
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] = torch.from_numpy(Rotation.from_rotvec(np.deg2rad(angle_deg) * axis / np.linalg.norm(axis)).as_matrix())
    T[:3, 3] = torch.tensor(t, dtype=torch.float64)
    return T


def test_weighted_procrustes_is_exact_on_noise_free_correspondences():
    from synthseq.training.models import weighted_procrustes

    g = torch.Generator().manual_seed(0)
    src = torch.rand(2, 50, 3, generator=g, dtype=torch.float64)
    T = torch.stack([rigid(30, (1, 2, 3), (0.1, -0.2, 0.3)), rigid(170, (0, 0, 1), (1.0, 0.0, 0.0))])
    dst = src @ T[:, :3, :3].transpose(1, 2) + T[:, None, :3, 3]
    # outliers with zero weight do not matter
    dst[:, :10] += 5.0
    w = torch.ones(2, 50, dtype=torch.float64)
    w[:, :10] = 0.0
    est = weighted_procrustes(src.float(), dst.float(), w.float())
    assert torch.allclose(est.double(), T, atol=1e-4)
    assert torch.allclose(torch.linalg.det(est[:, :3, :3]), torch.ones(2), atol=1e-5)  # never a reflection


def test_local_features_are_invariant_to_rigid_motion_and_point_order():
    from synthseq.training.models import LocalFeatureNet

    torch.manual_seed(0)
    net = LocalFeatureNet(hidden=16, out_dim=8, k=8).eval()
    x = clouds(B=1, N=200)
    T = rigid(20, (0.3, 1, 0.2), (0.05, -0.02, 0.1)).float()
    y = x @ T[:3, :3].T + T[:3, 3]
    f_x, f_y = net(x), net(y)
    assert f_x.shape == (1, 200, 8)
    assert torch.allclose(f_x.norm(dim=-1), torch.ones(1, 200), atol=1e-5)
    close = ((f_x - f_y).norm(dim=-1) < 1e-3).float().mean()
    assert float(close) > 0.95  # (normal orientation towards the camera may flip on a few grazing points)
    perm = torch.randperm(200)
    assert torch.allclose(net(x[:, perm]), f_x[:, perm], atol=1e-5)


def test_match_pose_net_returns_rigid_a_from_b_with_gradients():
    from synthseq.training.models import MatchPoseNet

    torch.manual_seed(0)
    P = MatchPoseNet(hidden=16, out_dim=8, k=8)
    a, b = clouds(B=2, N=100, seed=1), clouds(B=2, N=100, seed=2)
    T = P(a, b)
    R = T[:, :3, :3]
    assert T.shape == (2, 4, 4) and T.dtype == torch.float32
    assert torch.allclose(R.transpose(1, 2) @ R, torch.eye(3).expand(2, 3, 3), atol=1e-4)
    assert torch.equal(T[:, 3], torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(2, 4))
    T[:, :3, 3].sum().backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in P.parameters())


def test_fpfh_histograms_are_memoised_per_cloud_and_bounded():
    """LocalFeatureNet.histograms returns fpfh_features of each cloud, computed once per distinct cloud (real frames
    recur every epoch) and forgetting the oldest clouds past fpfh_memo_size."""
    from synthseq.training.models import LocalFeatureNet, fpfh_features

    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 256, 3, generator=g) + torch.tensor([0.0, 0.0, 1.0])
    net = LocalFeatureNet()
    net.fpfh_memo_size = 4
    h = net.histograms(x)
    torch.testing.assert_close(h, fpfh_features(x))
    assert len(net._fpfh_memo) == 3
    torch.testing.assert_close(net.histograms(x[1:2]), h[1:2])  # from the memo
    assert len(net._fpfh_memo) == 3
    y = torch.rand(2, 256, 3, generator=g) + 1.0
    net.histograms(y)
    assert len(net._fpfh_memo) == 4  # the oldest (x[0]) is gone, the recently used x[1] is kept
    torch.testing.assert_close(net.histograms(x[1:2]), h[1:2])
    assert len(net._fpfh_memo) == 4


def test_real_clouds_of_another_size_are_refused_with_the_gan():
    from synthseq.errors import ConfigError
    from synthseq.training.config import TrainConfig

    TrainConfig(use_gan=False, real=["r"], num_points=1024, real_num_points=2048)
    with pytest.raises(ConfigError, match="train.real_num_points"):
        TrainConfig(use_gan=True, real=["r"], num_points=1024, real_num_points=2048)
