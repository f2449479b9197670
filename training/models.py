"""The three networks: the refiner G (synthetic cloud -> refined cloud), the discriminator D, the pose network P.

All take clouds as (B, N, 3) float tensors in a camera frame (OpenCV axes, metres) and treat the N points as
a set (shared per-point layers + max pooling, PointNet, Qi et al. 2017), so N may differ between calls.
"""

from __future__ import annotations

from typing import NamedTuple

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
    Offsets are soft-bounded, offsets = max_offset * tanh(raw / max_offset) (about raw when small), so that
    no refinement moves a point by more than ``max_offset`` metres whatever D asks for: a refiner models
    sensor effects, not scene content, and the synthetic poses must stay valid. None: unbounded.
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
        if self.max_offset:
            offsets = self.max_offset * torch.tanh(offsets / self.max_offset)
        return Refined(x + offsets, offsets, mu, logvar, z)


def local_patches(x: torch.Tensor, num_patches: int, k: int) -> torch.Tensor:
    """The k nearest neighbours of ``num_patches`` centre points, relative to their centre.

    The centres are the first ``num_patches`` points: clouds are random samples of a frame already, so
    these are a random subset, and no random draw is needed.

    Args:
        x: (B, N, 3) clouds.
        num_patches: M centres (at most N).
        k: points per patch (at most N), the centre included.

    Returns:
        (B, M, k, 3) patch points minus their centre; differentiable w.r.t. ``x``.
    """
    B, N, _ = x.shape
    M, k = min(num_patches, N), min(k, N)
    centres = x[:, :M]                                              # (B, M, 3)
    with torch.no_grad():
        idx = torch.cdist(centres.float(), x.float()).topk(k, dim=-1, largest=False).indices  # (B, M, k)
    patches = torch.gather(x[:, None].expand(B, M, N, 3), 2, idx[..., None].expand(B, M, k, 3))
    return patches - centres[:, :, None]


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

    def _per_set(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) -> (B, S, hidden): one feature per patch (S = M) or per cloud (S = 1)."""
        if not self.patches:
            return self._pooled(x)[:, None]
        p = local_patches(x, self.patches, self.patch_points)       # (B, M, k, 3)
        B, M, k, _ = p.shape
        return self._pooled(p.reshape(B * M, k, 3)).reshape(B, M, -1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """f_D(x): (B, N, 3) -> (B, hidden), averaged over patches."""
        return self._per_set(x).mean(dim=1)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """Logits that ``x`` is real.

        Args:
            x: (B, N, 3) clouds, camera frame, metres.
            return_features: also return f_D(x).

        Returns:
            (B,) logits, or ((B,) logits, (B, hidden) features).
        """
        f = self._per_set(x)                                        # (B, S, hidden)
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
    """Pose network P(points_a, points_b) -> (B, 4, 4) a_from_b, the transform mapping b's coordinates into a's.

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


def build_models(model_cfg) -> dict[str, nn.Module]:
    """The networks of a ``train.model`` config: {"G": Refiner, "D": Discriminator, "P": PoseNet}."""
    return {
        "G": Refiner(zdim=model_cfg.zdim, hidden=model_cfg.g_hidden, global_dim=model_cfg.g_global,
                     max_offset=model_cfg.max_offset),
        "D": Discriminator(hidden=model_cfg.d_hidden, blocks=model_cfg.d_blocks, norm=model_cfg.d_norm,
                           patches=model_cfg.d_patches, patch_points=model_cfg.d_patch_points),
        "P": PoseNet(hidden=model_cfg.p_hidden, global_dim=model_cfg.p_global),
    }
