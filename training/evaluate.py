"""The evaluation stage: pose error of ours / ours + ICP / ICP / FPFH + RANSAC + ICP on real and synthetic
sequences with ground truth, GAN realism, and the report (report.md, metrics.json, plots, TUM files).

What each method sees (also written into report.md):

- ``ours``: the pose network P on ``num_points`` points per frame (the trainer's N), sampled uniformly
  from the valid depth pixels exactly as the trainer's ``RealPairs`` samples them (``load_capture`` with
  its default options: no depth limit, no voxel grid; synthetic frames: the stored points resampled to N).
  Raw camera-frame metres: P centres each cloud itself (training/models.py), no other normalisation.
- ``ours_icp``: P's estimate refined by point-to-plane ICP on the dense clouds below.
- ``icp`` and ``fpfh_ransac_icp``: the dense cloud - every valid depth pixel back-projected, depth up to
  ``max_depth_m`` (default 3 m, Open3D's ``depth_trunc`` default: Kinect v1 depth past ~4 m comes in
  steps of 10+ cm and slows RANSAC by 10x), voxelised at ``voxel_m`` (2 cm) inside the baseline; synthetic
  shards without depth images fall back to their stored points (N per frame; normals then use a radius of
  3x the point spacing, see ``baselines.normal_radius``).

Pairs: at gap d, frames (t, t + d). At gap 1 the pairs are the consecutive block (0, 1) ... (K - 1, K), so
the chained frame-to-frame estimates form a trajectory over frames 0..K whose evo_rpe at ``--delta 1``
equals the report's gap-1 numbers; other gaps use ``max_pairs`` start frames spread evenly over the
sequence. Times are wall-clock per pair, one pair at a time (P: batch of one, forward only; baselines:
preprocessing included; ours_icp: P's time plus the ICP's).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from synthseq.errors import DataError
from synthseq.training import metrics as M

log = logging.getLogger(__name__)

METHODS = ("ours", "ours_icp", "icp", "fpfh_ransac_icp")
MODEL_METHODS = ("ours", "ours_icp")
METHOD_LABELS = {
    "ours": "ours (P)",
    "ours_icp": "ours + ICP",
    "icp": "ICP from identity",
    "fpfh_ransac_icp": "FPFH + RANSAC + ICP",
}
# Methods whose chained gap-1 estimates are written as TUM trajectories.
TRAJECTORY_METHODS = ("ours", "ours_icp", "icp", "fpfh_ransac_icp")


@dataclass
class EvalSequence:
    """One sequence prepared for evaluation (V = 1: one view of a synthetic sequence, or a real capture).

    Args:
        name: display name (folder name, or ``<shard>:<key>/view<v>``).
        kind: ``"real"`` or ``"synthetic"``.
        points: (T, N, 3) float32 model input (the trainer's N), camera frame, metres.
        num_valid: (T,) int valid points before sampling.
        timestamps: (T,) float64 seconds.
        world_from_camera: (T, 4, 4) float64 ground truth, or None.
        dense: callable t -> (M, 3) float32 dense cloud of frame t for the baselines.
        source: the path it came from.
    """

    name: str
    kind: str
    points: np.ndarray
    num_valid: np.ndarray
    timestamps: np.ndarray
    world_from_camera: np.ndarray | None
    dense: Callable[[int], np.ndarray]
    source: str = ""
    notes: list = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return int(self.points.shape[0])


# ----------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------

def _dense_from_depth(depth_mm: np.ndarray, intrinsics: np.ndarray, max_depth_m: float | None):
    from synthseq.datasets.types import backproject_depth

    def dense(t: int) -> np.ndarray:
        d = depth_mm[t].astype(np.float32) / 1000.0
        if max_depth_m is not None:
            d[d > max_depth_m] = 0.0
        return backproject_depth(d, intrinsics)[0]

    return dense


def _dense_from_points(points: np.ndarray, num_valid: np.ndarray, max_depth_m: float | None):
    def dense(t: int) -> np.ndarray:
        p = points[t, : max(int(num_valid[t]), 0)]
        if max_depth_m is not None:
            p = p[p[:, 2] <= max_depth_m]
        return p

    return dense


def load_real_sequence(path, num_points: int, max_depth_m: float | None = None, seed: int = 0) -> EvalSequence:
    """Read a real capture for evaluation: N sampled points for P, the depth images for the baselines.

    Args:
        path: capture folder (TUM RGB-D, 7-Scenes, point-cloud folder).
        num_points: N, the trainer's ``train.num_points``.
        max_depth_m: depth limit of the baselines' dense clouds (None: all valid depth).
        seed: point-sampling seed.

    Returns:
        EvalSequence (``world_from_camera`` None when the capture has no ground truth).

    Raises:
        FileNotFoundError / DataError: from ``load_capture``, naming the file.
    """
    from synthseq.datasets.real import detect_format, load_capture, parse_capture_spec

    fmt = detect_format(path)
    opts = dict(num_points=num_points, seed=seed)
    if fmt != "pointclouds":
        opts["keep_depth"] = True
    seq = load_capture(path, **opts)
    pts = seq.points[:, 0]
    nv = seq.num_valid[:, 0]
    if seq.depth is not None:
        dense = _dense_from_depth(seq.depth[:, 0], seq.intrinsics[0], max_depth_m)
    else:
        # A point-cloud folder: load again with more points for the baselines (no depth images to use).
        full = load_capture(path, num_points=max(num_points, 50_000), seed=seed)
        dense = _dense_from_points(full.points[:, 0], full.num_valid[:, 0], max_depth_m)
    poses = None if seq.camera_poses is None else seq.camera_poses[:, 0]
    name = parse_capture_spec(path).display_name
    return EvalSequence(name, "real", pts, nv, seq.timestamps, poses, dense, str(path))


def load_synthetic_sequences(data_dir, num_points: int, max_sequences: int | None = None, view: int = -1,
                             max_depth_m: float | None = None, seed: int = 0) -> list[EvalSequence]:
    """Read up to ``max_sequences`` sequences (one view each) of a built dataset directory.

    ``view`` indexes the views like a Python list: the default -1 is the last view, which is the moving
    (handheld) camera in the bundled configs; a static rig view has identity relative poses.

    The stored N points are resampled to ``num_points`` (as ``SyntheticPairs`` does) for P; the baselines
    get the back-projected depth images when the shards store them, else the stored valid points.

    Raises:
        FileNotFoundError: no manifest.json (not a built dataset).
        DataError: a shard does not match its manifest, or a sequence lacks camera poses.
    """
    from synthseq.datasets.shards import ShardReader, iter_dataset
    from synthseq.datasets.types import sample_fixed

    out = []
    readers: dict[Path, Any] = {}
    try:
        for i, (shard, key) in enumerate(iter_dataset(data_dir, verify=True)):
            if max_sequences is not None and len(out) >= max_sequences:
                break
            if shard not in readers:
                readers[shard] = ShardReader(shard)
            seq = readers[shard].read(key, fields=("camera_poses", "depth"))
            if seq.camera_poses is None:
                raise DataError(f"{shard}: sequence {key}: no camera_poses (needed as ground truth)")
            v = min(view, seq.num_views - 1) if view >= 0 else max(seq.num_views + view, 0)
            rng = np.random.default_rng([seed, i])
            stored, nv = seq.points[:, v], seq.num_valid[:, v]
            pts = np.stack([stored[t, sample_fixed(num_points, min(int(nv[t]), stored.shape[1]), rng)]
                            for t in range(seq.num_frames)]).astype(np.float32)
            pts[nv == 0] = 0.0
            if seq.depth is not None:
                dense = _dense_from_depth(seq.depth[:, v], seq.intrinsics[v], max_depth_m)
            else:
                dense = _dense_from_points(stored, np.minimum(nv, stored.shape[1]), max_depth_m)
            out.append(EvalSequence(f"{shard.name}:{key}/view{v}", "synthetic", pts, nv, seq.timestamps,
                                    seq.camera_poses[:, v], dense, str(shard)))
    finally:
        for r in readers.values():
            r.close()
    return out


def pair_starts(num_frames: int, gap: int, max_pairs: int | None) -> np.ndarray:
    """Start frames t of the (t, t + gap) pairs evaluated: at gap 1 the consecutive block 0..K-1 (so the
    pairs chain into a trajectory), otherwise ``max_pairs`` starts spread evenly; all when None."""
    n = num_frames - gap
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    if max_pairs is None or max_pairs >= n:
        return np.arange(n)
    if gap == 1:
        return np.arange(max_pairs)
    return np.unique(np.linspace(0, n - 1, max_pairs).round().astype(np.int64))


# ----------------------------------------------------------------------------------------------------
# Pose evaluation
# ----------------------------------------------------------------------------------------------------

class _PoseModel:
    """P wrapped for numpy pairs: ``(points_a (N, 3), points_b (N, 3)) -> ((4, 4) a_from_b, seconds)``."""

    def __init__(self, model, device):
        self.model = model
        self.device = device

    def __call__(self, points_a: np.ndarray, points_b: np.ndarray) -> tuple[np.ndarray, float]:
        import torch

        start = time.perf_counter()
        with torch.no_grad():
            a = torch.as_tensor(points_a, dtype=torch.float32, device=self.device)[None]
            b = torch.as_tensor(points_b, dtype=torch.float32, device=self.device)[None]
            out = self.model(a, b)[0].double().cpu().numpy()
        return out, time.perf_counter() - start


def evaluate_pairs(seq: EvalSequence, gap: int, starts: np.ndarray, methods: Sequence[str],
                   pose_model: _PoseModel | None = None, baseline_options: dict | None = None,
                   seed: int = 0, on_pair: Callable[[], None] | None = None) -> dict:
    """Run every method on the pairs (t, t + gap), t in ``starts``.

    Returns:
        ``{"starts": (P,), "gt": (P, 4, 4), "<method>": {"a_from_b": (P, 4, 4), "seconds": (P,)}}``.
    """
    from synthseq.datasets.types import relative_pose
    from synthseq.training import baselines as B

    opts = dict(baseline_options or {})
    P = len(starts)
    out: dict[str, Any] = {"starts": np.asarray(starts), "gt": None}
    if seq.world_from_camera is not None:
        out["gt"] = relative_pose(seq.world_from_camera[starts], seq.world_from_camera[starts + gap])
    for m in methods:
        out[m] = {"a_from_b": np.full((P, 4, 4), np.nan), "seconds": np.zeros(P)}
    for k, t in enumerate(starts):
        t = int(t)
        need_dense = any(m != "ours" for m in methods)
        dense_a = seq.dense(t) if need_dense else None
        dense_b = seq.dense(t + gap) if need_dense else None
        ours_pose, ours_s = None, 0.0
        if pose_model is not None and any(m in MODEL_METHODS for m in methods):
            ours_pose, ours_s = pose_model(seq.points[t], seq.points[t + gap])
        for m in methods:
            if m == "ours":
                pose, sec = ours_pose, ours_s
            elif m == "ours_icp":
                r = B.refine_icp(dense_a, dense_b, ours_pose, **opts)
                pose, sec = r.a_from_b, ours_s + r.seconds
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
            if on_pair is not None:
                on_pair()
    return out


def _summarize_sequence(raw_seq: dict, methods: list[str], kind: str, source: str, num_frames: int) -> dict:
    """metrics.json entry of one sequence from ``evaluate_pairs`` results per gap (errors filled in)."""
    entry = {"kind": kind, "source": source, "num_frames": int(num_frames), "gaps": {}}
    for g, r in raw_seq.items():
        gap_entry = {"num_pairs": int(len(r["starts"])), "motion": _motion_summary(r["gt"]), "methods": {}}
        for m in methods:
            gap_entry["methods"][m] = M.summarize_errors(r[m]["rot_deg"], r[m]["trans_cm"], r[m]["seconds"])
        entry["gaps"][str(g)] = gap_entry
    return entry


def _pool(raw_seqs: list[dict], methods: list[str]) -> dict:
    """Concatenate the per-pair results of several sequences, gap by gap."""
    out: dict[int, dict] = {}
    for g in sorted({g for r in raw_seqs for g in r}):
        parts = [r[g] for r in raw_seqs if g in r]
        pooled = {"starts": np.concatenate([p["starts"] for p in parts]),
                  "gt": np.concatenate([p["gt"] for p in parts])}
        for m in methods:
            pooled[m] = {k: np.concatenate([p[m][k] for p in parts])
                         for k in ("a_from_b", "seconds", "rot_deg", "trans_cm")}
        out[g] = pooled
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

def evaluate(checkpoint=None, real_paths: Sequence = (), synthetic_dir=None, gaps: Sequence[int] = (1, 5, 10),
             out_dir="report", max_pairs_per_gap: int | None = 60, methods: Sequence[str] | None = None,
             config=None, device: str = "cpu", progress: Callable[[int], Any] | None = None) -> dict:
    """Evaluate a trained pose network (or only the classical baselines) and write the report.

    Args:
        checkpoint: run directory or checkpoint file of ``synthseq train``; None evaluates only the
            baselines (``icp``, ``fpfh_ransac_icp``).
        real_paths: real captures; those with ground truth are pose-evaluated, all feed the realism metrics.
        synthetic_dir: a built dataset directory (synthetic test set), or None.
        gaps: frame gaps d.
        out_dir: report directory (created): report.md, metrics.json, config.yaml, plots/, trajectories/.
        max_pairs_per_gap: pairs per (sequence, gap) at most (None: all).
        methods: subset of ``METHODS`` (default: all that apply; the model methods need a checkpoint).
        config: an ``EvaluateConfig`` for the remaining options (depth limit, voxel, realism sizes, ...);
            its ``gaps``/``real``/``synthetic``/``max_pairs`` are overridden by the arguments above.
        device: torch device for P and G.
        progress: ``progress(total_pair_evaluations)`` -> object with ``update(n)`` and ``close()`` (tqdm).

    Returns:
        The metrics dict written to metrics.json (``"sequences"``, ``"realism"``, ``"headline"``, ...).

    Raises:
        FileNotFoundError: a real path, the synthetic dir or the checkpoint does not exist.
        ValueError: unknown method, bad gaps, or nothing to evaluate.
    """
    import dataclasses

    from synthseq.config import to_dict
    from synthseq.training.config import EvaluateConfig

    cfg = config if config is not None else EvaluateConfig()
    gaps = [int(g) for g in gaps]
    if not gaps or any(g < 1 for g in gaps):
        raise ValueError(f"gaps: expected positive frame gaps, got {gaps}")
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
            raise ValueError(f"methods: unknown method {m!r} (known: {', '.join(METHODS)})")
    if checkpoint is None and any(m in MODEL_METHODS for m in methods):
        raise ValueError(f"methods {[m for m in methods if m in MODEL_METHODS]} need a checkpoint")
    if not cfg.real and cfg.synthetic is None:
        raise ValueError("nothing to evaluate: give real captures and/or a synthetic dataset directory")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []

    # --- models
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
        pose_model = _PoseModel(model, device)
        num_points = tcfg.num_points
        train_info = {"checkpoint": str(ckpt), "num_points": tcfg.num_points, "use_gan": tcfg.use_gan,
                      "real": list(tcfg.real), "data": tcfg.data}
    if checkpoint is None:
        notes.append("No checkpoint: classical baselines only.")

    # --- data
    seqs: list[EvalSequence] = [load_real_sequence(p, num_points, cfg.max_depth_m, cfg.seed) for p in cfg.real]
    synth: list[EvalSequence] = []
    if cfg.synthetic is not None:
        synth = load_synthetic_sequences(cfg.synthetic, num_points, cfg.synthetic_sequences,
                                         view=cfg.synthetic_view, max_depth_m=cfg.max_depth_m, seed=cfg.seed)
    for s in seqs:
        if s.world_from_camera is None:
            notes.append(f"{s.name}: no ground truth; used for the realism metrics only.")
    posed = [s for s in seqs + synth if s.world_from_camera is not None]

    # --- pose evaluation
    plan = [(s, g, pair_starts(s.num_frames, g, cfg.max_pairs)) for s in posed for g in gaps]
    for s, g, st in plan:
        if len(st) == 0:
            notes.append(f"{s.name}: gap {g} is longer than its {s.num_frames} frames; skipped.")
    total = sum(len(st) for _, _, st in plan) * len(methods)
    bar = progress(total) if progress is not None else None
    on_pair = (lambda: bar.update(1)) if bar is not None else None
    baseline_options = dict(voxel_m=cfg.voxel_m, max_correspondence_m=cfg.max_correspondence_m)
    raw: dict[str, dict] = {}
    try:
        for s, g, st in plan:
            if len(st) == 0:
                continue
            r = evaluate_pairs(s, g, st, methods, pose_model, baseline_options, cfg.seed, on_pair)
            for m in methods:
                r[m]["rot_deg"], r[m]["trans_cm"] = M.relative_pose_errors(r[m]["a_from_b"], r["gt"])
            raw.setdefault(s.name, {})[g] = r
    finally:
        if bar is not None:
            bar.close()
    # Real sequences are reported one by one; synthetic ones pooled into one "synthetic" entry (their
    # per-sequence summaries go to metrics.json's "synthetic_sequences").
    results: dict[str, dict] = {}
    synthetic_sequences: dict[str, dict] = {}
    for s in posed:
        if s.name in raw:
            target = results if s.kind == "real" else synthetic_sequences
            target[s.name] = _summarize_sequence(raw[s.name], methods, s.kind, s.source, s.num_frames)
    synth_raw = [raw[s.name] for s in synth if s.name in raw]
    if synth_raw:
        pooled = _pool(synth_raw, methods)
        name = f"synthetic ({len(synth_raw)} sequences)"
        raw[name] = pooled
        results[name] = _summarize_sequence(pooled, methods, "synthetic", str(cfg.synthetic),
                                            sum(s.num_frames for s in synth))

    # --- trajectories (chained gap-1 estimates; real sequences and the first synthetic one)
    traj_dir = out_dir / "trajectories"
    for s in [x for x in posed if x.kind == "real"] + synth[:1]:
        r = raw.get(s.name, {}).get(1)
        if r is None:
            continue
        K = len(r["starts"])
        ests = {m: r[m]["a_from_b"] for m in methods if m in TRAJECTORY_METHODS}
        folder = traj_dir / _safe_name(s.name)
        paths = M.export_tum_trajectories(folder, s.timestamps[:K + 1], s.world_from_camera[:K + 1], ests, s.name)
        entry = results.get(s.name) or synthetic_sequences[s.name]
        entry["trajectories"] = {k: str(Path(v).relative_to(out_dir)) for k, v in paths.items()}
        entry["trajectory_frames"] = K + 1
    for s in synth:
        raw.pop(s.name, None)  # plots show the pooled synthetic entry

    # --- GAN realism
    realism = _realism(cfg, seqs, synth, refiner, device, notes)

    headline = _headline(results, methods)
    metrics_out = {
        "methods": methods,
        "method_labels": {m: METHOD_LABELS[m] for m in methods},
        "gaps": gaps,
        "success": {"max_rot_deg": M.SUCCESS_ROT_DEG, "max_trans_cm": M.SUCCESS_TRANS_CM},
        "train": train_info,
        "sequences": results,
        "synthetic_sequences": synthetic_sequences,
        "realism": realism,
        "headline": headline,
        "notes": notes,
        "inputs": _inputs_text(num_points, cfg),
    }
    (out_dir / "config.yaml").write_text(_yaml(to_dict(cfg)))
    (out_dir / "metrics.json").write_text(json.dumps(_jsonable(metrics_out), indent=2, allow_nan=True) + "\n")
    figures = {}
    try:
        from synthseq.training import report as R

        figures = R.write_plots(out_dir / "plots", results, raw, methods, gaps, seqs, synth, refiner, device,
                                cfg.seed)
    except ImportError as e:
        notes.append(f"plots skipped: {e}")
        log.warning("plots skipped: %s", e)
    from synthseq.training import report as R

    (out_dir / "report.md").write_text(R.render_report(metrics_out, figures, out_dir))
    log.info("wrote %s", out_dir / "report.md")
    metrics_out["report"] = str(out_dir / "report.md")
    return metrics_out


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
                             "success_rate": s["success_rate"], "rot_deg_median": s["rot_deg"]["median"],
                             "trans_cm_median": s["trans_cm"]["median"],
                             "time_s_median": (s["time_s"] or {}).get("median", math.nan),
                             "num_pairs": s["num_pairs"]})
    return rows


def _inputs_text(num_points: int, cfg) -> dict:
    depth = "all valid depth" if cfg.max_depth_m is None else f"depth <= {cfg.max_depth_m} m"
    return {
        "ours": f"{num_points} points per frame sampled uniformly from the valid depth pixels (as in training), "
                "raw camera frame, metres",
        "ours_icp": f"P's estimate, refined by point-to-plane ICP ({cfg.max_correspondence_m} m) on the dense "
                    "clouds",
        "icp": f"dense clouds: every valid depth pixel back-projected ({depth}), voxelised at {cfg.voxel_m} m, "
               f"normals; point-to-plane ICP from identity, max correspondence {cfg.max_correspondence_m} m",
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
    return x


def _yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump({"evaluate": data}, sort_keys=False)
