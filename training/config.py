"""The ``train:`` section of a synthseq YAML, and the device a ``device`` setting names (train and evaluate)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from synthseq.config import bounded


@dataclass
class DistillConfig:
    """Self-distillation of the discriminator into the refiner (``train.distill``).

    L_distill = weight * (alpha * KL(Bern(mean D(x_real)) || Bern(mean D(x~)))
                          + (1 - alpha) * MSE(f(x~), f(x_real)))

    ``mode: features`` uses f = batch-mean of D's intermediate (pooled) features (cheap, the default);
    ``mode: gradients`` uses f = d mean log D(x) / d theta_D, the original formulation (double backprop).
    """

    mode: Literal["features", "gradients"] = "features"
    alpha: float = bounded(0.5, ge=0, le=1)
    weight: float = bounded(1.0, ge=0)


@dataclass
class PseudoLabelConfig:
    """Pseudo-labels for unlabeled real pairs (``train.pseudo_labels``; training/pseudo_labels.py).

    Before training, each real training pair (t, t + d) (at most ``max_pairs`` per capture and gap, spread
    over the capture) gets the chained frame-to-frame ICP pose t -> t+1 -> ... -> t+d refined by ICP at gap d.
    ``method: chained``: that pose is the label if every ICP passes ``min_fitness`` / ``max_rmse_m`` and the
    refinement moved the chain by <= ``max_rot_deg`` / ``max_trans_m``; ``method: fpfh``: FPFH + RANSAC + ICP
    is the label if it and the chained fit pass those checks and agree within them; ``method: model``
    (self-training): the chained labels plus pairs the chain rejects labelled by the pose estimator of
    ``train.init``'s P, refined by ICP, kept when they fit and pass a cycle check over the pair's halves
    (t -> t+d//2 -> t+d within the same limits). Accepted pairs are trained
    on like synthetic ones (descriptor + pose loss, times ``weight``). Real ground truth is never read.
    """

    enabled: bool = False
    method: Literal["chained", "model", "fpfh"] = "chained"
    weight: float = bounded(1.0, ge=0)
    max_pairs: int = bounded(40, gt=0)          # per capture and gap
    min_fitness: float = bounded(0.6, ge=0, le=1)
    max_rmse_m: float = bounded(0.02, gt=0)
    max_rot_deg: float = bounded(2.0, gt=0)
    max_trans_m: float = bounded(0.03, gt=0)
    model_min_fitness: float = bounded(0.3, ge=0, le=1)  # method model: fitness floor of the estimator's refined
    #                                 poses (the cycle check guards them; a correct pose at a large gap fits only
    #                                 the overlap: 0.3 is 3DMatch's overlap floor for a valid pair)
    max_depth_m: float = bounded(3.0, gt=0)    # depth limit of the dense clouds registered
    voxel_m: float = bounded(0.02, gt=0)
    cache: str | None = None                    # labels file read when it exists, else written (None: the run's
    #                                 pseudo_labels.json); lets runs on the same captures share one labelling


@dataclass
class ModelConfig:
    """Network sizes (``train.model``); the defaults train on a 2-core CPU at B=16, N=1024."""

    zdim: int = bounded(16, gt=0)               # refiner latent size
    g_hidden: int = bounded(64, gt=0)           # refiner per-point width
    g_global: int = bounded(128, gt=0)          # refiner global feature width
    max_offset: float | None = bounded(0.05, gt=0)  # offsets beyond this (m) are penalised (train.offset_cap_weight)
    d_hidden: int = bounded(64, gt=0)           # discriminator width (also the size of f_D)
    d_blocks: int = bounded(2, ge=1)            # ResnetBlockFC blocks in D
    d_norm: Literal["batch", "none"] = "batch"  # normalisation inside D's blocks
    d_patches: int = bounded(32, ge=0)          # 0: D sees whole clouds; M: M random local patches per cloud
    d_patch_points: int = bounded(32, gt=0)     # points per patch
    pose: Literal["match", "regress"] = "match"  # match: local features + matching + SVD/RANSAC (default);
                                                # regress: the global 6D regressor (ablation baseline)
    p_hidden: int = bounded(64, gt=0)           # pose network per-point width
    p_global: int = bounded(128, gt=0)          # regress only: global feature width
    p_out_dim: int = bounded(32, gt=0)          # match only: descriptor size
    p_k: int = bounded(16, ge=4)                # match only: kNN neighbourhood size
    p_temperature: float = bounded(0.05, gt=0)  # match only: softmax temperature of the soft assignment
    p_fpfh: bool = True                         # match only: FPFH histograms as extra per-point input


@dataclass
class TrainConfig:
    """The ``train:`` section: data, optimisation, loss weights (original design's keys kept), logging.

    Keys kept from the original design with their meaning: epochs, batch_size, learning_rate, beta (KL
    weight on q(z|x)), gamma (MMD weight on z), mmd_sigma (MMD Gaussian kernel bandwidth), gan_weight
    (weight of the non-saturating GAN term in L_G), reg_param (weight of the self-regularisation
    mean|offsets|), sample_interval (steps between sample figures), use_gan, adam_betas (0.5, 0.999).
    """

    # data
    data: str | None = None                     # dataset directory written by `synthseq build`
    real: list[str] = field(default_factory=list)  # real captures (TUM / 7-Scenes / point-cloud folders)
    gaps: list[int] = bounded([1, 5, 10], gt=0)  # frame gaps d of the (t, t+d) pairs
    real_gaps: list[int] | None = bounded(None, gt=0)  # gaps of the real pairs (None: gaps)
    real_sampling: Literal["random", "voxel"] = "random"  # real clouds: uniform draws of num_points, or one
    #                                 point per voxel of the dense frame as the estimator samples (RealPairs)
    real_num_points: int | None = bounded(None, gt=0)  # points per real cloud (None: num_points)
    real_voxel_draws: int = bounded(1, ge=1)  # real_sampling voxel: different voxel samples kept per frame, one
    #                                 picked per use (augmentation)
    synthetic_weight: float = bounded(1.0, ge=0)  # weight of P's losses on the synthetic pair when pseudo-labelled
    #                                 real pairs exist (0: P learns from those only); without them P trains on synthetic
    views: list[int] | None = bounded(None, ge=0)  # synthetic views used for pairs (None: every view whose
                                                   # camera moves; a static rig view only gives identity pairs)
    num_points: int = bounded(1024, gt=0)       # points per cloud fed to the networks
    num_workers: int = bounded(0, ge=0)         # DataLoader workers
    # synthetic pairs only: each cloud of a pair turned by its own random rotation of up to this angle about
    # the camera centre (and shifted by up to augment_translation_m), ground truth updated
    # (datasets.transforms.RandomRigid(independent=True)): widens the relative motions P sees
    augment_rotation_deg: float = bounded(0.0, ge=0, le=180)
    augment_translation_m: float = bounded(0.0, ge=0)
    # a checkpoint (run directory or .pt) whose pose network P (and EMA teacher) start this run: fine-tuning,
    # e.g. the shipped training/weights/pose_match_small.pt; None: P starts from its random initialisation
    init: str | None = None
    # optimisation
    epochs: int = bounded(20, gt=0)             # passes over the synthetic pairs
    max_steps: int | None = bounded(None, gt=0)  # optional cap on optimisation steps
    batch_size: int = bounded(16, gt=0)
    cuda_batch_size: int | None = bounded(None, gt=0)  # batch size when training on CUDA (None: batch_size)
    learning_rate: float = bounded(1e-3, gt=0)
    adam_betas: tuple[float, float] = (0.5, 0.999)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True                            # bfloat16 autocast on CUDA (ignored on CPU)
    # GAN / refiner losses
    use_gan: bool = True                        # false: P trains on raw synthetic pairs (the ablation)
    # The original sketch used gan_weight 0.1 / reg_param 10: with mean|offsets| in metres that pins the
    # offsets at ~0 (measured: a 5 cm depth bias is not learned in 300 steps); 1 / 1 learns it in ~25.
    gan_weight: float = bounded(1.0, ge=0)
    reg_param: float = bounded(1.0, ge=0)
    beta: float = bounded(0.5, ge=0)
    gamma: float = bounded(1.0, ge=0)
    mmd_sigma: float = bounded(1.0, gt=0)
    distill: DistillConfig = field(default_factory=DistillConfig)
    offset_cap_weight: float = bounded(10.0, ge=0)   # mean((relu(|offset| - max_offset) / max_offset)^2)
    latent_weight: float = bounded(1.0, ge=0)        # MSE of z recovered from the refined cloud (InfoGAN)
    r1_weight: float = bounded(0.1, ge=0)            # R1 penalty on D's gradient at real clouds
    history_size: int = bounded(64, ge=0)            # refined clouds kept for D (0: off)
    d_learning_rate: float | None = bounded(None, gt=0)  # D's learning rate (None: learning_rate)
    # pose losses
    descriptor_weight: float = bounded(1.0, ge=0)    # match: InfoNCE over ground-truth correspondences
    descriptor_anchors: int = bounded(256, gt=0)     # match: anchor points per pair in that loss
    pseudo_labels: PseudoLabelConfig = field(default_factory=PseudoLabelConfig)
    pose_weight: float = bounded(1.0, ge=0)          # geodesic(R, R_gt) + |t - t_gt| on synthetic pairs
    translation_weight: float = bounded(1.0, ge=0)   # relative weight of |t - t_gt| (metres) vs radians
    alignment_weight: float = bounded(1.0, ge=0)     # truncated Chamfer on real pairs
    alignment_trunc: float = bounded(0.1, gt=0)      # Chamfer truncation distance, metres
    alignment_points: int = bounded(512, ge=0)       # points per cloud in that Chamfer (0: all); cost ~ n^2
    consistency_weight: float = bounded(0.1, ge=0)   # student vs EMA teacher on real pairs
    consistency_jitter: float = bounded(0.005, ge=0)  # std (m) of the noise on the student's real inputs
    ema_decay: float = bounded(0.999, ge=0, lt=1)
    # model sizes
    model: ModelConfig = field(default_factory=ModelConfig)
    # logging
    log_interval: int = bounded(10, gt=0)            # steps between metrics.jsonl / TensorBoard rows
    sample_interval: int = bounded(200, gt=0)        # steps between sample figures
    checkpoint_interval: int = bounded(500, gt=0)    # steps between checkpoints (one also at the end)

    def __post_init__(self):
        from synthseq.errors import ConfigError

        b1, b2 = self.adam_betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ConfigError(f"train.adam_betas: expected two values in [0, 1), got {list(self.adam_betas)}")
        if self.use_gan and self.real and self.real_num_points not in (None, self.num_points):
            raise ConfigError(f"train.real_num_points: {self.real_num_points} differs from train.num_points "
                              f"{self.num_points}, but train.use_gan compares real and refined clouds of one size")


def resolve_device(name: str, key: str = "train.device"):
    """``auto`` -> cuda when available, else cpu; a ``torch.device``. Raises ConfigError naming ``key`` for
    cuda without a GPU or an unknown name."""
    import torch

    from synthseq.errors import ConfigError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}: 'cuda' requested but torch.cuda.is_available() is False", key=key)
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"{key}: expected one of 'auto', 'cpu', 'cuda', got {name!r}", key=key)
    return torch.device(name)
