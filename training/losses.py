"""Loss terms of the trainer: GAN, self-distillation, latent KL/MMD, pose, Chamfer alignment, consistency.

Each returns a scalar tensor (or (B,) where said) and is a pure function of its inputs; the weights are
applied in training/trainer.py, where the three objectives L_D, L_G and L_P are assembled.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


# ----------------------------------------------------------------------------------------- geometry

def transform_points(a_from_b: torch.Tensor, points_b: torch.Tensor) -> torch.Tensor:
    """Apply rigid transforms: (B, 4, 4) a_from_b, (B, N, 3) points in b -> (B, N, 3) the same points in a."""
    R = a_from_b[:, :3, :3].to(points_b.dtype)
    t = a_from_b[:, :3, 3].to(points_b.dtype)
    return points_b @ R.transpose(1, 2) + t[:, None]


def geodesic_distance(R1: torch.Tensor, R2: torch.Tensor) -> torch.Tensor:
    """Angle of R1^T R2 in radians, (..., 3, 3) x2 -> (...,), in [0, pi].

    Uses atan2(sin, cos) of the relative rotation rather than acos of the trace: exact at 0 and pi and
    with finite gradients everywhere (acos has an infinite slope at +-1).
    """
    M = R1.transpose(-1, -2).float() @ R2.float()
    cos = (M.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0
    v = torch.stack([M[..., 2, 1] - M[..., 1, 2], M[..., 0, 2] - M[..., 2, 0], M[..., 1, 0] - M[..., 0, 1]], -1)
    sin = torch.sqrt((v * v).sum(-1) + 1e-12) / 2.0
    return torch.atan2(sin, cos)


def pairwise_sq_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances, (B, N, 3) x (B, M, 3) -> (B, N, M), clamped at 0."""
    x = x.float()
    y = y.float()
    # baddbmm: |y|^2 - 2 x.y in one fused call, then |x|^2 in place
    d = torch.baddbmm((y * y).sum(-1)[:, None, :], x, y.transpose(1, 2), alpha=-2.0)
    return d.add_((x * x).sum(-1)[:, :, None]).clamp_min_(0.0)


def chamfer_distance(x: torch.Tensor, y: torch.Tensor, trunc: float | None = None,
                     squared: bool = False) -> torch.Tensor:
    """Symmetric Chamfer distance per batch element, batched (no loops over points).

    chamfer = 0.5 * (mean_i min_j d(x_i, y_j) + mean_j min_i d(x_i, y_j)), with d the Euclidean distance
    (``squared=False``, metres) or its square, each nearest-neighbour term capped at ``trunc`` when given
    (truncated Chamfer: points without a counterpart in the other cloud stop pulling beyond ``trunc``).

    Args:
        x: (B, N, 3); y: (B, M, 3).
        trunc: cap on each nearest-neighbour distance (same unit as the result), or None.
        squared: use squared distances.

    Returns:
        (B,) float32.
    """
    # Nearest neighbours from the expanded |x|^2 + |y|^2 - 2 x.y form (one batched matmul), then the
    # distances recomputed from the matched points: the expansion cancels badly near 0 in float32
    # (~1 mm at 3 m depth), the recomputed difference does not.
    with torch.no_grad():
        d2 = pairwise_sq_distances(x, y)             # (B, N, M)
        idx_x = d2.argmin(dim=2)                     # (B, N) index into y of each x_i's nearest point
        idx_y = d2.argmin(dim=1)                     # (B, M)
    x, y = x.float(), y.float()
    nn_x = ((x - torch.gather(y, 1, idx_x[..., None].expand(-1, -1, 3))) ** 2).sum(-1)  # (B, N)
    nn_y = ((y - torch.gather(x, 1, idx_y[..., None].expand(-1, -1, 3))) ** 2).sum(-1)  # (B, M)
    if not squared:
        # sqrt after the min (same argmin), with a floor so that the gradient at 0 stays finite.
        nn_x = torch.sqrt(nn_x + 1e-12)
        nn_y = torch.sqrt(nn_y + 1e-12)
    if trunc is not None:
        nn_x = nn_x.clamp_max(trunc)
        nn_y = nn_y.clamp_max(trunc)
    return 0.5 * (nn_x.mean(-1) + nn_y.mean(-1))


# ----------------------------------------------------------------------------------------- GAN

def discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """L_D = BCEWithLogits(D(x_real), 1) + BCEWithLogits(D(x~), 0); logits (B,), (B',)."""
    real = F.binary_cross_entropy_with_logits(logits_real.float(), torch.ones_like(logits_real, dtype=torch.float32))
    fake = F.binary_cross_entropy_with_logits(logits_fake.float(), torch.zeros_like(logits_fake, dtype=torch.float32))
    return real + fake


