"""The evaluation stage (``synthseq evaluate``): pose error of the identity (no motion) / ours / ours + ICP / ICP / FPFH + RANSAC + ICP
on held-out real and synthetic sequences with ground truth, GAN realism, and the report (report.md,
metrics.json, pairs.csv, plots, TUM trajectories).

Never on training data (issue 9): the checkpoint records its training inputs (``train.real`` with frame
ranges, ``train.data``); a real capture whose frames overlap a training range of the same folder, or a
synthetic set that is (partly) the training dataset, is refused with a line naming the overlap, unless
``allow_train_data`` (``--allow-train-data``), and then every such row is marked "seen in training" in
report.md, metrics.json and pairs.csv (``data.real_overlaps``, ``data.synthetic_overlap``).

What each method sees (also written into report.md):

- ``identity``: predicts no motion (a_from_b = I); the floor every estimator has to beat.
- ``ours``: the pose estimator (training/estimator.py) fed the same dense camera-frame clouds the baselines
  get (below, before voxelisation); it samples its own ``num_points`` points (the trainer's N).
- ``ours_icp``: ours's estimate refined by point-to-plane ICP on the dense clouds.
- ``icp`` and ``fpfh_ransac_icp``: the dense cloud - every valid depth pixel back-projected, depth up to
  ``max_depth_m`` (default 3 m, Open3D's ``depth_trunc`` default: Kinect v1 depth past ~4 m comes in
  steps of 10+ cm and slows RANSAC by 10x), voxelised at ``voxel_m`` (2 cm) inside the baseline; synthetic
  shards without depth images fall back to their stored points (N per frame; normals then use a radius of
  3x the point spacing, see ``baselines.normal_radius``).

Pairs: at every gap d, up to ``max_pairs`` pairs (t, t + d) with start frames spread evenly over the whole
sequence (only pairs whose two frames have a ground-truth pose); gaps longer than a sequence are skipped with
a note. Success rates come with 95% confidence intervals from a moving-block bootstrap over the pairs in
start order (blocks of neighbouring pairs, resampled within each sequence: neighbouring pairs of one capture
share frames and are correlated, so an iid bootstrap would be too narrow; never narrower than a Wilson
interval at the effective sample size pairs / block length; ``metrics.block_bootstrap_ci``).
The TUM trajectories for evo are a separate contiguous block of ``trajectory_pairs`` gap-1 pairs, chained.
Times are wall-clock per pair, one pair at a time (baselines: preprocessing included; ours_icp: ours's time
plus the ICP's).

Modules: ``config`` (EvaluateConfig, the methods, the check of the inputs), ``data`` (sequences, pairs,
training-data overlap), ``pose`` (the methods on pairs, per-gap summaries), ``realism`` (G, 1-NNA / MMD /
COV), ``report`` (report.md, metrics.json, pairs.csv, plots, trajectories), ``run`` (``evaluate``, the driver).
"""

from synthseq.training.evaluation.config import METHODS, EvaluateConfig
from synthseq.training.evaluation.report import format_headline
from synthseq.training.evaluation.run import evaluate

__all__ = ["METHODS", "EvaluateConfig", "evaluate", "format_headline"]
