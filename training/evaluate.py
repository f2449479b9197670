"""The evaluation stage: pose error of the identity (no motion) / ours / ours + ICP / ICP / FPFH + RANSAC + ICP
on held-out real and synthetic sequences with ground truth, GAN realism, and the report (report.md,
metrics.json, pairs.csv, plots, TUM trajectories).

Never on training data (issue 9): the checkpoint records its training inputs (``train.real`` with frame
ranges, ``train.data``); a real capture whose frames overlap a training range of the same folder, or a
synthetic set that is (partly) the training dataset, is refused with a line naming the overlap, unless
``allow_train_data`` (``--allow-train-data``), and then every such row is marked "seen in training" in
report.md, metrics.json and pairs.csv (see ``evaluation_data.training_overlap``).

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
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from synthseq.errors import DataError, UsageError
from synthseq.training import metrics as M
from synthseq.training.evaluation_data import (  # noqa: F401 - re-exported: the evaluation's data API
    EvalSequence,
    load_real_sequence,
    load_synthetic_sequences,
    pair_starts,
    real_overlaps,
    synthetic_overlap,
    trajectory_block,
)

log = logging.getLogger(__name__)

METHODS = ("identity", "ours", "ours_icp", "icp", "fpfh_ransac_icp")
MODEL_METHODS = ("ours", "ours_icp")
METHOD_LABELS = {
    "identity": "identity (no motion)",
    "ours": "ours (P)",
    "ours_icp": "ours + ICP",
    "icp": "ICP from identity",
    "fpfh_ransac_icp": "FPFH + RANSAC + ICP",
}
# Methods whose chained gap-1 estimates are written as TUM trajectories.
TRAJECTORY_METHODS = ("ours", "ours_icp", "icp", "fpfh_ransac_icp")
SEEN = "seen in training"


# ----------------------------------------------------------------------------------------------------
# Pose evaluation
# ----------------------------------------------------------------------------------------------------

class _PoseModel:
    """The pose estimator (training/estimator.py, the pose engineer's) wrapped for numpy pairs:
    ``(cloud_a (M, 3), cloud_b (M, 3)) -> ((4, 4) a_from_b, seconds)``, fed the dense camera-frame clouds the
    baselines get (it samples its own points); ``last_confidence`` is its confidence for the last pair."""

    def __init__(self, model, device, num_points: int = 1024, seed: int = 0):
        from synthseq.training.estimator import Estimator, EstimatorOptions

        self.model = model
        self.device = device
        # the trainer's N points per cloud (train.num_points), as load_estimator sets them
        self.estimator = Estimator(model, EstimatorOptions(num_points=int(num_points), seed=int(seed)), device)
        self.last_confidence = float("nan")

    def __call__(self, points_a: np.ndarray, points_b: np.ndarray) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        out, self.last_confidence = self.estimator(points_a, points_b)
        return out, time.perf_counter() - start


def evaluate_pairs(seq: EvalSequence, gap: int, starts: np.ndarray, methods: Sequence[str],
                   pose_model: _PoseModel | None = None, baseline_options: dict | None = None,
                   seed: int = 0, on_pair: Callable[[], None] | None = None) -> dict:
    """Run every method on the pairs (t, t + gap), t in ``starts``.

    Returns:
        ``{"starts": (P,), "gt": (P, 4, 4), "<method>": {"a_from_b": (P, 4, 4), "seconds": (P,),
        "confidence": (P,)}}`` (confidence NaN where the method gives none).
    """
    from synthseq.geometry import relative_pose
    from synthseq.training import baselines as B

    opts = dict(baseline_options or {})
    P = len(starts)
    out: dict[str, Any] = {"starts": np.asarray(starts), "gt": None}
    if seq.world_from_camera is not None:
        out["gt"] = relative_pose(seq.world_from_camera[starts], seq.world_from_camera[starts + gap])
    for m in methods:
        out[m] = {"a_from_b": np.full((P, 4, 4), np.nan), "seconds": np.zeros(P), "confidence": np.full(P, np.nan)}
    need_dense = any(m != "identity" for m in methods)
    for k, t in enumerate(starts):
        t = int(t)
        dense_a = seq.dense(t) if need_dense else None
        dense_b = seq.dense(t + gap) if need_dense else None
        ours_pose, ours_s, ours_conf = None, 0.0, math.nan
        if pose_model is not None and any(m in MODEL_METHODS for m in methods):
            ours_pose, ours_s = pose_model(dense_a, dense_b)
            ours_conf = float(getattr(pose_model, "last_confidence", math.nan))
        for m in methods:
            conf = math.nan
            if m == "identity":
                pose, sec = np.eye(4), 0.0
            elif m == "ours":
                pose, sec, conf = ours_pose, ours_s, ours_conf
            elif m == "ours_icp":
                r = B.refine_icp(dense_a, dense_b, ours_pose, **opts)
                pose, sec, conf = r.a_from_b, ours_s + r.seconds, ours_conf
            elif m == "icp":
                r = B.icp_from_identity(dense_a, dense_b, **opts)
                pose, sec = r.a_from_b, r.seconds
            elif m == "fpfh_ransac_icp":
                r = B.fpfh_ransac_icp(dense_a, dense_b, seed=seed, **opts)
                pose, sec = r.a_from_b, r.seconds
            else:  # checked by evaluate()
                raise ValueError(f"unknown method {m!r}")
            out[m]["a_from_b"][k] = pose
            out[m]["seconds"][k] = sec
            out[m]["confidence"][k] = conf
            if on_pair is not None and m != "identity":
                on_pair()
    return out


def _block_lengths(raw_parts: list[tuple[int, dict, int]]) -> tuple[np.ndarray, dict]:
    """Groups (one per sequence) and block lengths for the bootstrap of pooled per-pair results."""
    groups, lengths = [], {}
    for gi, (gap, r, num_frames) in enumerate(raw_parts):
        P = len(r["starts"])
        spacing = (float(r["starts"][-1] - r["starts"][0]) / (P - 1)) if P > 1 else 1.0
        lengths[gi] = M.block_length(P, gap, spacing)
        groups.append(np.full(P, gi))
    return (np.concatenate(groups) if groups else np.zeros(0, np.int64)), lengths


def _summarize_gap(parts: list[tuple[int, dict, int]], methods: list[str], resamples: int, seed: int) -> dict:
    """metrics.json entry of one gap: pairs, true motion, per method errors + success with its 95% CI."""
    r = _concat([p[1] for p in parts], methods)
    groups, lengths = _block_lengths(parts)
    entry = {"num_pairs": int(len(r["starts"])), "motion": _motion_summary(r["gt"]), "methods": {},
             "bootstrap": {"kind": "moving-block, stratified by sequence", "resamples": int(resamples),
                           "block_lengths": [int(v) for v in lengths.values()]}}
    for m in methods:
        conf = r[m]["confidence"] if np.isfinite(r[m]["confidence"]).any() else None
        entry["methods"][m] = M.summarize_errors(r[m]["rot_deg"], r[m]["trans_cm"], r[m]["seconds"], groups=groups,
                                                 block_lengths=lengths, num_resamples=resamples, seed=seed,
                                                 confidence=conf)
    return entry


def _concat(parts: list[dict], methods: list[str]) -> dict:
    out = {"starts": np.concatenate([p["starts"] for p in parts]), "gt": np.concatenate([p["gt"] for p in parts])}
    for m in methods:
        out[m] = {k: np.concatenate([p[m][k] for p in parts])
                  for k in ("a_from_b", "seconds", "rot_deg", "trans_cm", "confidence")}
    return out


def _motion_summary(gt: np.ndarray) -> dict:
    rot, trans = M.relative_pose_errors(np.broadcast_to(np.eye(4), gt.shape), gt)
    return {"rot_deg_median": float(np.median(rot)), "trans_cm_median": float(np.median(trans)),
            "rot_deg_max": float(np.max(rot)), "trans_cm_max": float(np.max(trans))}


# ----------------------------------------------------------------------------------------------------
# GAN realism
# ----------------------------------------------------------------------------------------------------

def _frames_for_realism(seqs: list[EvalSequence], max_clouds: int) -> np.ndarray:
    """Up to ``max_clouds`` model-input frames spread evenly over ``seqs`` (frames with points only)."""
    frames = [(i, t) for i, s in enumerate(seqs) for t in range(s.num_frames) if s.num_valid[t] > 0]
    if not frames:
        return np.zeros((0, 1, 3), np.float32)
    pick = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), max_clouds)).round().astype(int))
    return np.stack([seqs[frames[j][0]].points[frames[j][1]] for j in pick])


def refine_clouds(refiner, clouds: np.ndarray, device, seed: int = 0, batch_size: int = 16) -> np.ndarray:
    """Apply the refiner G to (S, N, 3) clouds (z sampled from q(z | x) with a seeded generator)."""
    import torch

    gen = torch.Generator(device=device).manual_seed(int(seed))
    out = []
    with torch.no_grad():
        for i in range(0, len(clouds), batch_size):
            x = torch.as_tensor(clouds[i:i + batch_size], dtype=torch.float32, device=device)
            out.append(refiner(x, generator=gen).points.float().cpu().numpy())
    return np.concatenate(out) if out else clouds


# ----------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------

def evaluate(checkpoint=None, real_paths: Sequence = (), synthetic_dir=None, gaps: Sequence[int] = (1, 5, 10, 20, 30),
             out_dir="report", max_pairs_per_gap: int | None = 60, methods: Sequence[str] | None = None,
             config=None, device: str = "cpu", progress: Callable[[int], Any] | None = None,
             allow_train_data: bool = False, overwrite: bool = False) -> dict:
    """Evaluate a trained pose network (or only the classical baselines) on held-out data and write the report.

    The report directory is written to a temporary sibling folder and renamed at the end: a failure leaves
    nothing behind, and an existing ``out_dir`` is refused unless ``overwrite`` (then replaced as a whole).

    Args:
        checkpoint: run directory or checkpoint file of ``synthseq train``; None evaluates only the
            baselines (``icp``, ``fpfh_ransac_icp``) and the identity.
        real_paths: real captures (``PATH`` or ``PATH@START:STOP``); those with ground truth are pose-evaluated,
            all feed the realism metrics.
        synthetic_dir: a built dataset directory (synthetic test set), or None.
        gaps: frame gaps d.
        out_dir: report directory: report.md, metrics.json, pairs.csv, config.yaml, plots/, trajectories/.
        max_pairs_per_gap: pairs per (sequence, gap) at most, spread over the sequence (None: all).
        methods: subset of ``METHODS`` (default: all that apply; the model methods need a checkpoint); the
            identity is always evaluated.
        config: an ``EvaluateConfig`` for the remaining options (depth limit, voxel, realism sizes, ...);
            its ``gaps``/``real``/``synthetic``/``max_pairs`` are overridden by the arguments above.
        device: torch device for P and G.
        progress: ``progress(total_pair_evaluations)`` -> object with ``update(n)`` and ``close()`` (tqdm).
        allow_train_data: evaluate inputs the checkpoint trained on, marked "seen in training".
        overwrite: replace an existing ``out_dir``.

    Returns:
        The metrics dict written to metrics.json (``"sequences"``, ``"realism"``, ``"headline"``, ...) plus
        ``"report"`` (the path of report.md).

    Raises:
        FileNotFoundError: a real path, the synthetic dir or the checkpoint does not exist.
        UsageError: unknown method, bad gaps, ``out_dir`` exists without ``overwrite``.
        DataError: evaluation data overlaps the training data (without ``allow_train_data``); nothing to
            evaluate (no ground truth, every gap longer than every sequence), naming what is missing.
    """
    import dataclasses

    from synthseq.training.config import EvaluateConfig

    cfg = config if config is not None else EvaluateConfig()
    gaps = [int(g) for g in gaps]
    if not gaps or any(g < 1 for g in gaps):
        raise UsageError(f"gaps: expected positive frame gaps, got {gaps}")
    cfg = dataclasses.replace(cfg, gaps=gaps, real=[str(p) for p in real_paths],
                              synthetic=None if synthetic_dir is None else str(synthetic_dir),
                              checkpoint=None if checkpoint is None else str(checkpoint),
                              max_pairs=max_pairs_per_gap)
    from synthseq.datasets.real import parse_capture_spec

    for p in cfg.real:
        if not parse_capture_spec(p).path.exists():
            raise FileNotFoundError(f"{p}: real capture not found")
    if cfg.synthetic is not None and not Path(cfg.synthetic).is_dir():
        raise FileNotFoundError(f"{cfg.synthetic}: synthetic dataset directory not found")
    if methods is None:
        methods = list(METHODS) if checkpoint is not None else [m for m in METHODS if m not in MODEL_METHODS]
    methods = list(methods)
    for m in methods:
        if m not in METHODS:
            raise UsageError(f"methods: unknown method {m!r} (known: {', '.join(METHODS)})")
    if "identity" not in methods:
        methods.insert(0, "identity")
    if checkpoint is None and any(m in MODEL_METHODS for m in methods):
        raise UsageError(f"methods {[m for m in methods if m in MODEL_METHODS]} need a checkpoint")
    if not cfg.real and cfg.synthetic is None:
        raise UsageError("nothing to evaluate: give real captures and/or a synthetic dataset directory")
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise UsageError(f"--out {out_dir}: already exists; choose another report directory or pass --overwrite "
                         "to replace it")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir}: exists and is not a directory")

    notes: list[str] = []

    # --- models and what they trained on
    pose_model = refiner = None
    num_points = cfg.num_points
    train_info: dict = {}
    if checkpoint is not None:
        from synthseq.training.checkpoint import checkpoint_path, load_pose_model, load_refiner

        ckpt = checkpoint_path(checkpoint)
        if not ckpt.is_file():
            raise FileNotFoundError(f"{ckpt}: no training checkpoint")
        try:
            model, tcfg = load_pose_model(checkpoint, device=device, ema=cfg.use_ema)
            if tcfg.use_gan:
                refiner, _ = load_refiner(checkpoint, device=device)
        except (RuntimeError, KeyError) as e:  # state_dict of another architecture, or a missing network
            first = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
            raise DataError(f"{ckpt}: cannot load the networks with this synthseq's models ({first})") from None
        pose_model = _PoseModel(model, device, tcfg.num_points, cfg.seed)
        num_points = tcfg.num_points
        train_info = {"checkpoint": str(ckpt), "num_points": tcfg.num_points, "use_gan": tcfg.use_gan,
                      "real": list(tcfg.real), "data": tcfg.data}
    else:
        notes.append("No checkpoint: identity and classical baselines only.")

    # --- refuse (or mark) training data, before reading any capture
    overlaps = real_overlaps(cfg.real, train_info.get("real", []), notes)
    syn_overlap = synthetic_overlap(cfg.synthetic, train_info.get("data"), notes)
    if syn_overlap is not None:
        overlaps.append(syn_overlap)
    if overlaps and not allow_train_data:
        raise DataError("evaluation data the checkpoint trained on: " + "; ".join(o.message for o in overlaps)
                        + ". Evaluate on held-out data (another frame range, capture or build seed), or pass "
                          "--allow-train-data to report it marked 'seen in training'")
    for o in overlaps:
        notes.append(f"SEEN IN TRAINING: {o.message}")

    # --- data
    seqs: list[EvalSequence] = []
    for p in cfg.real:
        s = load_real_sequence(p, num_points, cfg.max_depth_m, cfg.seed)
        hit = [o for o in overlaps if o.target == p]
        if hit:
            s.seen_in_training = hit[0].message
        notes.extend(s.notes)
        seqs.append(s)
    synth: list[EvalSequence] = []
    if cfg.synthetic is not None:
        synth = load_synthetic_sequences(cfg.synthetic, num_points, cfg.synthetic_sequences,
                                         view=cfg.synthetic_view, max_depth_m=cfg.max_depth_m, seed=cfg.seed)
        if syn_overlap is not None:
            for s in synth:
                if syn_overlap.sequence_ids is None or s.sequence_id in syn_overlap.sequence_ids:
                    s.seen_in_training = syn_overlap.message
    missing: list[str] = []
    for s in seqs:
        if s.world_from_camera is None:
            missing.append(f"{s.name} has no ground truth (camera poses)")
            notes.append(f"{s.name}: no ground truth; used for the realism metrics only.")
    posed = [s for s in seqs + synth if s.world_from_camera is not None]

    # --- the plan: spread pairs per (sequence, gap)
    plan = []
    for s in posed:
        for g in gaps:
            st = pair_starts(s.num_frames, g, cfg.max_pairs, s.pose_valid)
            if len(st) == 0:
                why = (f"gap {g} is longer than its {s.num_frames} frames" if g >= s.num_frames
                       else f"no pair at gap {g} has ground truth at both frames")
                notes.append(f"{s.name}: {why}; skipped.")
                missing.append(f"{s.name}: {why}")
            else:
                plan.append((s, g, st))
    if not plan:
        raise DataError("nothing to evaluate: " + "; ".join(missing or ["no sequence with ground truth"]))
    trajectory_plan = []
    if cfg.trajectory_pairs > 0:
        for s in [x for x in posed if x.kind == "real"] + [x for x in posed if x.kind == "synthetic"][:1]:
            block = trajectory_block(s.pose_valid, cfg.trajectory_pairs)
            if len(block) >= 1:
                trajectory_plan.append((s, block))
    per_pair = len([m for m in methods if m != "identity"])
    total = (sum(len(st) for _, _, st in plan) + sum(len(b) for _, b in trajectory_plan)) * per_pair
    bar = progress(total) if progress is not None else None
    on_pair = (lambda: bar.update(1)) if bar is not None else None
    baseline_options = dict(voxel_m=cfg.voxel_m, max_correspondence_m=cfg.max_correspondence_m)

    tmp_dir = _temporary_sibling(out_dir)
    try:
        raw: dict[str, dict] = {}
        traj_raw: dict[str, dict] = {}
        try:
            for s, g, st in plan:
                r = evaluate_pairs(s, g, st, methods, pose_model, baseline_options, cfg.seed, on_pair)
                for m in methods:
                    r[m]["rot_deg"], r[m]["trans_cm"] = M.relative_pose_errors(r[m]["a_from_b"], r["gt"])
                raw.setdefault(s.name, {})[g] = r
            for s, block in trajectory_plan:
                gap1 = raw.get(s.name, {}).get(1)
                if gap1 is not None and np.array_equal(gap1["starts"], block):
                    traj_raw[s.name] = gap1  # the spread gap-1 pairs are already this contiguous block
                else:
                    r = evaluate_pairs(s, 1, block, methods, pose_model, baseline_options, cfg.seed, on_pair)
                    for m in methods:
                        r[m]["rot_deg"], r[m]["trans_cm"] = M.relative_pose_errors(r[m]["a_from_b"], r["gt"])
                    traj_raw[s.name] = r
        finally:
            if bar is not None:
                bar.close()
        metrics_out = _write_report(tmp_dir, cfg, methods, gaps, posed, seqs, synth, raw, traj_raw, refiner,
                                    device, notes, train_info, num_points, allow_train_data)
        _replace_dir(tmp_dir, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    log.info("wrote %s", out_dir / "report.md")
    metrics_out["report"] = str(out_dir / "report.md")
    return metrics_out


def _write_report(out_dir: Path, cfg, methods, gaps, posed, seqs, synth, raw, traj_raw, refiner, device, notes,
                  train_info, num_points, allow_train_data) -> dict:
    """Summaries, trajectories, realism, metrics.json, pairs.csv, config.yaml, plots and report.md into ``out_dir``."""
    from synthseq.config import to_dict

    resamples = cfg.bootstrap_resamples
    # Real sequences are reported one by one; synthetic ones pooled, held-out and seen-in-training apart
    # (their per-sequence summaries go to metrics.json's "synthetic_sequences").
    results: dict[str, dict] = {}
    synthetic_sequences: dict[str, dict] = {}
    plots_raw: dict[str, dict] = {}

    def entry_of(seq_list: list[EvalSequence], kind: str, source: str, name: str) -> dict | None:
        by_gap = {}
        for g in gaps:
            parts = [(g, raw[s.name][g], s.num_frames) for s in seq_list if g in raw.get(s.name, {})]
            if parts:
                by_gap[g] = parts
        if not by_gap:
            return None
        entry = {"kind": kind, "source": source, "num_frames": int(sum(s.num_frames for s in seq_list)),
                 "seen_in_training": any(s.seen_in_training for s in seq_list),
                 "gaps": {str(g): _summarize_gap(p, methods, resamples, cfg.seed) for g, p in by_gap.items()}}
        if entry["seen_in_training"]:
            entry["seen_in_training_reason"] = next(s.seen_in_training for s in seq_list if s.seen_in_training)
        plots_raw[name] = {g: _concat([p[1] for p in parts], methods) for g, parts in by_gap.items()}
        return entry

    for s in posed:
        if s.kind != "real" or s.name not in raw:
            continue
        e = entry_of([s], "real", s.source, s.name)
        e["intrinsics"] = s.intrinsics
        e["first_frame"] = s.first_frame
        results[s.name] = e
    for s in synth:
        if s.name in raw:
            synthetic_sequences[s.name] = entry_of([s], "synthetic", s.source, s.name)
            plots_raw.pop(s.name, None)
    for seen in (False, True):
        group = [s for s in synth if s.name in raw and bool(s.seen_in_training) == seen]
        if group:
            name = f"synthetic ({len(group)} sequences{', ' + SEEN if seen else ''})"
            results[name] = entry_of(group, "synthetic", str(cfg.synthetic), name)

    # --- trajectories (a contiguous block of gap-1 pairs, chained)
    for s in posed:
        r = traj_raw.get(s.name)
        if r is None:
            continue
        frames = np.concatenate([r["starts"], r["starts"][-1:] + 1])
        ests = {m: r[m]["a_from_b"] for m in methods if m in TRAJECTORY_METHODS}
        folder = out_dir / "trajectories" / _safe_name(s.name)
        paths = M.export_tum_trajectories(folder, s.timestamps[frames], s.world_from_camera[frames], ests, s.name)
        entry = results.get(s.name) or synthetic_sequences.get(s.name)
        if entry is None:
            continue
        entry["trajectories"] = {k: str(Path(v).relative_to(out_dir)) for k, v in paths.items()}
        entry["trajectory_frames"] = [int(s.first_frame + frames[0]), int(s.first_frame + frames[-1])]
        # the errors of the chained pairs: what evo_rpe --delta 1 gives on the exported files
        entry["trajectory_errors"] = {m: M.summarize_errors(r[m]["rot_deg"], r[m]["trans_cm"], r[m]["seconds"],
                                                            num_resamples=resamples, seed=cfg.seed)
                                      for m in methods if m in TRAJECTORY_METHODS}

    # realism on held-out frames only: G was trained against the real training captures
    held_real = [s for s in seqs if not s.seen_in_training]
    held_synth = [s for s in synth if not s.seen_in_training]
    if len(held_real) < len(seqs) or len(held_synth) < len(synth):
        notes.append("GAN realism: sequences seen in training are left out of it.")
    realism = _realism(cfg, held_real, held_synth, refiner, device, notes)
    metrics_out = {
        "methods": methods,
        "method_labels": {m: METHOD_LABELS[m] for m in methods},
        "gaps": gaps,
        "success": {"max_rot_deg": M.SUCCESS_ROT_DEG, "max_trans_cm": M.SUCCESS_TRANS_CM},
        "confidence_interval": {"level": 0.95, "method": "moving-block bootstrap over the pairs in start order, "
                                "stratified by sequence, widened to at least a Wilson score interval at the "
                                "effective sample size (pairs / block length)", "resamples": resamples},
        "pair_selection": f"up to {cfg.max_pairs if cfg.max_pairs else 'all'} pairs per (sequence, gap), start "
                          "frames spread evenly over the whole sequence; pairs need a ground-truth pose at both "
                          "frames",
        "allow_train_data": bool(allow_train_data),
        "train": train_info,
        "sequences": results,
        "synthetic_sequences": synthetic_sequences,
        "realism": realism,
        "headline": _headline(results, methods),
        "notes": notes,
        "inputs": _inputs_text(num_points, cfg),
    }
    (out_dir / "config.yaml").write_text(_yaml(to_dict(cfg)))
    (out_dir / "metrics.json").write_text(json.dumps(_jsonable(metrics_out), indent=2, allow_nan=True) + "\n")
    _write_pairs_csv(out_dir / "pairs.csv", posed, raw, methods)
    figures = {}
    from synthseq.training import report as R

    try:
        figures = R.write_plots(out_dir / "plots", results, plots_raw, methods, gaps, seqs, synth, refiner, device,
                                cfg.seed)
    except ImportError as e:
        notes.append(f"plots skipped: {e}")
        log.warning("plots skipped: %s", e)
    (out_dir / "report.md").write_text(R.render_report(metrics_out, figures, out_dir))
    return metrics_out


def _write_pairs_csv(path: Path, posed: list[EvalSequence], raw: dict, methods: list[str]) -> None:
    """One row per (sequence, gap, pair, method): frames, errors, success, time, confidence, seen in training."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sequence", "kind", "gap", "frame_a", "frame_b", "method", "rot_err_deg", "trans_err_cm",
                    "success", "seconds", "confidence", "seen_in_training"])
        for s in posed:
            for g, r in raw.get(s.name, {}).items():
                for m in methods:
                    ok = M.success_mask(r[m]["rot_deg"], r[m]["trans_cm"])
                    for k, t in enumerate(r["starts"]):
                        c = r[m]["confidence"][k]
                        w.writerow([s.name, s.kind, g, s.first_frame + int(t), s.first_frame + int(t) + g, m,
                                    f"{r[m]['rot_deg'][k]:.4f}", f"{r[m]['trans_cm'][k]:.4f}", int(ok[k]),
                                    f"{r[m]['seconds'][k]:.4f}", "" if not np.isfinite(c) else f"{c:.4f}",
                                    int(bool(s.seen_in_training))])


