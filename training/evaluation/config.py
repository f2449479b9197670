"""The ``evaluate:`` config section, the methods, and the one check of an evaluation's inputs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from synthseq.config import bounded, check_bounds
from synthseq.errors import ConfigError, UsageError
from synthseq.training.estimator import EstimatorOptions

Method = Literal["identity", "ours_coarse", "ours", "ours_icp", "ours_fallback", "icp", "fpfh_ransac_icp"]
METHODS: tuple[str, ...] = get_args(Method)
MODEL_METHODS = ("ours_coarse", "ours", "ours_icp", "ours_fallback")  # need a checkpoint


@dataclass
class EvaluateConfig:
    """The ``evaluate:`` section: what ``synthseq evaluate`` runs on and how.

    Pose errors on every capture with ground truth at each gap; the baselines see dense clouds (all valid
    depth back-projected, up to ``max_depth_m``, voxelised at ``voxel_m``), P sees ``train.num_points``.
    """

    gaps: list[int] = bounded([1, 5, 10, 20, 30], gt=0)  # frame gaps d of the evaluated pairs (t, t + d)
    real: list[str] = field(default_factory=list)    # real captures (TUM / 7-Scenes / point-cloud folders)
    synthetic: str | None = None                     # a built dataset directory used as synthetic test set
    checkpoint: str | None = None                    # run dir or .pt of `synthseq train`; None = baselines only
    max_pairs: int | None = bounded(60, gt=0)        # pairs per (sequence, gap) at most; None = all
    methods: list[Method] | None = None              # None = all that apply; the identity (no motion) row is
    #                                                  always added
    trajectory_pairs: int = bounded(30, ge=0)        # gap-1 pairs chained into the TUM trajectories (evo_rpe);
    #                                                  a contiguous block, evaluated apart from the spread pairs
    bootstrap_resamples: int = bounded(2000, gt=0)   # block-bootstrap resamples of the 95% success intervals
    num_points: int = bounded(1024, gt=0)            # N for P when no checkpoint says otherwise
    use_ema: bool = False                            # evaluate the EMA teacher instead of the student P
    max_depth_m: float | None = bounded(3.0, gt=0)   # depth limit of the baselines' dense clouds (Open3D's
    #                                                  depth_trunc default; Kinect v1 depth past ~4 m is coarse)
    voxel_m: float = bounded(0.02, gt=0)             # baselines' voxel size (FPFH radius 5x, normals 2x)
    max_correspondence_m: float = bounded(0.05, gt=0)  # point-to-plane ICP correspondence distance
    synthetic_sequences: int | None = bounded(8, gt=0)  # synthetic sequences evaluated at most
    synthetic_view: int = -1                         # view evaluated per synthetic sequence (-1: the last,
                                                     # the moving handheld camera in the bundled configs)
    realism_clouds: int = bounded(100, ge=2)         # clouds per set for 1-NNA / MMD / COV
    realism_points: int = bounded(512, gt=0)         # points per cloud for the Chamfer distances
    seed: int = 0                                    # point sampling, RANSAC, refiner z
    fallback_below: float = bounded(0.3, gt=0, le=1)  # ours_fallback: below this confidence of ours, FPFH +
    #                                                  RANSAC + ICP is tried and kept where it scores better
    estimator: EstimatorOptions = field(default_factory=EstimatorOptions)  # ours: sampling, points, RANSAC,
    #                                                  fine stage (training/estimator.py; its seed is evaluate.seed)


def check_inputs(cfg: EvaluateConfig, out_dir: Path, overwrite: bool) -> tuple[EvaluateConfig, list[str]]:
    """Check an evaluation before anything heavy is imported or read: bounds, paths, methods, ``out_dir``.

    Returns:
        ``cfg`` with its paths as strings and its gaps as ints, and the methods to run (the given ones, or
        all that apply; the identity first).

    Raises:
        ConfigError: a value out of its bounds, no gap. FileNotFoundError: the checkpoint, a real capture
        or the synthetic dataset does not exist. DataError: a malformed frame range. UsageError: unknown
        method, a model method without a checkpoint, nothing to evaluate, ``out_dir`` exists without
        ``overwrite`` (or is not a directory).
    """
    from synthseq.datasets.real import parse_capture_spec

    cfg = dataclasses.replace(cfg, gaps=[int(g) for g in cfg.gaps], real=[str(p) for p in cfg.real],
                              synthetic=None if cfg.synthetic is None else str(cfg.synthetic),
                              checkpoint=None if cfg.checkpoint is None else str(cfg.checkpoint))
    check_bounds(cfg, "evaluate")
    if not cfg.gaps:
        raise ConfigError("evaluate.gaps: expected at least one frame gap", key="evaluate.gaps")
    if cfg.checkpoint is not None and not Path(cfg.checkpoint).exists():
        raise FileNotFoundError(f"--checkpoint {cfg.checkpoint}: not found (a run directory or a .pt file; "
                                "'none' for baselines only)")
    for p in cfg.real:
        if not parse_capture_spec(p).path.exists():  # PATH@START:STOP: a malformed range is a DataError
            raise FileNotFoundError(f"--real {p}: capture not found")
    if cfg.synthetic is not None and not Path(cfg.synthetic).is_dir():
        raise FileNotFoundError(f"--synthetic {cfg.synthetic}: dataset directory not found")
    methods = list(cfg.methods if cfg.methods is not None else
                   METHODS if cfg.checkpoint is not None else [m for m in METHODS if m not in MODEL_METHODS])
    for m in methods:
        if m not in METHODS:
            raise UsageError(f"methods: unknown method {m!r} (known: {', '.join(METHODS)})")
    if "identity" not in methods:
        methods.insert(0, "identity")
    if cfg.checkpoint is None and any(m in MODEL_METHODS for m in methods):
        raise UsageError(f"methods {[m for m in methods if m in MODEL_METHODS]} need a checkpoint")
    if not cfg.real and cfg.synthetic is None:
        raise UsageError("nothing to evaluate: give --real PATH (repeatable) and/or --synthetic DATA_DIR")
    if out_dir.exists() and not overwrite:
        raise UsageError(f"--out {out_dir}: already exists; choose another report directory or pass --overwrite")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir}: exists and is not a directory")
    return cfg, methods
