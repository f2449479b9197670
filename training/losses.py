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


# ----------------------------------------------------------------------------------------- correspondences

def correspondence_loss(f_a: torch.Tensor, f_b: torch.Tensor, points_a: torch.Tensor, points_b: torch.Tensor,
                        a_from_b: torch.Tensor, valid_b: torch.Tensor | None = None, temperature: float = 0.05,
                        pos_ratio: float = 1.0, neg_ratio: float = 2.0, num_anchors: int = 256,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE over ground-truth correspondences (a contrastive descriptor loss, as FCGF/PREDATOR's).

    Every point p_b of b is mapped into a by the true ``a_from_b``; its correspondent is the nearest point of a
    if that lies within ``pos_ratio`` x the pair's point spacing (median nearest-neighbour distance inside a).
    For up to ``num_anchors`` such points per pair (spatially random), the loss is the cross-entropy of the
    softmax over all of a's descriptors (similarity / temperature) at the correspondent; a's other points
    within ``neg_ratio`` x spacing of the true location are neither positive nor negative (masked). Points
    with ``valid_b`` False (moving objects) are never anchors: their true position in a is not a_from_b p_b,
    so they only appear as negatives, which teaches the descriptors nothing wrong.

    Args:
        f_a: (B, N, C), f_b: (B, M, C) unit descriptors; points_a (B, N, 3), points_b (B, M, 3) camera frames;
        a_from_b: (B, 4, 4) ground truth; valid_b: (B, M) bool or None (all valid).
        generator: draws the anchors.

    Returns:
        (loss (), matched fraction (): share of anchors whose top-1 descriptor match is within the radius).
    """
    B, M, _ = points_b.shape
    with torch.no_grad():
        b_in_a = transform_points(a_from_b, points_b.float())
        pa = points_a.float()
        d_aa = torch.cdist(pa, pa)
        d_aa.diagonal(dim1=1, dim2=2).fill_(float("inf"))
        spacing = d_aa.min(dim=2).values.median(dim=1).values.clamp_min(1e-4)      # (B,)
        d_ba = torch.cdist(b_in_a, pa)                                              # (B, M, N)
        nn_d, nn_i = d_ba.min(dim=2)
        ok = nn_d < pos_ratio * spacing[:, None]
        if valid_b is not None:
            ok &= valid_b.bool()
        # spatially random anchors among the points with a correspondent
        score = torch.rand(B, M, generator=generator, device=points_b.device) + ok.float()
        S = min(num_anchors, M)
        anchors = score.topk(S, dim=1).indices                                      # (B, S)
        a_ok = torch.gather(ok, 1, anchors)
        tgt = torch.gather(nn_i, 1, anchors)
        near = torch.gather(d_ba, 1, anchors[..., None].expand(B, S, d_ba.shape[2])) < neg_ratio * spacing[:, None, None]
        near.scatter_(2, tgt[..., None], False)
    fb = torch.gather(f_b.float(), 1, anchors[..., None].expand(B, S, f_b.shape[2]))
    logits = fb @ f_a.float().transpose(1, 2) / temperature                         # (B, S, N)
    logits = logits.masked_fill(near, float("-inf"))
    ce = F.cross_entropy(logits.reshape(B * S, -1), tgt.reshape(-1), reduction="none").reshape(B, S)
    w = a_ok.float()
    loss = (ce * w).sum() / w.sum().clamp_min(1.0)
    with torch.no_grad():
        top = logits.argmax(dim=2)
        hit = torch.gather(d_ba.gather(1, anchors[..., None].expand(B, S, d_ba.shape[2])), 2, top[..., None])[..., 0]
        frac = ((hit < pos_ratio * spacing[:, None]).float() * w).sum() / w.sum().clamp_min(1.0)
    return loss, frac


def static_points(labels_b: torch.Tensor, object_a_from_b: torch.Tensor | None, object_valid: torch.Tensor | None,
                  a_from_b: torch.Tensor, tol: float = 1e-3) -> torch.Tensor:
    """Which points of frame b move with the camera-static world (background, or an object that did not
    move between the frames): (B, M) bool. Points of moving objects are outliers of the camera motion.

    Args:
        labels_b: (B, M) object index, -1 background; object_a_from_b: (B, K, 4, 4) or None;
        object_valid: (B, K) bool or None; a_from_b: (B, 4, 4) the camera's relative pose.
    """
    static = labels_b < 0
    if object_a_from_b is None or object_a_from_b.shape[1] == 0:
        return static | (labels_b >= 0) if object_a_from_b is None else static
    K = object_a_from_b.shape[1]
    still = (object_a_from_b.float() - a_from_b.float()[:, None]).abs().amax(dim=(-1, -2)) < tol  # (B, K)
    if object_valid is not None:
        still &= object_valid.bool()
    lab = labels_b.clamp(0, K - 1)
    return static | ((labels_b >= 0) & torch.gather(still, 1, lab))
