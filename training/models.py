"""The three networks: the refiner G (synthetic cloud -> refined cloud), the discriminator D, the pose network P
(correspondence-based ``MatchPoseNet`` by default, the global regressor ``PoseNet`` as an ablation).

All take clouds as (B, N, 3) float tensors in a camera frame (OpenCV axes, metres) and treat the N points as
a set (shared per-point layers + max pooling, PointNet, Qi et al. 2017), so N may differ between calls.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# 6D representation of the identity rotation: its first two columns.
IDENTITY_6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def rotation_6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """Map the continuous 6D rotation representation to rotation matrices (Zhou et al. 2019, Gram-Schmidt).

    Args:
        d6: (..., 6): two 3-vectors a1 = d6[..., :3], a2 = d6[..., 3:] (the first two columns, unnormalised).

    Returns:
        (..., 3, 3) rotation matrices with columns b1 = a1/|a1|, b2 = the part of a2 orthogonal to b1,
        normalised, b3 = b1 x b2. Computed in float32 (or float64 if given) even under autocast.
    """
    d6 = d6.float() if d6.dtype not in (torch.float32, torch.float64) else d6
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rotation_6d(R: torch.Tensor) -> torch.Tensor:
    """Inverse of ``rotation_6d_to_matrix`` on rotations: (..., 3, 3) -> (..., 6), the first two columns."""
    return torch.cat([R[..., :, 0], R[..., :, 1]], dim=-1)


class PointNorm(nn.Module):
    """BatchNorm over the channels of per-point features (B, N, C), statistics over all B*N points."""

    def __init__(self, channels: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x.reshape(-1, x.shape[-1])).reshape(x.shape)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return PointNorm(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm: expected 'batch' or 'none', got {kind!r}")


class ResnetBlockFC(nn.Module):
    """Fully connected residual block (Mescheder et al. 2019, Occupancy Networks), per point, pre-activation.

    x -> x' + fc_1(act(norm(fc_0(act(norm(x)))))), with x' = x or a linear shortcut when sizes differ.
    """

    def __init__(self, size_in: int, size_out: int | None = None, size_h: int | None = None, norm: str = "batch"):
        super().__init__()
        size_out = size_in if size_out is None else size_out
        size_h = min(size_in, size_out) if size_h is None else size_h
        self.norm_0 = _norm(norm, size_in)
        self.fc_0 = nn.Linear(size_in, size_h)
        self.norm_1 = _norm(norm, size_h)
        self.fc_1 = nn.Linear(size_h, size_out)
        self.act = nn.LeakyReLU(0.2)
        self.shortcut = None if size_in == size_out else nn.Linear(size_in, size_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, size_in) -> (B, N, size_out)."""
        h = self.fc_0(self.act(self.norm_0(x)))
        dx = self.fc_1(self.act(self.norm_1(h)))
        return (x if self.shortcut is None else self.shortcut(x)) + dx


class Refined(NamedTuple):
    """Output of the refiner: the refined cloud and what the losses need."""

    points: torch.Tensor   # (B, N, 3) x~ = x_s + offsets
    offsets: torch.Tensor  # (B, N, 3) metres
    mu: torch.Tensor       # (B, zdim) mean of q(z | x_s)
    logvar: torch.Tensor   # (B, zdim) log-variance of q(z | x_s)
    z: torch.Tensor        # (B, zdim) the latent used (reparameterised sample, or the given z)


