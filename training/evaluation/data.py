"""What the evaluation stage evaluates on: sequences with ground truth, the pairs drawn from them, and the check
that none of it was training data.

- ``load_real_sequence`` / ``load_synthetic_sequences``: one ``EvalSequence`` per real capture (frame range
  ``PATH@START:STOP`` allowed) or per synthetic sequence (one view), with the model input, the dense clouds
  the baselines get and the ground truth.
- ``pair_starts``: start frames t of the (t, t + d) pairs, spread evenly over the whole sequence at every gap
  (only pairs whose two frames have a ground-truth pose).
- ``training_overlap``: which evaluation inputs the checkpoint trained on (issue 9): a real capture whose
  frames overlap a ``train.real`` range of the same folder, or a synthetic dataset that is ``train.data``
  (same folder, same shard files, or the same sequences: same generate config and root seed).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from synthseq.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class EvalSequence:
    """One sequence prepared for evaluation (V = 1: one view of a synthetic sequence, or a real capture).

    Args:
        name: display name (folder name with its range, ``tum_fr1_rpy@50:100``, or ``<shard>:<key>/view<v>``).
        kind: ``"real"`` or ``"synthetic"``.
        points: (T, N, 3) float32 model input (the trainer's N), camera frame, metres.
        num_valid: (T,) int valid points before sampling.
        timestamps: (T,) float64 seconds.
        world_from_camera: (T, 4, 4) float64 ground truth (NaN rows: frames without a pose), or None.
        dense: callable t -> (M, 3) float32 dense cloud of frame t for the baselines.
        source: the path (or capture spec) it came from.
        first_frame: the capture's frame number of row 0 (the range start), for messages.
        intrinsics: ``{"fx", "fy", "cx", "cy", "source"}`` of a real capture, or None.
        seen_in_training: why this sequence counts as training data (None: held out).
        sequence_id: synthetic sequence key (``"000003"``), or None.
    """

    name: str
    kind: str
    points: np.ndarray
    num_valid: np.ndarray
    timestamps: np.ndarray
    world_from_camera: np.ndarray | None
    dense: Callable[[int], np.ndarray]
    source: str = ""
    first_frame: int = 0
    intrinsics: dict | None = None
    seen_in_training: str | None = None
    sequence_id: str | None = None
    notes: list = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return int(self.points.shape[0])

    @property
    def pose_valid(self) -> np.ndarray | None:
        """(T,) bool: frames with a finite ground-truth pose (None without ground truth)."""
        if self.world_from_camera is None:
            return None
        return np.all(np.isfinite(self.world_from_camera), axis=(1, 2))


# ----------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------

def _dense_from_depth(depth_mm: np.ndarray, intrinsics: np.ndarray, max_depth_m: float | None):
    from synthseq.geometry import depth_mm_to_points

    def dense(t: int) -> np.ndarray:
        return depth_mm_to_points(depth_mm[t], intrinsics, max_depth_m)

    return dense


def _dense_from_points(points: np.ndarray, num_valid: np.ndarray, max_depth_m: float | None):
    def dense(t: int) -> np.ndarray:
        p = points[t, : max(int(num_valid[t]), 0)]
        if max_depth_m is not None:
            p = p[p[:, 2] <= max_depth_m]
        return p

    return dense


def load_real_sequence(path, num_points: int, max_depth_m: float | None = None, seed: int = 0) -> EvalSequence:
    """Read a real capture (or a frame range of one) for evaluation: N sampled points for P, the depth images
    for the baselines, the ground truth.

    TUM frames without a ground-truth pose within 0.02 s (mocap gaps) are kept with NaN poses: the frame
    sequence stays intact and ``pair_starts`` leaves out the pairs that touch them (a note says which).

    Args:
        path: capture folder (TUM RGB-D, 7-Scenes, point-cloud folder), optionally ``PATH@START:STOP``.
        num_points: N, the trainer's ``train.num_points``.
        max_depth_m: depth limit of the baselines' dense clouds (None: all valid depth).
        seed: point-sampling seed.

    Returns:
        EvalSequence (``world_from_camera`` None when the capture has no ground truth).

    Raises:
        FileNotFoundError / DataError: from ``load_capture``, naming the file or the range.
    """
    from synthseq.datasets.real import capture_intrinsics, detect_format, load_capture, parse_capture_spec

    spec = parse_capture_spec(path)
    fmt = detect_format(spec.path)
    opts: dict[str, Any] = dict(num_points=num_points, seed=seed)
    if fmt != "pointclouds":
        opts["keep_depth"] = True
    if fmt == "tum":
        opts["missing_pose"] = "nan"
    seq = load_capture(spec, **opts)
    pts = seq.points[:, 0]
    nv = seq.num_valid[:, 0]
    if seq.depth is not None:
        dense = _dense_from_depth(seq.depth[:, 0], seq.intrinsics[0], max_depth_m)
    else:
        # A point-cloud folder: load again with more points for the baselines (no depth images to use).
        full = load_capture(spec, num_points=max(num_points, 50_000), seed=seed)
        dense = _dense_from_points(full.points[:, 0], full.num_valid[:, 0], max_depth_m)
    poses = None if seq.camera_poses is None else seq.camera_poses[:, 0]
    _, source = capture_intrinsics(spec)
    K = seq.intrinsics[0]
    intr = {"fx": float(K[0, 0]), "fy": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2]),
            "source": source}
    out = EvalSequence(spec.display_name, "real", pts, nv, seq.timestamps, poses, dense, spec.text,
                       first_frame=spec.start, intrinsics=intr)
    valid = out.pose_valid
    if valid is not None and not valid.all():
        frames = [spec.start + int(i) for i in np.nonzero(~valid)[0]]
        out.notes.append(f"{out.name}: {len(frames)} frame(s) without a ground-truth pose within 0.02 s "
                         f"(frames {frames[:10]}{' ...' if len(frames) > 10 else ''}); pairs that touch them "
                         "are left out of the evaluation")
    return out


def load_synthetic_sequences(data_dir, num_points: int, max_sequences: int | None = None, view: int = -1,
                             max_depth_m: float | None = None, seed: int = 0) -> list[EvalSequence]:
    """Read up to ``max_sequences`` sequences (one view each) of a built dataset directory.

    ``view`` indexes the views like a Python list: the default -1 is the last view, which is the moving
    (handheld) camera in the bundled configs; a static rig view has identity relative poses.

    The stored N points are resampled to ``num_points`` (as ``SyntheticPairs`` does) for P; the baselines
    get the back-projected depth images when the shards store them, else the stored valid points. Shards
    are checked against the manifest by size (full sha256: ``synthseq verify``).

    Raises:
        FileNotFoundError: no manifest.json (not a built dataset).
        DataError: a shard does not match its manifest, or a sequence lacks camera poses.
    """
    from synthseq.datasets.shards import ShardReader, iter_dataset
    from synthseq.types import sample_fixed

    out = []
    readers: dict[Path, Any] = {}
    try:
        for i, (shard, key) in enumerate(iter_dataset(data_dir, verify="size")):
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
                                    seq.camera_poses[:, v], dense, str(shard), sequence_id=key))
    finally:
        for r in readers.values():
            r.close()
    return out


# ----------------------------------------------------------------------------------------------------
# Pairs
# ----------------------------------------------------------------------------------------------------

def pair_starts(num_frames: int, gap: int, max_pairs: int | None, pose_valid: np.ndarray | None = None) -> np.ndarray:
    """Start frames t of the (t, t + gap) pairs evaluated: ``max_pairs`` starts spread evenly over the whole
    sequence (all when None or when there are fewer), at every gap alike, among the pairs whose two frames
    have a ground-truth pose (``pose_valid``, (T,) bool; None: all frames)."""
    n = num_frames - gap
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    cand = np.arange(n, dtype=np.int64)
    if pose_valid is not None:
        ok = np.asarray(pose_valid, dtype=bool)
        cand = cand[ok[:n] & ok[gap:gap + n]]
    if max_pairs is None or max_pairs >= len(cand):
        return cand
    return cand[np.unique(np.linspace(0, len(cand) - 1, max_pairs).round().astype(np.int64))]


def trajectory_block(pose_valid: np.ndarray, max_pairs: int) -> np.ndarray:
    """Start frames of up to ``max_pairs`` consecutive gap-1 pairs (t, t + 1) with poses at both ends: the
    first run of valid frames long enough, else the longest one. Chained, they form the TUM trajectory whose
    ``evo_rpe --delta 1`` equals the report's numbers on those pairs."""
    ok = np.asarray(pose_valid, dtype=bool)
    pair_ok = ok[:-1] & ok[1:]
    best = np.zeros(0, dtype=np.int64)
    t = 0
    while t < len(pair_ok):
        if not pair_ok[t]:
            t += 1
            continue
        u = t
        while u < len(pair_ok) and pair_ok[u] and u - t < max_pairs:
            u += 1
        run = np.arange(t, u, dtype=np.int64)
        if len(run) >= max_pairs:
            return run
        if len(run) > len(best):
            best = run
        t = u + 1
    return best


# ----------------------------------------------------------------------------------------------------
# Training data
# ----------------------------------------------------------------------------------------------------

@dataclass
class Overlap:
    """An evaluation input the checkpoint trained on: ``target`` is an evaluated capture spec or the
    synthetic dataset; ``sequence_ids`` the synthetic sequences concerned (None: all of them)."""

    target: str
    message: str
    sequence_ids: frozenset | None = None


def _resolve_recorded(path: str) -> tuple[Path, bool]:
    """A path recorded in the checkpoint, resolved from here; whether it exists from here."""
    p = Path(path).expanduser()
    return p.resolve(), p.exists()


def _file_listing(folder: Path) -> list[tuple[str, int]]:
    """(relative path, size) of every file under ``folder``, sorted; empty for a missing folder or a file."""
    if not folder.is_dir():
        return []
    return sorted((str(f.relative_to(folder)), f.stat().st_size) for f in folder.rglob("*") if f.is_file())


def _same_files(a: Path, b: Path) -> bool:
    """Whether two capture folders hold the same files (names and sizes), e.g. one is a renamed copy."""
    listing = _file_listing(a)
    return bool(listing) and listing == _file_listing(b)


def real_overlaps(eval_specs: list[str], train_real: list[str], notes: list[str]) -> list[Overlap]:
    """Evaluated real captures whose frames overlap a ``train.real`` entry of the same capture.

    Captures are the same when their folders resolve to the same path (from the current directory), have
    the same folder name, or hold the same files (names and sizes: a renamed copy). So a checkout whose
    data lives elsewhere, where another copy of the training captures may also exist, still refuses what it
    cannot prove is held out. A recorded training path that does not exist from here gets a note (matched
    by folder name only).
    """
    from synthseq.datasets.real import parse_capture_spec

    out = []
    train = []
    for text in train_real:
        try:
            spec = parse_capture_spec(text)
        except DataError:
            notes.append(f"train.real entry {text!r} recorded in the checkpoint is not a valid capture spec; "
                         "not checked for overlap")
            continue
        resolved, exists = _resolve_recorded(str(spec.path))
        if not exists:
            notes.append(f"train.real {text} (recorded in the checkpoint) does not exist from this directory; "
                         "evaluated captures were matched against it by folder name")
        train.append((text, spec, resolved, exists))
    for text in eval_specs:
        ev = parse_capture_spec(text)
        ev_resolved = ev.path.resolve()
        for t_text, t_spec, t_resolved, t_exists in train:
            same = (t_resolved == ev_resolved or t_spec.path.name == ev.path.name
                    or (t_exists and _same_files(t_resolved, ev_resolved)))
            if not same:
                continue
            lo, hi = max(ev.start, t_spec.start), min(ev.stop if ev.stop is not None else np.inf,
                                                       t_spec.stop if t_spec.stop is not None else np.inf)
            if lo < hi:
                frames = f"{int(lo)}:{'' if hi == np.inf else int(hi)}"
                out.append(Overlap(text, f"--real {text}: frames {frames} were training data "
                                         f"(train.real: {t_text})"))
    return out


def _manifest(path: Path) -> dict | None:
    try:
        return json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def synthetic_overlap(eval_dir, train_data: str | None, notes: list[str]) -> Overlap | None:
    """Whether the synthetic evaluation set is (partly) the training dataset ``train.data``.

    Same folder (resolved), any shard file with the same sha256, or the same sequences: sequence i's content
    depends only on the generate config, the root seed and i (pipelines/build.py), so two builds with the same
    generate config and seed share the sequences with the same ids. A build with another seed (or another
    generate config) is held out, whatever its ids.
    """
    if train_data is None or eval_dir is None:
        return None
    ev = Path(eval_dir).resolve()
    tr, exists = _resolve_recorded(str(train_data))
    label = f"--synthetic {eval_dir}"
    if ev == tr:
        return Overlap(str(eval_dir), f"{label} is the training dataset (train.data: {train_data})")
    if not exists:
        notes.append(f"train.data {train_data} (recorded in the checkpoint) does not exist from this directory; "
                     "could not check the synthetic set against it")
        return None
    m_ev, m_tr = _manifest(ev), _manifest(tr)
    if m_ev is None or m_tr is None:
        return None
    ev_shards, tr_shards = m_ev.get("shards", []), m_tr.get("shards", [])
    tr_hashes = {e.get("sha256") for e in tr_shards if e.get("sha256")}
    same_files = [e["file"] for e in ev_shards if e.get("sha256") in tr_hashes]
    if same_files:
        return Overlap(str(eval_dir), f"{label}: shard(s) {', '.join(same_files[:5])} are byte-identical to "
                                      f"shards of the training dataset {train_data}")

    def identity(m):
        cfg = m.get("shard_config") or {}
        return json.dumps(cfg.get("generate"), sort_keys=True), m.get("seed", cfg.get("seed"))

    if identity(m_ev) == identity(m_tr) and identity(m_ev)[0] != "null":
        tr_ids = {k for e in tr_shards for k in e.get("sequence_ids", [])}
        shared = sorted({k for e in ev_shards for k in e.get("sequence_ids", [])} & tr_ids)
        if shared:
            return Overlap(str(eval_dir), f"{label}: sequence(s) {_id_list(shared)} are the training dataset's "
                                          f"(same generate config and seed {m_ev.get('seed')} as train.data "
                                          f"{train_data}); build the test set with another --seed",
                           frozenset(shared))
    return None


def _id_list(ids: list[str]) -> str:
    return ", ".join(ids[:6]) + (f" ... ({len(ids)} in all)" if len(ids) > 6 else "")
