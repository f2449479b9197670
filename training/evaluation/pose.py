"""Pose evaluation: every method on the pairs (t, t + d) of a sequence, and the per-gap summaries with their
block-bootstrap confidence intervals."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from synthseq.training import baselines as B
from synthseq.training import metrics as M
from synthseq.training.evaluation.config import MODEL_METHODS
from synthseq.training.evaluation.data import EvalSequence

SEEN = "seen in training"


def evaluate_pairs(seq: EvalSequence, gap: int, starts: np.ndarray, methods: Sequence[str], estimator=None,
                   baseline_options: dict | None = None, seed: int = 0,
                   on_pair: Callable[[], None] | None = None, fallback_below: float = 0.3) -> dict:
    """Run every method on the pairs (t, t + gap), t in ``starts``, and score them against the ground truth.

    Args:
        estimator: the pose estimator (training/estimator.py ``Estimator``) for ``ours_coarse`` (its pose
            before the fine stage) / ``ours`` / ``ours_icp`` / ``ours_fallback``, fed the dense camera-frame
            clouds the baselines get (it samples its own points).
        fallback_below: ``ours_fallback`` is ours, except that below this confidence FPFH + RANSAC + ICP (the
            baseline's options) is run too and its pose kept where the estimator scores it higher
            (``Estimator.judge``); its time is ours's plus FPFH's where FPFH ran.

    Returns:
        ``{"starts": (P,), "gt": (P, 4, 4), "<method>": {"a_from_b": (P, 4, 4), "seconds": (P,),
        "confidence": (P,), "rot_deg": (P,), "trans_cm": (P,)}}`` (confidence NaN where the method gives
        none; errors only with ground truth).
    """
    from synthseq.geometry import relative_pose

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
        if estimator is not None and any(m in MODEL_METHODS for m in methods):
            ours_pose, ours_conf = estimator(dense_a, dense_b)
            ours_s = estimator.last_seconds
        for m in methods:
            conf = math.nan
            if m == "identity":
                pose, sec = np.eye(4), 0.0
            elif m == "ours_coarse":  # the estimator's pose before its fine stage
                pose, conf, sec = estimator.last_coarse
            elif m == "ours":
                pose, sec, conf = ours_pose, ours_s, ours_conf
            elif m == "ours_icp":
                r = B.refine_icp(dense_a, dense_b, ours_pose, **opts)
                pose, sec, conf = r.a_from_b, ours_s + r.seconds, ours_conf
            elif m == "ours_fallback":  # ours, or FPFH + RANSAC + ICP's pose where ours is unsure and it scores better
                pose, sec, conf = ours_pose, ours_s, ours_conf
                if ours_conf < fallback_below:
                    r = B.fpfh_ransac_icp(dense_a, dense_b, seed=seed, **opts)
                    sec += r.seconds
                    if np.all(np.isfinite(r.a_from_b)):
                        score, fit = estimator.judge(r.a_from_b)
                        if score > estimator.judge(ours_pose)[0]:
                            pose, conf = r.a_from_b, fit
            elif m == "icp":
                r = B.icp_from_identity(dense_a, dense_b, **opts)
                pose, sec = r.a_from_b, r.seconds
            elif m == "fpfh_ransac_icp":
                r = B.fpfh_ransac_icp(dense_a, dense_b, seed=seed, **opts)
                pose, sec = r.a_from_b, r.seconds
            else:  # checked by config.check_inputs
                raise ValueError(f"unknown method {m!r}")
            out[m]["a_from_b"][k] = pose
            out[m]["seconds"][k] = sec
            out[m]["confidence"][k] = conf
            if on_pair is not None and m != "identity":
                on_pair()
    if out["gt"] is not None:
        for m in methods:
            out[m]["rot_deg"], out[m]["trans_cm"] = M.relative_pose_errors(out[m]["a_from_b"], out["gt"])
    return out


def summarize_sequences(posed: list[EvalSequence], synth: list[EvalSequence], raw: dict, methods: list[str],
                        gaps: list[int], resamples: int, seed: int, synthetic_source: str):
    """The per-sequence summaries of metrics.json: real sequences one by one; synthetic ones pooled, held-out and
    seen-in-training apart (their per-sequence summaries in the second dict).

    Returns:
        ``(results, synthetic_sequences, plots_raw)``: name -> summary (``"gaps"`` -> per-gap entry), the
        same per synthetic sequence, and name -> gap -> pooled raw results for the CDF plots.
    """
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
                 "gaps": {str(g): _summarize_gap(p, methods, resamples, seed) for g, p in by_gap.items()}}
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
            results[name] = entry_of(group, "synthetic", synthetic_source, name)
    return results, synthetic_sequences, plots_raw


def _summarize_gap(parts: list[tuple[int, dict, int]], methods: list[str], resamples: int, seed: int) -> dict:
    """metrics.json entry of one gap: pairs, true motion, per method errors + success with its 95% CI.

    The bootstrap resamples blocks of neighbouring pairs within each sequence (one group per part)."""
    r = _concat([p[1] for p in parts], methods)
    groups, lengths = [], {}
    for gi, (gap, part, _) in enumerate(parts):
        lengths[gi] = M.pairs_block_length(part["starts"], gap)
        groups.append(np.full(len(part["starts"]), gi))
    groups = np.concatenate(groups) if groups else np.zeros(0, np.int64)
    rot, trans = M.relative_pose_errors(np.broadcast_to(np.eye(4), r["gt"].shape), r["gt"])
    entry = {"num_pairs": int(len(r["starts"])),
             "motion": {"rot_deg_median": float(np.median(rot)), "trans_cm_median": float(np.median(trans)),
                        "rot_deg_max": float(np.max(rot)), "trans_cm_max": float(np.max(trans))},
             "methods": {},
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


def headline(results: dict, methods: list[str]) -> list[dict]:
    """metrics.json's headline rows: one per sequence, gap and method."""
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