class Refiner(nn.Module):
    """Refiner G: x~ = x_s + offsets(x_s, z), z ~ q(z | x_s) = N(mu(x_s), diag(exp(logvar(x_s)))).

    A PointNet encoder gives per-point features and a max-pooled global feature; the global feature
    parameterises q(z | x_s); a per-point decoder maps [per-point, global, z] to a 3D offset. The last layer
    starts near zero, so an untrained G is (almost) the identity and the synthetic ground truth stays valid.
    Offsets are not squashed: a hard tanh cap saturated (measured: every offset at +-5 cm with a zero
    gradient once D won); instead the trainer penalises offsets beyond ``max_offset`` metres
    (``train.offset_cap_weight``), which keeps the gradient alive. ``recover_z`` (an InfoGAN-style head,
    Chen et al. 2016) predicts z from the refined cloud and its offsets: its loss (``train.latent_weight``)
    makes the offsets depend on z, so the latent path is used rather than collapsing to noise.
    """

    def __init__(self, zdim: int = 16, hidden: int = 64, global_dim: int = 128, max_offset: float | None = 0.05):
        super().__init__()
        self.zdim = zdim
        self.max_offset = max_offset
        self.point_mlp = nn.Sequential(nn.Linear(3, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.global_fc = nn.Linear(hidden, global_dim)
        self.q_head = nn.Linear(global_dim, 2 * zdim)
        self.decoder = nn.Sequential(
            nn.Linear(hidden + global_dim + zdim, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 3),
        )
        nn.init.normal_(self.decoder[-1].weight, std=1e-3)
        nn.init.zeros_(self.decoder[-1].bias)
        self.z_point = nn.Sequential(nn.Linear(6, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.z_out = nn.Linear(hidden, zdim)

    def recover_z(self, points: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Predict the latent z from a refined cloud and its offsets (both (B, N, 3)) -> (B, zdim)."""
        h = self.z_point(torch.cat([points, offsets / (self.max_offset or 0.05)], dim=-1)).max(dim=1).values
        return self.z_out(h)

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> Refined:
        """Refine clouds.

        Args:
            x: (B, N, 3) synthetic clouds, camera frame, metres.
            z: (B, zdim) latent to use; None samples z = mu + sigma * eps (reparameterised).
            generator: torch.Generator for eps (on x's device), so that training noise derives from a seed.

        Returns:
            Refined(points (B, N, 3), offsets (B, N, 3), mu (B, zdim), logvar (B, zdim), z (B, zdim)).
        """
        feats = self.point_mlp(x)                                   # (B, N, H)
        glob = self.global_fc(feats).max(dim=1).values              # (B, G)
        mu, logvar = self.q_head(glob).chunk(2, dim=-1)             # (B, zdim) each
        logvar = logvar.clamp(-10.0, 10.0)
        if z is None:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            z = mu + torch.exp(0.5 * logvar) * eps
        N = x.shape[1]
        dec_in = torch.cat([feats, glob[:, None].expand(-1, N, -1), z[:, None].to(feats.dtype).expand(-1, N, -1)], -1)
        offsets = self.decoder(dec_in).to(x.dtype)
        return Refined(x + offsets, offsets, mu, logvar, z)


def local_patches(x: torch.Tensor, num_patches: int, k: int, generator: torch.Generator | None = None,
                  return_centres: bool = False):
    """The k nearest neighbours of ``num_patches`` centre points, relative to their centre.

    The centres are drawn uniformly at random per cloud (from ``generator``): stored clouds may be in
    raster order, where "the first M points" are the top rows of the image.

    Args:
        x: (B, N, 3) clouds.
        num_patches: M centres (at most N).
        k: points per patch (at most N), the centre included.
        generator: torch.Generator of the centre draw (None: torch's global RNG).
        return_centres: also return the (B, M, 3) centres.

    Returns:
        (B, M, k, 3) patch points minus their centre; differentiable w.r.t. ``x``.
    """
    B, N, _ = x.shape
    M, k = min(num_patches, N), min(k, N)
    pick = torch.rand(B, N, generator=generator, device=x.device).argsort(dim=1)[:, :M]
    centres = torch.gather(x, 1, pick[..., None].expand(B, M, 3))    # (B, M, 3)
    with torch.no_grad():
        idx = torch.cdist(centres.float(), x.float()).topk(k, dim=-1, largest=False).indices  # (B, M, k)
    patches = torch.gather(x[:, None].expand(B, M, N, 3), 2, idx[..., None].expand(B, M, k, 3))
    return (patches - centres[:, :, None], centres) if return_centres else patches - centres[:, :, None]


class Discriminator(nn.Module):
    """Discriminator D: PointNet with ResnetBlockFC blocks, BatchNorm (or none), LeakyReLU -> one logit.

    With ``patches=0`` D sees whole clouds. With ``patches=M`` it sees M local patches of ``patch_points``
    neighbours each, centred (a PatchGAN for point clouds, Isola et al. 2017): it then judges local
    geometry (sensor noise, quantisation, dropout) rather than scene layout, which a refiner bounded to a
    few centimetres cannot change anyway; logits and features are averaged over the patches.

    ``features(x)`` is the intermediate feature f_D(x): the max-pooled output of the blocks, (B, hidden).
    """

    def __init__(self, hidden: int = 64, blocks: int = 2, norm: str = "batch", patches: int = 0,
                 patch_points: int = 32):
        super().__init__()
        self.patches, self.patch_points = patches, patch_points
        self.fc_in = nn.Linear(3, hidden)
        self.blocks = nn.ModuleList([ResnetBlockFC(hidden, norm=norm) for _ in range(blocks)])
        self.head = nn.Sequential(nn.LeakyReLU(0.2), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(B, P, 3) point sets -> (B, hidden) max-pooled block outputs."""
        h = self.fc_in(x)
        for block in self.blocks:
            h = block(h)
        return h.max(dim=1).values

    def _per_set(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        """(B, N, 3) -> (B, S, hidden): one feature per patch (S = M) or per cloud (S = 1)."""
        if not self.patches:
            return self._pooled(x)[:, None]
        p = local_patches(x, self.patches, self.patch_points, generator)  # (B, M, k, 3)
        B, M, k, _ = p.shape
        return self._pooled(p.reshape(B * M, k, 3)).reshape(B, M, -1)

    def features(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        """f_D(x): (B, N, 3) -> (B, hidden), averaged over patches."""
        return self._per_set(x, generator).mean(dim=1)

    def forward(self, x: torch.Tensor, return_features: bool = False, generator=None):
        """Logits that ``x`` is real.

        Args:
            x: (B, N, 3) clouds, camera frame, metres.
            return_features: also return f_D(x).
            generator: draws the patch centres (patch mode).

        Returns:
            (B,) logits, or ((B,) logits, (B, hidden) features).
        """
        f = self._per_set(x, generator)                                       # (B, S, hidden)
        logits = self.head(f).squeeze(-1).mean(dim=1)
        return (logits, f.mean(dim=1)) if return_features else logits


def _mlp(dims: list[int], layer_norm: bool = True) -> nn.Sequential:
    """Linear layers with LayerNorm + ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            if layer_norm:
                layers.append(nn.LayerNorm(dims[i + 1]))
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class PoseNet(nn.Module):
    """Global-regression pose network (``model.pose: regress``, kept as an ablation baseline only).

    P(points_a, points_b) -> (B, 4, 4) a_from_b, the transform mapping b's coordinates into a's.

    For a pair (frame t, frame t+d) it predicts cam_t_from_cam_{t+d}: ``R @ p_b + t`` lies on ``points_a``.
    Each cloud is centred on its centroid and both are divided by the pair's RMS radius (one scale per
    pair, so scenes of any size look alike and the relative scale survives); a shared PointNet (with
    LayerNorm: per point, no batch statistics) encodes each, and an MLP on both global features and both
    centroids gives a 6D rotation (Zhou et al. 2019) and the translation (in units of the pair's scale).
    The last layer starts at zero, so an untrained P predicts the identity (small camera motion: a good
    start).
    """

    def __init__(self, hidden: int = 64, global_dim: int = 256):
        super().__init__()
        self.encoder = _mlp([3, hidden, 2 * hidden, global_dim])
        self.head = _mlp([2 * global_dim + 6, global_dim, global_dim // 2, 9])
        nn.init.zeros_(self.head[-1].weight)
        with torch.no_grad():
            self.head[-1].bias.copy_(torch.tensor(IDENTITY_6D + (0.0, 0.0, 0.0)))

    def forward(self, points_a: torch.Tensor, points_b: torch.Tensor) -> torch.Tensor:
        """Predict a_from_b.

        Args:
            points_a: (B, N, 3) cloud of frame t, its camera frame, metres.
            points_b: (B, M, 3) cloud of frame t+d, its camera frame, metres.

        Returns:
            (B, 4, 4) float32 a_from_b = cam_t_from_cam_{t+d}.
        """
        c_a = points_a.mean(dim=1, keepdim=True)                   # (B, 1, 3)
        c_b = points_b.mean(dim=1, keepdim=True)
        a0, b0 = points_a - c_a, points_b - c_b
        rms = (0.5 * (a0.pow(2).sum(-1).mean(-1) + b0.pow(2).sum(-1).mean(-1))).sqrt()  # (B,) RMS radius
        size = (rms.detach().float() + 1e-6)[:, None]                # (B, 1) metres
        f_a = self.encoder(a0 / size[..., None].to(a0.dtype)).max(dim=1).values
        f_b = self.encoder(b0 / size[..., None].to(b0.dtype)).max(dim=1).values
        out = self.head(torch.cat([f_a, f_b, c_a[:, 0], c_b[:, 0]], dim=-1)).float()  # (B, 9)
        R = rotation_6d_to_matrix(out[:, :6])                      # (B, 3, 3)
        # Translation regressed directly (in units of the pair's size), not composed as c_a - R c_b + dt:
        # with partial views the centroids move with the field of view (measured on TUM fr1/rpy: that
        # prior gave 17-39 cm errors at gaps 5-10 where the true motion is 1.5-3 cm); the head sees the
        # centroids and can still use them.
        t = out[:, 6:] * size
        a_from_b = torch.zeros(R.shape[0], 4, 4, device=R.device, dtype=R.dtype)
        a_from_b[:, :3, :3] = R
        a_from_b[:, :3, 3] = t
        a_from_b[:, 3, 3] = 1.0
        return a_from_b


# ----------------------------------------------------------------------------------------- correspondence P

def knn_indices(x: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k nearest neighbours of every point (itself first); (B, N, 3) -> (B, N, k) int64.

    On a CPU a k-d tree per cloud (scipy cKDTree; ~50x faster than the dense N x N distances at N = 1024),
    elsewhere ``cdist`` + ``topk``.
    """
    k = min(k, x.shape[1])
    with torch.no_grad():
        if x.device.type == "cpu":
            from scipy.spatial import cKDTree

            pts = x.detach().float().numpy()
            out = np.stack([cKDTree(p).query(p, k=k)[1].reshape(len(p), k) for p in pts])
            return torch.from_numpy(out.astype(np.int64))
        d = torch.cdist(x.float(), x.float())
        return d.topk(k, dim=-1, largest=False).indices


def gather_points(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, N, C), idx (B, N', k) -> (B, N', k, C) the rows of x named by idx (one ``index_select`` over the
    flattened batch: ~4x faster on a CPU than advanced indexing, same values)."""
    B, N, C = x.shape
    flat = idx + (torch.arange(B, device=idx.device) * N)[:, None, None]
    return x.reshape(B * N, C).index_select(0, flat.reshape(-1)).reshape(*idx.shape, C)


def local_geometry(x: torch.Tensor, k: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normals, shape descriptors and neighbour indices from each point's k nearest neighbours.

    Normals are the smallest-eigenvalue eigenvectors of the neighbourhood covariance, oriented towards
    the camera (the origin of the camera frame), as Open3D's ``orient_normals_towards_camera_location``.

    Args:
        x: (B, N, 3) clouds, camera frame, metres.
        k: neighbourhood size.

    Returns:
        normals (B, N, 3), shape (B, N, 4) [linearity, planarity, scattering, log spacing ratio] (all
        invariant to rigid motion), knn (B, N, k) indices (the point itself first).
    """
    idx = knn_indices(x, k)
    nb = gather_points(x.float(), idx)                                  # (B, N, k, 3)
    c = nb - nb.mean(dim=2, keepdim=True)
    # covariance from its 6 distinct entries (elementwise: much faster than B*N tiny matmuls on a CPU)
    xx, yy, zz = (c[..., 0] * c[..., 0]).mean(-1), (c[..., 1] * c[..., 1]).mean(-1), (c[..., 2] * c[..., 2]).mean(-1)
    xy, xz, yz = (c[..., 0] * c[..., 1]).mean(-1), (c[..., 0] * c[..., 2]).mean(-1), (c[..., 1] * c[..., 2]).mean(-1)
    cov = torch.stack([xx, xy, xz, xy, yy, yz, xz, yz, zz], dim=-1).reshape(*c.shape[:2], 3, 3)
    cov = cov + 1e-9 * torch.eye(3, device=x.device)
    evals, evecs = torch.linalg.eigh(cov)                               # ascending
    n = evecs[..., 0]
    n = torch.where(((n * x.float()).sum(-1, keepdim=True) > 0), -n, n)  # towards the camera
    l0, l1, l2 = evals.clamp_min(0).unbind(-1)
    s = l2 + 1e-12
    spacing = (nb[:, :, 1:] - nb[:, :, :1]).norm(dim=-1)                 # (B, N, k-1)
    ratio = torch.log((spacing[..., -1] + 1e-6) / (spacing[..., 0] + 1e-6))
    shape = torch.stack([(l2 - l1) / s, (l1 - l0) / s, l0 / s, ratio], dim=-1)
    return n.detach(), shape.detach(), idx


def ppf_features(x: torch.Tensor, normals: torch.Tensor, idx: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Point-pair features of each point with its neighbours (Drost et al. 2010; PPFNet, Deng et al. 2018).

    For p_i and neighbour p_j with d = p_j - p_i: (|d| / scale, n_i . d^, n_j . d^, n_i . n_j): invariant to
    rigid motions of the cloud.

    Args:
        x: (B, N, 3); normals: (B, N, 3); idx: (B, N, k); scale: (B, 1, 1) length unit (metres).

    Returns:
        (B, N, k, 4).
    """
    x = x.float()
    d = gather_points(x, idx) - x[:, :, None]                          # (B, N, k, 3)
    dist = d.norm(dim=-1, keepdim=True)
    dh = d / (dist + 1e-9)
    ni = normals[:, :, None].expand_as(d)
    nj = gather_points(normals, idx)
    return torch.cat([dist / scale[..., None], (ni * dh).sum(-1, keepdim=True), (nj * dh).sum(-1, keepdim=True),
                      (ni * nj).sum(-1, keepdim=True)], dim=-1)


def fpfh_features(x: torch.Tensor, normal_radius: float = 4.0, feature_radius: float = 12.0) -> torch.Tensor:
    """FPFH descriptors (Rusu et al. 2009; Open3D, C++) of every point, radii in units of each cloud's median
    neighbour spacing; (B, N, 3) -> (B, N, 33) float32 on x's device, each histogram triple scaled to sum
    to 1 per histogram (no gradient: an input feature)."""
    import open3d as o3d
    from scipy.spatial import cKDTree

    out = []
    for p in x.detach().float().cpu().numpy():
        spacing = float(np.median(cKDTree(p).query(p, k=2)[0][:, 1])) or 1e-3
        pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(p.astype(np.float64)))
        pcd.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=normal_radius * spacing, max_nn=30))
        pcd.orient_normals_towards_camera_location(np.zeros(3))
        f = o3d.pipelines.registration.compute_fpfh_feature(
            pcd, o3d.geometry.KDTreeSearchParamHybrid(radius=feature_radius * spacing, max_nn=100))
        out.append(np.asarray(f.data, dtype=np.float32).T / 100.0)
    return torch.from_numpy(np.stack(out)).to(x.device)


class LocalFeatureNet(nn.Module):
    """Per-point local descriptors invariant to rigid motion: point-pair features over a kNN graph.

    Layer 1 (PPFNet-like, Deng et al. 2018): for every point, an MLP on the point-pair features with its ``k``
    nearest neighbours plus the neighbours' shape descriptors, max-pooled over the neighbours. Layer 2
    (EdgeConv, Wang et al. 2019): relu(A h_i + B h_j + C ppf_ij) max-pooled over the same neighbours, so a
    point sees its neighbours' neighbourhoods (written as per-point products plus a gather instead of a
    concatenation per edge: the same function, 3-4x cheaper on a CPU). Output: L2-normalised (B, N, out_dim).

    Lengths are in units of the cloud's median neighbour spacing, so the descriptors do not depend on the
    metric size of the neighbourhood (a far wall, a near desk) as long as clouds are sampled alike.
    """

    def __init__(self, hidden: int = 64, out_dim: int = 32, k: int = 16, k2: int | None = None,
                 fpfh: bool = True):
        super().__init__()
        self.k = k
        self.fpfh = fpfh
        H = hidden
        if fpfh:
            # FPFH in, and a fixed-at-init random projection of it added to the output (a Johnson-Lindenstrauss
            # map keeps FPFH's distances): an untrained network matches about as well as FPFH on the same
            # points, and training learns the residual that makes descriptors more distinctive
            self.fpfh_in = nn.Sequential(nn.Linear(33, H), nn.ReLU(), nn.Linear(H, H))
            self.fpfh_skip = nn.Linear(33, out_dim, bias=False)
            nn.init.normal_(self.fpfh_skip.weight, std=1.0)
        self.e1_ppf = nn.Linear(4, H)
        self.e1_shape = nn.Linear(4, H, bias=False)
        self.e1_out = nn.Linear(H, H)
        self.point1 = nn.Sequential(nn.Linear(H + 4, H), nn.ReLU())
        self.e2_self = nn.Linear(H, H)
        self.e2_nb = nn.Linear(H, H, bias=False)
        self.e2_ppf = nn.Linear(4, H, bias=False)
        self.out = nn.Sequential(nn.Linear(2 * H, H), nn.ReLU(), nn.Linear(H, out_dim))
        if fpfh:
            nn.init.normal_(self.out[-1].weight, std=0.01)
            nn.init.zeros_(self.out[-1].bias)
        # FPFH of clouds seen before (real frames recur every epoch; their clouds are fixed with voxel sampling),
        # keyed by the cloud's bytes: not state of the model (not saved), just a bounded memo of a pure function
        self._fpfh_memo: "OrderedDict[bytes, torch.Tensor]" = OrderedDict()
        self.fpfh_memo_size = 1024

    def histograms(self, x: torch.Tensor) -> torch.Tensor:
        """FPFH input histograms (B, N, 33) of clouds x (B, N, 3), memoised per cloud."""
        import hashlib

        pts = x.detach().float().cpu().numpy()
        keys = [hashlib.blake2b(p.tobytes(), digest_size=16).digest() for p in pts]
        miss = [i for i, k in enumerate(keys) if k not in self._fpfh_memo]
        if miss:
            new = fpfh_features(torch.from_numpy(pts[miss])).cpu()
            for i, h in zip(miss, new):
                self._fpfh_memo[keys[i]] = h
        out = []
        for k in keys:
            self._fpfh_memo.move_to_end(k)
            out.append(self._fpfh_memo[k])
        while len(self._fpfh_memo) > self.fpfh_memo_size:
            self._fpfh_memo.popitem(last=False)
        return torch.stack(out).to(x.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, 3) camera-frame clouds (metres) -> (B, N, out_dim) unit descriptors (float32)."""
        x = x.float()
        normals, shape, idx = local_geometry(x, self.k)
        nn1 = gather_points(x, idx[:, :, 1:2])[:, :, 0]
        scale = (nn1 - x).norm(dim=-1).median(dim=1).values.clamp_min(1e-4)[:, None, None]
        ppf = ppf_features(x, normals, idx, scale)                        # (B, N, k, 4)
        e1 = F.relu(self.e1_ppf(ppf) + gather_points(self.e1_shape(shape), idx))
        h = self.e1_out(e1).amax(dim=2)                                    # (B, N, H); amax: max without
        #                                 indices, same values, ~30x faster on a CPU
        h = self.point1(torch.cat([h, shape], dim=-1))
        if self.fpfh:
            hist = self.histograms(x)
            h = h + self.fpfh_in(hist)
        e2 = self.e2_self(h)[:, :, None] + gather_points(self.e2_nb(h), idx) + self.e2_ppf(ppf)
        h2 = F.relu(e2).amax(dim=2)
        out = self.out(torch.cat([h, h2], dim=-1))
        if self.fpfh:
            out = out + self.fpfh_skip(F.normalize(hist, dim=-1))
        return F.normalize(out, dim=-1)


def weighted_procrustes(src: torch.Tensor, dst: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The rigid transform T minimising sum_i w_i |T src_i - dst_i|^2 in closed form (Kabsch/Umeyama via SVD).

    Differentiable (through ``torch.linalg.svd``; degenerate, e.g. collinear, inputs give large gradients).

    Args:
        src: (B, M, 3) points in frame b; dst: (B, M, 3) their correspondents in frame a; weights: (B, M) >= 0.

    Returns:
        (B, 4, 4) float a_from_b with a proper rotation (det +1).
    """
    src, dst, w = src.float(), dst.float(), weights.float().clamp_min(0)
    w = w / (w.sum(dim=1, keepdim=True) + 1e-12)
    cs = (w[..., None] * src).sum(1, keepdim=True)
    cd = (w[..., None] * dst).sum(1, keepdim=True)
    H = (src - cs).transpose(1, 2) @ (w[..., None] * (dst - cd))       # (B, 3, 3)
    U, _, Vh = torch.linalg.svd(H + 1e-9 * torch.eye(3, device=H.device))
    V = Vh.transpose(1, 2)
    d = torch.det(V @ U.transpose(1, 2))
    D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    R = V @ D @ U.transpose(1, 2)
    t = cd[:, 0] - (R @ cs[:, 0, :, None])[..., 0]
    T = torch.zeros(src.shape[0], 4, 4, device=src.device, dtype=R.dtype)
    T[:, :3, :3] = R
    T[:, :3, 3] = t
    T[:, 3, 3] = 1.0
    return T


class MatchPoseNet(nn.Module):
    """Correspondence-based pose network P (the default, ``model.pose: match``).

    Per-point local descriptors of both clouds (``LocalFeatureNet``) -> soft assignment of every point of
    b to the points of a (softmax of descriptor similarity / ``temperature``) -> weighted Procrustes (SVD)
    -> ``a_from_b``. Differentiable end to end: the trainer supervises the descriptors with ground-truth
    correspondences and this pose with the pose loss. At inference the estimator
    (training/estimator.py) uses the same descriptors with mutual nearest neighbours and RANSAC instead
    of the soft assignment.
    """

    def __init__(self, hidden: int = 64, out_dim: int = 32, k: int = 16, temperature: float = 0.05,
                 fpfh: bool = True):
        super().__init__()
        self.features = LocalFeatureNet(hidden=hidden, out_dim=out_dim, k=k, fpfh=fpfh)
        self.temperature = temperature

    def soft_pose(self, points_a, points_b, f_a, f_b) -> torch.Tensor:
        """Weighted-SVD pose from the soft assignment of b's points to a's; (B, 4, 4).

        Computed in float32 even under CUDA bfloat16 autocast (bf16 soft correspondents of points metres away
        would carry centimetre rounding into the pose)."""
        with torch.autocast(device_type=points_a.device.type, enabled=False):
            return self._soft_pose(points_a.float(), points_b.float(), f_a.float(), f_b.float())

    def _soft_pose(self, points_a, points_b, f_a, f_b) -> torch.Tensor:
        logits = f_b @ f_a.transpose(1, 2) / self.temperature           # (B, M, N)
        p = logits.softmax(dim=-1)
        target = p @ points_a.float()                                   # (B, M, 3) soft correspondents
        # weight: mutual agreement of the two directions' softmax at the best match (sharp and two-sided)
        q = logits.softmax(dim=1)
        w = (p * q).max(dim=-1).values
        return weighted_procrustes(points_b, target, w)

    def forward(self, points_a: torch.Tensor, points_b: torch.Tensor) -> torch.Tensor:
        """Predict a_from_b = cam_t_from_cam_{t+d}; points (B, N, 3), (B, M, 3) -> (B, 4, 4) float32."""
        f_a, f_b = self.features(points_a), self.features(points_b)
        return self.soft_pose(points_a, points_b, f_a, f_b)


def build_models(model_cfg) -> dict[str, nn.Module]:
    """The networks of a ``train.model`` config: {"G": Refiner, "D": Discriminator, "P": PoseNet}."""
    return {
        "G": Refiner(zdim=model_cfg.zdim, hidden=model_cfg.g_hidden, global_dim=model_cfg.g_global,
                     max_offset=model_cfg.max_offset),
        "D": Discriminator(hidden=model_cfg.d_hidden, blocks=model_cfg.d_blocks, norm=model_cfg.d_norm,
                           patches=model_cfg.d_patches, patch_points=model_cfg.d_patch_points),
        "P": (MatchPoseNet(hidden=model_cfg.p_hidden, out_dim=model_cfg.p_out_dim, k=model_cfg.p_k,
                           temperature=model_cfg.p_temperature, fpfh=model_cfg.p_fpfh)
              if model_cfg.pose == "match" else PoseNet(hidden=model_cfg.p_hidden, global_dim=model_cfg.p_global)),
    }
