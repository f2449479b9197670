"""``evaluate``: the evaluation stage from a checked config to the finished report directory."""

from __future__ import annotations

import dataclasses

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from synthseq.config import to_dict
from synthseq.errors import DataError
from synthseq.training import metrics as M
from synthseq.training.config import resolve_device
from synthseq.training.evaluation import report as R
from synthseq.training.evaluation.config import EvaluateConfig, check_inputs
from synthseq.training.evaluation.data import (EvalSequence, load_real_sequence, load_synthetic_sequences,
                                               pair_starts, real_overlaps, synthetic_overlap, trajectory_block)
from synthseq.training.evaluation.pose import evaluate_pairs, headline, summarize_sequences
from synthseq.training.evaluation.realism import realism, sample_clouds

log = logging.getLogger(__name__)


def evaluate(config: EvaluateConfig, out_dir, device: str = "cpu", progress: Callable[[int], Any] | None = None,
             allow_train_data: bool = False, overwrite: bool = False) -> dict:
    """Evaluate a trained pose network (or only the classical baselines) on held-out data and write the report.

    The report directory is written to a temporary sibling folder and renamed at the end: a failure leaves
    nothing behind, and an existing ``out_dir`` is refused unless ``overwrite`` (then replaced as a whole).

    Args:
        config: what to evaluate and how: ``checkpoint`` (None: only the baselines ``icp``,
            ``fpfh_ransac_icp`` and the identity), ``real`` captures (``PATH`` or ``PATH@START:STOP``; those
            with ground truth are pose-evaluated, all feed the realism metrics), ``synthetic`` (a built
            dataset directory), ``gaps``, ``max_pairs`` per (sequence, gap), ``methods`` (default: all that
            apply; the identity is always evaluated), depth limit, voxel, realism sizes, ...
        out_dir: report directory: report.md, metrics.json, pairs.csv, config.yaml, plots/, trajectories/.
        device: torch device for P and G: "cpu", "cuda" or "auto" (resolved only with a checkpoint).
        progress: ``progress(total_pair_evaluations)`` -> object with ``update(n)`` and ``close()`` (tqdm).
        allow_train_data: evaluate inputs the checkpoint trained on, marked "seen in training".
        overwrite: replace an existing ``out_dir``.

    Returns:
        The metrics dict written to metrics.json (``"sequences"``, ``"realism"``, ``"headline"``, ...) plus
        ``"report"`` (the path of report.md).

    Raises:
        FileNotFoundError / ConfigError / UsageError: from ``config.check_inputs``, before anything is read.
        DataError: evaluation data overlaps the training data (without ``allow_train_data``); nothing to
            evaluate (no ground truth, every gap longer than every sequence), naming what is missing.
    """
    out_dir = Path(out_dir)
    cfg, methods = check_inputs(config, out_dir, overwrite)
    gaps = cfg.gaps
    notes: list[str] = []

    # --- models and what they trained on
    estimator = refiner = None
    num_points = cfg.num_points
    train_info: dict = {}
    if cfg.checkpoint is not None:
        from synthseq.training.checkpoint import checkpoint_path, load_pose_model, load_refiner
        from synthseq.training.estimator import Estimator

        device = resolve_device(device, key="--device")
        ckpt = checkpoint_path(cfg.checkpoint)
        if not ckpt.is_file():
            raise FileNotFoundError(f"{ckpt}: no training checkpoint")
        model, tcfg = load_pose_model(cfg.checkpoint, device=device, ema=cfg.use_ema)
        if tcfg.use_gan:
            refiner, _ = load_refiner(cfg.checkpoint, device=device)
        estimator = Estimator(model, dataclasses.replace(cfg.estimator, seed=int(cfg.seed)), device)
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

    out_dir.parent.mkdir(parents=True, exist_ok=True)  # the final rename stays on one file system
    tmp_dir = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.partial-"))
    try:
        raw: dict[str, dict] = {}
        traj_raw: dict[str, dict] = {}
        try:
            for s, g, st in plan:
                raw.setdefault(s.name, {})[g] = evaluate_pairs(s, g, st, methods, estimator, baseline_options,
                                                               cfg.seed, on_pair, cfg.fallback_below)
            for s, block in trajectory_plan:
                gap1 = raw.get(s.name, {}).get(1)
                if gap1 is not None and np.array_equal(gap1["starts"], block):
                    traj_raw[s.name] = gap1  # the spread gap-1 pairs are already this contiguous block
                else:
                    traj_raw[s.name] = evaluate_pairs(s, 1, block, methods, estimator, baseline_options, cfg.seed,
                                                      on_pair, cfg.fallback_below)
        finally:
            if bar is not None:
                bar.close()

        # --- summaries, trajectories, realism on held-out frames only (G trained against the real captures)
        results, synthetic_sequences, plots_raw = summarize_sequences(
            posed, synth, raw, methods, gaps, cfg.bootstrap_resamples, cfg.seed, str(cfg.synthetic))
        R.export_trajectories(tmp_dir, posed, traj_raw, methods, {**synthetic_sequences, **results},
                              cfg.bootstrap_resamples, cfg.seed)
        held_real = [s for s in seqs if not s.seen_in_training]
        held_synth = [s for s in synth if not s.seen_in_training]
        if len(held_real) < len(seqs) or len(held_synth) < len(synth):
            notes.append("GAN realism: sequences seen in training are left out of it.")
        metrics_out = {
            "methods": methods,
            "method_labels": {m: R.LABELS[m] for m in methods},
            "gaps": gaps,
            "success": {"max_rot_deg": M.SUCCESS_ROT_DEG, "max_trans_cm": M.SUCCESS_TRANS_CM},
            "confidence_interval": {"level": 0.95, "method": "moving-block bootstrap over the pairs in start "
                                    "order, stratified by sequence, widened to at least a Wilson score interval "
                                    "at the effective sample size (pairs / block length)",
                                    "resamples": cfg.bootstrap_resamples},
            "pair_selection": f"up to {cfg.max_pairs if cfg.max_pairs else 'all'} pairs per (sequence, gap), "
                              "start frames spread evenly over the whole sequence; pairs need a ground-truth "
                              "pose at both frames",
            "allow_train_data": bool(allow_train_data),
            "train": train_info,
            "sequences": results,
            "synthetic_sequences": synthetic_sequences,
            "realism": realism(cfg, held_real, held_synth, refiner, device, notes),
            "headline": headline(results, methods),
            "notes": notes,
            "inputs": R.inputs_text(cfg),
        }
        R.write_report(tmp_dir, to_dict(cfg), metrics_out, posed, raw, plots_raw,
                       sample_clouds(seqs, synth, refiner, device, cfg.seed))
        _replace_dir(tmp_dir, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    log.info("wrote %s", out_dir / "report.md")
    metrics_out["report"] = str(out_dir / "report.md")
    return metrics_out


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    """Move the finished report into place; an existing ``out_dir`` (``--overwrite``) is replaced whole."""
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