def _temporary_sibling(out_dir: Path) -> Path:
    """A fresh hidden folder beside ``out_dir`` (same file system, so the final rename is atomic)."""
    parent = out_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{out_dir.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    """Move the finished report into place; an existing ``out_dir`` (``--overwrite``) is replaced whole."""
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _realism(cfg, seqs, synth, refiner, device, notes) -> dict | None:
    if not synth:
        notes.append("GAN realism skipped: no synthetic dataset (--synthetic).")
        return None
    if not seqs:
        notes.append("GAN realism skipped: no real captures.")
        return None
    real = _frames_for_realism(seqs, cfg.realism_clouds)
    raw_synth = _frames_for_realism(synth, cfg.realism_clouds)
    if len(real) < 2 or len(raw_synth) < 2:
        notes.append("GAN realism skipped: fewer than 2 frames in a set.")
        return None
    out = {"protocol": f"PointFlow 1-NNA / MMD / COV under the Chamfer distance (scipy cKDTree), "
                       f"{cfg.realism_points} points per cloud, camera frame, metres (MMD in m^2)"}
    rng = np.random.default_rng(cfg.seed)
    out["raw_vs_real"] = M.realism_metrics(raw_synth, real, cfg.realism_points, cfg.realism_clouds, rng)
    if refiner is not None:
        refined = refine_clouds(refiner, raw_synth, device, cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        out["refined_vs_real"] = M.realism_metrics(refined, real, cfg.realism_points, cfg.realism_clouds, rng)
    else:
        notes.append("GAN realism: no refiner G (no checkpoint, or trained with use_gan false); raw synthetic "
                     "vs real only.")
    return out


def _headline(results: dict, methods: list[str]) -> list[dict]:
    rows = []
    for name, entry in results.items():
        for g, ge in entry["gaps"].items():
            for m in methods:
                s = ge["methods"][m]
                rows.append({"sequence": name, "kind": entry["kind"], "gap": int(g), "method": m,
                             "success_rate": s["success_rate"], "success_ci": s["success_ci"],
                             "rot_deg_median": s["rot_deg"]["median"],
                             "trans_cm_median": s["trans_cm"]["median"],
                             "time_s_median": (s["time_s"] or {}).get("median", math.nan),
                             "num_pairs": s["num_pairs"], "seen_in_training": bool(entry.get("seen_in_training"))})
    return rows


def _inputs_text(num_points: int, cfg) -> dict:
    depth = "all valid depth" if cfg.max_depth_m is None else f"depth <= {cfg.max_depth_m} m"
    dense = f"dense clouds: every valid depth pixel back-projected ({depth})"
    return {
        "identity": "nothing: predicts no motion (a_from_b = identity), the floor every method has to beat",
        "ours": f"the same {dense} as the baselines, before voxelisation; the estimator samples {num_points} "
                "points per cloud itself (the trainer's N), raw camera frame, metres",
        "ours_icp": f"ours's estimate, refined by point-to-plane ICP ({cfg.max_correspondence_m} m) on the dense "
                    "clouds",
        "icp": f"{dense}, voxelised at {cfg.voxel_m} m, normals; point-to-plane ICP from identity, max "
               f"correspondence {cfg.max_correspondence_m} m",
        "fpfh_ransac_icp": f"the same dense clouds; FPFH (radius {5 * cfg.voxel_m:g} m) + RANSAC (seed "
                           f"{cfg.seed}), then point-to-plane ICP ({cfg.max_correspondence_m} m)",
    }


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.bool_,)):
        return bool(x)
    return x


def _yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump({"evaluate": data}, sort_keys=False)
