"""Pseudo-labels for unlabeled real training pairs from classical registration that passes checks.

For a real capture of the training split (never a validation one), every pair (t, t + d) picked gets a
**chained** pose: the frame-to-frame ICP poses t -> t+1 -> ... -> t+d (small gaps, where ICP from the identity
is reliable at 30 fps) multiplied together, refined by one ICP at gap d. Then, by ``method``:

- ``chained`` (the default): the refined pose is the label if every frame-to-frame ICP and the refinement fit
  (fitness >= ``min_fitness``, inlier RMSE <= ``max_rmse_m``) and the refinement moved the chained pose by no
  more than ``max_rot_deg`` / ``max_trans_m`` (the direct fit at gap d agrees with the chain of small fits:
  drift or a wrong step shows up as a disagreement). Cheap (~0.1 s per pair): hundreds of labels per capture.
- ``model`` (self-training): the ``chained`` labels, plus labels for pairs the chain rejects (a fast motion, a
  bad frame-to-frame step) from the run's own pose estimator (P of ``train.init``; the estimator of
  ``training/estimator.py``), refined by ICP on the dense clouds. Such a label is kept only if the refined fits
  pass (fitness >= ``model_min_fitness``, lower than the chain's: a correct pose at a large gap fits only the
  overlap, and the cycle guards against wrong ones; inlier RMSE) and a **cycle check** holds: the pair (t, t+d)
  and its two halves (t, m) and (m, t+d), m = t + d//2, each estimated and refined independently, must compose
  to the same pose within ``max_rot_deg`` / ``max_trans_m`` (three estimates rarely agree on the same wrong
  motion). Gap-1 pairs have no halves and keep the chained check alone. Rerun training with the new P as
  ``train.init`` to refresh them. Measured (BENCHMARKS.md, session 5): one round gave no measurable gain.
- ``fpfh``: FPFH + RANSAC + ICP on the dense clouds (global: does not need a small motion) is the candidate,
  kept only if (``check_pseudo_label``) both it and the chained fit pass the fitness/RMSE checks and the two
  poses agree: two methods with different failure modes (feature ambiguity vs drift / a local minimum) rarely
  agree on the same wrong pose. ~1-2 s per pair.

Measured against the TRAIN captures' ground truth (never used in training; BENCHMARKS.md): with the default
checks, gaps 1-30 and 100 pairs per gap, ``chained`` accepted 754 of 900 pairs of fr1/xyz (frames 100-299),
199 of 356 of fr1/rpy@0:50 and 280 of 356 of 7-Scenes@0:50, within 5 deg / 5 cm of the truth on 100%, 86% and
100% of them (median 0.8 / 0.7 / 0.1 deg). The capture's ground truth is never read here.

Labels are keyed by (sequence name, view, frame t, gap d), the identifiers of ``RealPairs`` samples, and
stored as JSON (``RUN_DIR/pseudo_labels.json``) with the acceptance statistics.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def pose_difference(T1: np.ndarray, T2: np.ndarray) -> tuple[float, float]:
    """(rotation angle in degrees, translation distance in metres) between two (4, 4) poses."""
    from synthseq.geometry import rotation_angle_deg

    return float(rotation_angle_deg(T1[:3, :3].T @ T2[:3, :3])), float(np.linalg.norm(T1[:3, 3] - T2[:3, 3]))


def _fit_problem(name: str, r, cfg) -> str | None:
    """Why the registration ``r`` fails the fit checks of ``cfg`` (no pose, fitness, inlier RMSE), or None."""
    if not np.all(np.isfinite(r.a_from_b)):
        return f"{name}: no pose"
    if not (r.fitness >= cfg.min_fitness):
        return f"{name}: fitness {r.fitness:.2f} < {cfg.min_fitness}"
    if not (r.inlier_rmse <= cfg.max_rmse_m):
        return f"{name}: inlier RMSE {r.inlier_rmse:.4f} m > {cfg.max_rmse_m}"
    return None


def _agreement(T1: np.ndarray, T2: np.ndarray, cfg) -> tuple[bool, str]:
    rot, trans = pose_difference(T1, T2)
    if rot > cfg.max_rot_deg or trans > cfg.max_trans_m:
        return False, f"disagreement {rot:.2f} deg / {trans:.3f} m"
    return True, "ok"


def check_pseudo_label(candidate, chained, cfg) -> tuple[bool, str]:
    """Whether a pseudo-label passes the checks of ``cfg`` (a ``PseudoLabelConfig``).

    Args:
        candidate, chained: ``baselines.Registration`` (a_from_b, fitness, inlier_rmse) of the two methods.

    Returns:
        (accepted, reason): reason names the first failed check, or "ok".
    """
    for name, r in (("candidate", candidate), ("chained", chained)):
        why = _fit_problem(name, r, cfg)
        if why:
            return False, why
    return _agreement(candidate.a_from_b, chained.a_from_b, cfg)


def check_chained_label(refined, chain: np.ndarray, steps, cfg) -> tuple[bool, str]:
    """Whether the chained pseudo-label of a pair passes the checks of ``cfg`` (``method: chained``).

    Args:
        refined: ``baselines.Registration`` of ICP at gap d started from ``chain``.
        chain: (4, 4) product of the frame-to-frame ICP poses.
        steps: the frame-to-frame ``Registration``s (their fitness is checked).

    Returns:
        (accepted, reason): reason names the first failed check, or "ok".
    """
    for i, r in enumerate(steps):
        if not (r.fitness >= cfg.min_fitness):
            return False, f"step {i}: fitness {r.fitness:.2f} < {cfg.min_fitness}"
    why = _fit_problem("refined", refined, cfg)
    if why:
        return False, why
    return _agreement(refined.a_from_b, chain, cfg)


def check_cycle_label(direct, first, second, cfg) -> tuple[bool, str]:
    """Whether a model pseudo-label passes the checks of ``cfg`` (``method: model``): the three refined fits
    (fitness >= ``model_min_fitness``, inlier RMSE <= ``max_rmse_m``) and the cycle (the halves' product agrees
    with the direct pose within ``max_rot_deg`` / ``max_trans_m``).

    Args:
        direct: ``baselines.Registration`` of the pair (t, t+d) (the estimator's pose refined by ICP).
        first, second: those of its halves (t, m) and (m, t+d).

    Returns:
        (accepted, reason): reason names the first failed check, or "ok".
    """
    fit_cfg = dataclasses.replace(cfg, min_fitness=cfg.model_min_fitness)
    for name, r in (("direct", direct), ("half 1", first), ("half 2", second)):
        why = _fit_problem(name, r, fit_cfg)
        if why:
            return False, why
    ok, why = _agreement(direct.a_from_b, first.a_from_b @ second.a_from_b, cfg)
    return ok, "ok" if ok else "cycle " + why


def label_sequence(seq, name: str, gaps, cfg, view: int = 0, seed: int = 0, estimator=None) -> tuple[dict, dict]:
    """Pseudo-label up to ``cfg.max_pairs`` pairs per gap of one capture.

    Args:
        seq: an object with ``num_frames`` and ``dense(t) -> (M, 3)`` (``evaluate.load_real_sequence``).
        name: the sequence name used by ``RealPairs`` samples (the key).
        gaps: frame gaps d.
        cfg: ``PseudoLabelConfig``.
        estimator: ``method: model``: a callable ``(cloud_a, cloud_b) -> (a_from_b, confidence)``
            (``training.estimator.Estimator``).

    Returns:
        (labels {(name, view, t, d): (4, 4) ndarray}, stats {"tried": n, "accepted": n, "reasons": {...}}).
    """
    from synthseq.training import baselines as B

    opts = dict(voxel_m=cfg.voxel_m)
    T = seq.num_frames
    step_cache: dict = {}

    def step(t: int):  # ICP t -> t+1 from the identity (a Registration)
        if t not in step_cache:
            step_cache[t] = B.icp_from_identity(seq.dense(t), seq.dense(t + 1), **opts)
        return step_cache[t]

    model_cache: dict = {}

    def model(t: int, u: int):  # the estimator's pose t -> u refined by ICP on the dense clouds (a Registration)
        if (t, u) not in model_cache:
            a, b = seq.dense(t), seq.dense(u)
            T0, _ = estimator(a, b)
            model_cache[(t, u)] = B.refine_icp(a, b, T0, **opts)
        return model_cache[(t, u)]

    if cfg.method == "model" and estimator is None:
        raise ValueError("pseudo_labels.method 'model' needs an estimator")
    labels, reasons = {}, {}
    tried = by_model = 0
    for d in gaps:
        n = T - d
        if n <= 0:
            continue
        starts = np.unique(np.linspace(0, n - 1, min(cfg.max_pairs, n)).round().astype(int))
        for t in starts:
            t = int(t)
            a, b = seq.dense(t), seq.dense(t + d)
            chain = np.eye(4)
            for u in range(t, t + d):
                chain = chain @ step(u).a_from_b
            if not np.all(np.isfinite(chain)):
                chain = np.eye(4)
            chained = B.refine_icp(a, b, chain, **opts)
            if cfg.method in ("chained", "model"):
                steps = [step(u) for u in range(t, t + d)]
                candidate = chained
                ok, why = check_chained_label(chained, chain, steps, cfg)
                if not ok and cfg.method == "model" and d >= 2:
                    m = t + d // 2
                    candidate = model(t, t + d)
                    ok, why_model = check_cycle_label(candidate, model(t, m), model(m, t + d), cfg)
                    by_model += ok
                    why = why if ok else why_model  # a rejection names the model's failed check
            else:
                candidate = B.fpfh_ransac_icp(a, b, seed=seed, **opts)
                ok, why = check_pseudo_label(candidate, chained, cfg)
            tried += 1
            key = why.split(":")[0].split(" ")[0] if not ok else "ok"  # the check, without its numbers
            reasons[key] = reasons.get(key, 0) + 1
            if ok:
                labels[(name, view, t, int(d))] = np.asarray(candidate.a_from_b, dtype=np.float64)
    stats = {"tried": tried, "accepted": len(labels), "reasons": reasons}
    if cfg.method == "model":
        stats["accepted_by_model"] = by_model
    return labels, stats


def save_labels(path, labels: dict, stats: dict) -> None:
    """Write labels + stats as JSON (atomic rename)."""
    path = Path(path)
    rows = [{"sequence": k[0], "view": k[1], "frame": k[2], "gap": k[3], "a_from_b": np.asarray(v).tolist()}
            for k, v in labels.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"labels": rows, "stats": stats}))
    tmp.replace(path)


def load_labels(path) -> tuple[dict, dict]:
    """(labels, stats) from a file written by ``save_labels``; DataError naming the file when it is not one."""
    from synthseq.errors import DataError

    try:
        data = json.loads(Path(path).read_text())
        labels = {(r["sequence"], int(r["view"]), int(r["frame"]), int(r["gap"])):
                  np.asarray(r["a_from_b"], dtype=np.float64).reshape(4, 4) for r in data["labels"]}
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a pseudo-label file written by synthseq train ({type(e).__name__}: {e})") from e
    return labels, data.get("stats", {})


def pseudo_labels_for(real_specs, sequence_names, gaps, cfg, cache_path=None, seed: int = 0,
                      estimator=None) -> dict:
    """Labels for every capture of ``train.real`` (``real_specs[i]`` is named ``sequence_names[i]`` in the
    pair samples), read from ``cache_path`` when it exists, else computed and written there (``estimator``:
    the pose estimator of ``method: model``)."""
    if cache_path is not None and Path(cache_path).is_file():
        labels, stats = load_labels(cache_path)
        log.info("pseudo-labels: %d read from %s", len(labels), cache_path)
        return labels
    from synthseq.training.evaluation.data import load_real_sequence

    labels, stats = {}, {}
    for spec, name in zip(real_specs, sequence_names):
        seq = load_real_sequence(spec, 64, cfg.max_depth_m)
        lab, st = label_sequence(seq, name, gaps, cfg, seed=seed, estimator=estimator)
        labels.update(lab)
        stats[str(spec)] = st
        log.info("pseudo-labels: %s: %d of %d pairs accepted%s (%s)", spec, st["accepted"], st["tried"],
                 f", {st['accepted_by_model']} by the model" if "accepted_by_model" in st else "", st["reasons"])
    if cache_path is not None:
        save_labels(cache_path, labels, stats)
    return labels