def generator_gan_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss BCEWithLogits(D(x~), 1) (Goodfellow et al. 2014); logits (B,)."""
    return F.binary_cross_entropy_with_logits(logits_fake.float(), torch.ones_like(logits_fake, dtype=torch.float32))


def bernoulli_kl(logits_target: torch.Tensor, logits: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """KL(Bern(p_t) || Bern(p)) between D's batch-mean output distributions; p_t is treated as a constant.

    Args:
        logits_target: (B,) D's logits on real clouds (the target distribution; detached).
        logits: (B',) D's logits on refined clouds.
    """
    p_t = torch.sigmoid(logits_target.detach().float()).mean().clamp(eps, 1 - eps)
    p = torch.sigmoid(logits.float()).mean().clamp(eps, 1 - eps)
    return p_t * (torch.log(p_t) - torch.log(p)) + (1 - p_t) * (torch.log1p(-p_t) - torch.log1p(-p))


def feature_distillation(logits_real, logits_fake, feats_real, feats_fake, alpha: float) -> torch.Tensor:
    """Self-distillation, ``features`` mode: alpha * KL(D out on real || on refined)
    + (1 - alpha) * MSE(mean f_D(x~), mean f_D(x_real)).

    Args:
        logits_real: (B,); logits_fake: (B',); feats_real: (B, F); feats_fake: (B', F) from D.
        alpha: weight in [0, 1].
    """
    mse = F.mse_loss(feats_fake.float().mean(0), feats_real.detach().float().mean(0))
    return alpha * bernoulli_kl(logits_real, logits_fake) + (1 - alpha) * mse


def gradient_distillation(logits_real, logits_fake, params: list[torch.Tensor], alpha: float) -> torch.Tensor:
    """Self-distillation, ``gradients`` mode (the original formulation): match d log D / d theta_D.

    g_real = d mean log D(x_real) / d theta (a constant target), g_fake = d mean log D(x~) / d theta built
    with ``create_graph=True`` so the loss backpropagates into G (double backprop). The gradient term is
    sum (g_fake - g_real)^2 / (sum g_real^2 + 1e-8): normalised, so that its weight does not depend on the
    size of D. Total: alpha * KL(D out on real || on refined) + (1 - alpha) * that.

    Args:
        logits_real: (B,), logits_fake: (B',): D's logits, with their graphs to ``params``.
        params: D's parameters theta.
        alpha: weight in [0, 1].
    """
    g_real = torch.autograd.grad(F.logsigmoid(logits_real.float()).mean(), params, retain_graph=True,
                                 allow_unused=True)
    g_fake = torch.autograd.grad(F.logsigmoid(logits_fake.float()).mean(), params, create_graph=True,
                                 allow_unused=True)
    pairs = [(gf, gr) for gf, gr in zip(g_fake, g_real) if gf is not None and gr is not None]
    num = sum(((gf - gr.detach()) ** 2).sum() for gf, gr in pairs)
    den = sum((gr.detach() ** 2).sum() for _, gr in pairs) + 1e-8
    return alpha * bernoulli_kl(logits_real, logits_fake) + (1 - alpha) * num / den


# ----------------------------------------------------------------------------------------- latent

def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)), summed over dims, averaged over the batch; (B, Z) -> ()."""
    mu, logvar = mu.float(), logvar.float()
    return (-0.5 * (1 + logvar - mu * mu - logvar.exp()).sum(-1)).mean()


def gaussian_mmd(x: torch.Tensor, y: torch.Tensor, sigma: float) -> torch.Tensor:
    """Squared MMD with the Gaussian kernel k(a, b) = exp(-|a - b|^2 / (2 sigma^2)), biased (V-statistic).

    Exactly 0 for identical samples; >= 0 always. x: (B, Z), y: (B', Z) -> ().
    """
    x, y = x.float(), y.float()

    def k(a, b):
        return torch.exp(-torch.cdist(a, b).pow(2) / (2.0 * sigma * sigma)).mean()

    return k(x, x) + k(y, y) - 2.0 * k(x, y)


# ----------------------------------------------------------------------------------------- pose

def pose_errors(pred_a_from_b: torch.Tensor, gt_a_from_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation error (radians) and translation error (metres, Euclidean), (B, 4, 4) x2 -> (B,), (B,)."""
    rot = geodesic_distance(pred_a_from_b[:, :3, :3], gt_a_from_b[:, :3, :3])
    trans = torch.linalg.vector_norm(pred_a_from_b[:, :3, 3].float() - gt_a_from_b[:, :3, 3].float(), dim=-1)
    return rot, trans


def pose_loss(pred_a_from_b, gt_a_from_b, translation_weight: float = 1.0) -> torch.Tensor:
    """Supervised pose loss mean(geodesic(R, R_gt) + translation_weight * |t - t_gt|); (B, 4, 4) x2 -> ()."""
    rot, trans = pose_errors(pred_a_from_b, gt_a_from_b)
    return (rot + translation_weight * trans).mean()


def alignment_loss(pred_a_from_b, points_a, points_b, trunc: float) -> torch.Tensor:
    """Self-supervised alignment: truncated Chamfer between P's a_from_b applied to frame b and frame a.

    Args:
        pred_a_from_b: (B, 4, 4); points_a: (B, N, 3) frame t; points_b: (B, M, 3) frame t+d; trunc: metres.
    """
    return chamfer_distance(transform_points(pred_a_from_b, points_b), points_a, trunc=trunc).mean()


def consistency_loss(student_a_from_b, teacher_a_from_b, translation_weight: float = 1.0) -> torch.Tensor:
    """Student vs EMA teacher on the same real pair: the pose loss with the (detached) teacher as target."""
    return pose_loss(student_a_from_b, teacher_a_from_b.detach(), translation_weight)
