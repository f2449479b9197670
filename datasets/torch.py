"""PyTorch Datasets over built shard directories and real captures: frames, frame pairs, and their collate.

Pose conventions of every pair sample (numpy arrays; ``collate_pairs`` stacks them into tensors)::

    points_a        (N, 3) float32   frame t, camera frame t (OpenCV axes), metres
    points_b        (N, 3) float32   frame t + d, camera frame t + d
    a_from_b        (4, 4) float32   cam_t_from_cam_{t+d} = inv(world_from_cam_t) @ world_from_cam_{t+d}:
                                     maps frame t+d camera coordinates into frame t's, so a static world
                                     point p_b seen in b is at a_from_b @ p_b in a (identity if no pose)
    object_a_from_b (K_max, 4, 4)    per object k: inv(world_from_cam_t) @ world_from_obj_k(t)
                                     @ inv(world_from_obj_k(t+d)) @ world_from_cam_{t+d}: maps the points
                                     of object k seen in cam t+d to where the same material points are in
                                     cam t (equals a_from_b for an object that does not move). Rows past
                                     the sequence's K are identity, flagged by object_valid False.
    object_valid    (K_max,) bool
    labels_a/_b     (N,) int64       object index, -1 background/room (all -1 for real captures)
    num_valid_a/_b  int              valid points before sampling (0: the cloud is all zeros)
    gap             int              d
    has_pose        bool             a_from_b is ground truth (False: identity placeholder)
    sequence, view, frame            identifiers: sequence key/name (str), view index, frame t

The trainer must not use ``a_from_b`` of real pairs (``RealPairs``): it is there for evaluation only.

Storage access (the dataset index, per-process HDF5 handles) is ``synthseq.datasets.shards.ShardStore``:
files are opened lazily in the process that reads, so each DataLoader worker opens its own and the Dataset
pickles without any h5py object (``fork`` and ``spawn`` both work). Every shard's byte size is checked
against ``manifest.json`` when the Dataset is built (the full sha256 is ``synthseq verify``'s job, or
``verify="sha256"``), and ``ShardReader`` checks ``format_version``. Sampling is deterministic: sample ``i``
draws from ``np.random.default_rng([seed, epoch, i])``, so the same seed gives the same samples with any
number of workers (``set_epoch`` varies it between epochs).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence as TypingSequence

import numpy as np
from torch.utils.data import Dataset, default_collate

from synthseq.datasets.shards import ShardStore
from synthseq.geometry import invert_pose
from synthseq.types import BACKGROUND_LABEL, PointSequence, sample_fixed

log = logging.getLogger(__name__)

__all__ = ["SyntheticFrames", "SyntheticPairs", "RealPairs", "collate_pairs"]


# --------------------------------------------------------------------------------------------- shards

class _ShardDataset(Dataset):
    """Shared machinery: the store (index + lazy per-process handles), per-sample RNG, transform."""

    def __init__(self, root, num_points: int | None, transform, seed: int, verify: bool | str):
        self.root = Path(root)
        self.store = ShardStore(root, verify=verify)
        self.num_points = None if num_points is None else int(num_points)
        if self.num_points is not None and self.num_points <= 0:
            raise ValueError(f"num_points must be positive, got {num_points}")
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Vary the random sampling/augmentation between epochs (set before creating the iterator; with
        ``persistent_workers`` the workers keep the epoch they were started with)."""
        self.epoch = int(epoch)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def _needs_rng(self, seq: dict) -> bool:
        """Whether a sample draws random numbers (creating a Generator costs ~40 us; skip it when not)."""
        return self.transform is not None or (self.num_points is not None and self.num_points != seq["N"])

    def close(self) -> None:
        """Close this process's HDF5 handles (they reopen on the next access)."""
        self.store.close()

    def _subsample(self, points, labels, num_valid: int, rng):
        """Resample one stored cloud to ``num_points`` (rows past num_valid are repeats: sample among the
        first min(num_valid, N) rows)."""
        if self.num_points is None or self.num_points == len(points):
            return points, labels
        n = min(int(num_valid), len(points))
        idx = sample_fixed(self.num_points, n, rng)
        return points[idx], labels[idx]


# --------------------------------------------------------------------------------------------- frames

class SyntheticFrames(_ShardDataset):
    """One (view, frame) cloud per sample from a built dataset directory.

    Sample keys: ``points`` (N, 3) float32 camera frame; ``labels`` (N,) int64; ``num_valid`` int;
    ``world_from_camera`` (4, 4) float32 (identity if absent, see ``has_pose``); ``camera_from_object``
    (K_max, 4, 4) float32 = inv(world_from_camera) @ world_from_object; ``object_valid`` (K_max,) bool;
    ``intrinsics`` (3, 3) float32; ``has_pose`` bool; ``sequence`` str, ``view`` int, ``frame`` int.

    Args:
        root: dataset directory with ``manifest.json``.
        num_points: resample each cloud to this many points (None: as stored).
        transform: ``transform(sample, rng) -> sample`` (see ``synthseq.datasets.transforms``).
        seed: sampling seed.
        views: only these view indices (None: all).
        verify: ``"size"`` (default): every shard's byte size against the manifest (cheap); ``"sha256"`` (or
            True): also its checksum (reads every byte; what ``synthseq verify`` does); False: neither.

    Raises:
        FileNotFoundError: no manifest.
        DataError / FormatVersionError: a shard does not match the manifest (names the file).
    """

    def __init__(self, root, num_points: int | None = None, transform=None, seed: int = 0,
                 views: TypingSequence[int] | None = None, verify: bool | str = "size"):
        super().__init__(root, num_points, transform, seed, verify)
        rows = []
        for si, s in enumerate(self.store.seqs):
            for v in range(s["V"]):
                if views is None or v in views:
                    for t in range(s["T"]):
                        rows.append((si, v, t))
        self.items = np.asarray(rows, dtype=np.int64).reshape(-1, 3)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self.items):
            raise IndexError(f"index {index} out of range for {len(self.items)} frames")
        si, v, t = (int(x) for x in self.items[index])
        seq = self.store.seqs[si]
        rng = self._rng(index) if self._needs_rng(seq) else None
        small = self.store.sequence_arrays(si)
        nv = int(small["num_valid"][t, v])
        points, labels = self._subsample(*self.store.read_cloud(si, t, v), nv, rng)
        has_pose = "world_from_camera" in small
        w_from_c = small["world_from_camera"][t, v] if has_pose else np.eye(4)
        c_from_w = small["camera_from_world"][t, v] if has_pose else np.eye(4)
        valid = small["object_valid"]
        c_from_o = c_from_w @ small["world_from_object"][t]
        c_from_o[~valid] = np.eye(4)
        K = self.store.array(si, "intrinsics")[v]
        sample = dict(points=points, labels=labels, num_valid=nv,
                      world_from_camera=w_from_c.astype(np.float32),
                      camera_from_object=c_from_o.astype(np.float32), object_valid=valid,
                      intrinsics=np.asarray(K, np.float32), has_pose=has_pose,
                      sequence=seq["key"], view=v, frame=t)
        if self.transform is not None:
            sample = self.transform(sample, rng)
        return sample


# --------------------------------------------------------------------------------------------- pairs

class SyntheticPairs(_ShardDataset):
    """Frame pairs (t, t + d) of one view from a built dataset directory, with ground-truth relative poses.

    See the module docstring for the sample keys and pose conventions. Pairs are enumerated for every
    sequence, view, gap d in ``gaps`` and frame t with t + d < T, in that order.

    With ``object_centric=True`` a sample is one object k of one pair: ``points_a``/``points_b`` are the
    points labelled k in each frame (resampled to ``num_points``, default the stored N), ``a_from_b`` is
    that object's relative pose ``object_a_from_b[k]``, ``camera_a_from_b`` the camera's, ``object`` is k.
    Only (pair, k) with at least ``min_object_points`` points of k in both frames are enumerated (this
    reads every labels array once at construction).

    Args:
        root: dataset directory with ``manifest.json``.
        gaps: frame gaps d.
        num_points: resample each cloud to this many points (None: as stored, N).
        transform: ``transform(sample, rng) -> sample`` (see ``synthseq.datasets.transforms``).
        seed: sampling seed (sample i uses ``default_rng([seed, epoch, i])``).
        object_centric: one object per sample, as above.
        min_object_points: object-centric visibility threshold.
        views: only these view indices (None: all; ``"moving"``: per sequence, the views whose camera moves,
            which reads every sequence's camera poses once).
        verify: ``"size"`` (default): every shard's byte size against the manifest (cheap); ``"sha256"`` (or
            True): also its checksum (reads every byte; what ``synthseq verify`` does); False: neither.

    Raises:
        FileNotFoundError: no manifest.
        DataError / FormatVersionError: a shard does not match the manifest (names the file).
        ValueError: bad gaps or views.
    """

    def __init__(self, root, gaps: TypingSequence[int] = (1, 5, 10), num_points: int | None = None,
                 transform: Callable | None = None, seed: int = 0, object_centric: bool = False,
                 min_object_points: int = 32, views: TypingSequence[int] | None = None,
                 verify: bool | str = "size"):
        super().__init__(root, num_points, transform, seed, verify)
        self.gaps = _check_gaps(gaps)
        self.object_centric = bool(object_centric)
        self.min_object_points = int(min_object_points)
        if isinstance(views, str) and views != "moving":
            raise ValueError(f"views: expected a list of view indices, None or 'moving', got {views!r}")
        blocks = []  # (si, v, t, d, -1) for every t < T - d, built per (sequence, view, gap) with numpy
        for si, s in enumerate(self.store.seqs):
            keep = self._moving_views(si, s) if views == "moving" else views
            for v in range(s["V"]):
                if keep is not None and v not in keep:
                    continue
                for d in self.gaps:
                    n = s["T"] - d
                    if n > 0:
                        b = np.empty((n, 5), dtype=np.int64)
                        b[:, 0], b[:, 1], b[:, 2], b[:, 3], b[:, 4] = si, v, np.arange(n), d, -1
                        blocks.append(b)
        items = np.concatenate(blocks) if blocks else np.zeros((0, 5), dtype=np.int64)
        if self.object_centric:
            items = self._object_items(items)
        self.items = items
        if len(self.items) == 0:
            log.warning("%s: no pairs (gaps %s longer than every sequence?)", self.root, self.gaps)

    def _moving_views(self, seq_index: int, seq: dict) -> list[int] | None:
        """The views of a sequence whose camera moves (a static rig view only gives identity pairs); None (all)
        when the sequence stores no camera poses. Reads the sequence's small arrays (poses), not its points."""
        world_from_camera = self.store.sequence_arrays(seq_index).get("world_from_camera")
        if world_from_camera is None:
            return None
        return [v for v in range(seq["V"])
                if not np.allclose(world_from_camera[:, v], world_from_camera[:1, v], rtol=0.0, atol=1e-9)]

    def _object_items(self, pairs: np.ndarray) -> np.ndarray:
        out = []
        for si, s in enumerate(self.store.seqs):
            sel = pairs[pairs[:, 0] == si]
            if len(sel) == 0 or s["K"] == 0 or not s["has_labels"]:
                continue
            labels, num_valid = self.store.array(si, "labels")[()], self.store.array(si, "num_valid")[()]
            T, V, N = labels.shape
            keep = np.arange(N)[None, None, :] < np.minimum(num_valid, N)[:, :, None]
            counts = np.stack([((labels == k) & keep).sum(axis=-1) for k in range(s["K"])], axis=-1)  # (T, V, K)
            for _, v, t, d, _ in sel:
                ok = (counts[t, v] >= self.min_object_points) & (counts[t + d, v] >= self.min_object_points)
                for k in np.nonzero(ok)[0]:
                    out.append((si, v, t, d, k))
        return np.asarray(out, dtype=np.int64).reshape(-1, 5)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self.items):
            raise IndexError(f"index {index} out of range for {len(self.items)} pairs")
        si, v, t, d, k = (int(x) for x in self.items[index])
        seq = self.store.seqs[si]
        rng = self._rng(index) if (k >= 0 or self._needs_rng(seq)) else None
        small = self.store.sequence_arrays(si)
        (pa, la), (pb, lb) = self.store.read_cloud(si, t, v), self.store.read_cloud(si, t + d, v)
        nv_a, nv_b = int(small["num_valid"][t, v]), int(small["num_valid"][t + d, v])
        has_pose = "world_from_camera" in small
        valid = small["object_valid"]
        if has_pose:
            a_from_w = small["camera_from_world"][t, v]
            w_from_b = small["world_from_camera"][t + d, v]
            a_from_b = a_from_w @ w_from_b
            # inv(C_t) @ O_k(t) @ inv(O_k(t+d)) @ C_{t+d}, batched over K_max.
            object_a_from_b = (a_from_w @ small["world_from_object"][t]) @ (small["object_from_world"][t + d] @ w_from_b)
            object_a_from_b[~valid] = np.eye(4)
        else:
            a_from_b = np.eye(4)
            object_a_from_b = np.tile(np.eye(4), (self.store.k_max, 1, 1))
        sample = dict(gap=d, has_pose=has_pose, sequence=seq["key"], view=v, frame=t,
                      object_a_from_b=object_a_from_b.astype(np.float32), object_valid=valid)
        if k < 0:
            pa, la = self._subsample(pa, la, nv_a, rng)
            pb, lb = self._subsample(pb, lb, nv_b, rng)
            sample.update(points_a=pa, points_b=pb, labels_a=la, labels_b=lb, num_valid_a=nv_a,
                          num_valid_b=nv_b, a_from_b=a_from_b.astype(np.float32))
        else:
            n_out = self.num_points or seq["N"]
            clouds = []
            for pts, lab, nv in ((pa, la, nv_a), (pb, lb, nv_b)):
                rows = np.nonzero(lab[:min(nv, seq["N"])] == k)[0]
                idx = rows[sample_fixed(n_out, len(rows), rng)]
                clouds.append((pts[idx], lab[idx], len(rows)))
            sample.update(points_a=clouds[0][0], points_b=clouds[1][0], labels_a=clouds[0][1],
                          labels_b=clouds[1][1], num_valid_a=clouds[0][2], num_valid_b=clouds[1][2],
                          a_from_b=sample["object_a_from_b"][k].copy(),
                          camera_a_from_b=a_from_b.astype(np.float32), object=k)
        if self.transform is not None:
            sample = self.transform(sample, rng)
        return sample


def _check_gaps(gaps) -> tuple[int, ...]:
    if isinstance(gaps, int):
        gaps = (gaps,)
    out = tuple(int(g) for g in gaps)
    if not out or any(g <= 0 for g in out):
        raise ValueError(f"gaps: expected positive frame gaps, got {gaps}")
    return out


class RealPairs(Dataset):
    """Frame pairs (t, t + d) from real captures (``load_capture`` results), with the same keys as
    ``SyntheticPairs``: labels are all -1, ``object_a_from_b`` is (0, 4, 4), and ``a_from_b`` is the
    capture's ground truth when it has one (``has_pose`` True) - for evaluation only, the trainer must
    not use it. TUM captures are read with ``missing_pose='nan'``: a frame without a ground-truth pose is
    kept (training needs no labels), and pairs touching it have ``has_pose`` False.

    Args:
        path_or_sequence: a capture folder, a ``PointSequence`` (V = 1 or more; every view is used), or a
            list of either.
        gaps: frame gaps d.
        num_points: points per cloud; passed to ``load_capture`` for paths (default 1024 there), and used
            to resample in-memory sequences whose N differs (None: as stored).
        transform: ``transform(sample, rng) -> sample``.
        seed: sampling seed.
        sampling: ``"random"`` (the default): ``num_points`` drawn uniformly from the valid pixels, as
            ``load_capture`` samples; ``"voxel"``: one point per occupied voxel of the frame's dense cloud
            (``synthseq.geometry.voxel_points``, the voxel shrunk from ``voxel_m`` until there are
            ``num_points``), the way the pose estimator samples at inference, so that descriptors train on
            the clouds they will see. Each frame's voxel sample is drawn once (seeded by the frame) and kept.
        voxel_m: first voxel size for ``sampling="voxel"`` (metres).
        max_depth_m: ``sampling="voxel"`` only: depth limit of the dense cloud (evaluation's is 3 m).
        voxel_draws: ``sampling="voxel"`` only: this many different voxel samples are kept per frame and each
            sample of a pair picks one at random (an augmentation: the two frames' points never coincide).
        **capture_options: passed to ``load_capture`` for paths (max_frames, stride, voxel_size, ...).
    """

    def __init__(self, path_or_sequence, gaps: TypingSequence[int] = (1, 5, 10), num_points: int | None = None,
                 transform: Callable | None = None, seed: int = 0, sampling: str = "random",
                 voxel_m: float = 0.05, max_depth_m: float | None = None, voxel_draws: int = 1,
                 **capture_options):
        from synthseq.datasets.real import detect_format, load_capture

        if sampling not in ("random", "voxel"):
            raise ValueError(f"sampling: expected 'random' or 'voxel', got {sampling!r}")
        if sampling == "voxel" and num_points is None:
            raise ValueError("sampling='voxel' needs num_points")
        self.sampling = sampling
        self.voxel_m = float(voxel_m)
        self.max_depth_m = max_depth_m
        if int(voxel_draws) < 1:
            raise ValueError(f"voxel_draws: expected an int >= 1, got {voxel_draws!r}")
        self.voxel_draws = int(voxel_draws)
        self._voxel_cache: dict[tuple[int, int, int, int], tuple[np.ndarray, int]] = {}

        items = path_or_sequence if isinstance(path_or_sequence, (list, tuple)) else [path_or_sequence]
        self.sequences: list[PointSequence] = []
        for it in items:
            if isinstance(it, PointSequence):
                self.sequences.append(it)
            else:
                opts = dict(capture_options)
                if num_points is not None:
                    opts.setdefault("num_points", num_points)
                fmt = detect_format(it)
                if sampling == "voxel" and fmt != "pointclouds":
                    opts.setdefault("keep_depth", True)  # the dense cloud is sampled per frame
                if fmt == "tum":
                    # Training needs no labels: keep frames with no ground-truth pose in tolerance (mocap gaps,
                    # issue 14) in place, with NaN poses, so the pairs keep their true frame gaps.
                    opts.setdefault("missing_pose", "nan")
                self.sequences.append(load_capture(it, **opts))
        self.gaps = _check_gaps(gaps)
        self.num_points = None if num_points is None else int(num_points)
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0
        rows = []
        for si, s in enumerate(self.sequences):
            for v in range(s.num_views):
                for d in self.gaps:
                    for t in range(s.num_frames - d):
                        rows.append((si, v, t, d))
        self.items = np.asarray(rows, dtype=np.int64).reshape(-1, 4)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def _voxel_cloud(self, si: int, v: int, f: int, k: int = 0) -> tuple[np.ndarray, int]:
        """(num_points, 3) float32 voxel sample number k of frame f of view v of sequence si (drawn once,
        seeded by the frame and k; repeated points only when the frame has fewer voxels than num_points), and
        the number of distinct points."""
        from synthseq.geometry import depth_mm_to_points, voxel_points

        key = (si, v, f, k)
        if key not in self._voxel_cache:
            s = self.sequences[si]
            if s.depth is not None:
                dense = depth_mm_to_points(s.depth[f, v], s.intrinsics[v], self.max_depth_m)
            else:
                dense = s.points[f, v][: int(s.num_valid[f, v])]
                if self.max_depth_m is not None:
                    dense = dense[dense[:, 2] <= self.max_depth_m]
            rng = np.random.default_rng([self.seed, si, v, f, k])
            p = voxel_points(dense, self.num_points, rng, self.voxel_m)
            n = len(p) if p.any() else 0
            if len(p) != self.num_points:
                p = p[sample_fixed(self.num_points, n, rng)] if n else np.zeros((self.num_points, 3), np.float32)
            self._voxel_cache[key] = (np.ascontiguousarray(p, dtype=np.float32), n)
        return self._voxel_cache[key]

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self.items):
            raise IndexError(f"index {index} out of range for {len(self.items)} pairs")
        si, v, t, d = (int(x) for x in self.items[index])
        s = self.sequences[si]
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        clouds = []
        for f in (t, t + d):
            if self.sampling == "voxel":
                k = int(rng.integers(self.voxel_draws)) if self.voxel_draws > 1 else 0
                clouds.append(self._voxel_cloud(si, v, f, k))
                continue
            p = s.points[f, v]
            nv = int(s.num_valid[f, v])
            if self.num_points is not None and self.num_points != len(p):
                p = p[sample_fixed(self.num_points, min(nv, len(p)), rng)]
            clouds.append((np.ascontiguousarray(p, dtype=np.float32), nv))
        has_pose = s.camera_poses is not None and bool(np.all(np.isfinite(s.camera_poses[[t, t + d], v])))
        a_from_b = (invert_pose(s.camera_poses[t, v]) @ s.camera_poses[t + d, v]) if has_pose else np.eye(4)
        N = len(clouds[0][0])
        sample = dict(points_a=clouds[0][0], points_b=clouds[1][0],
                      labels_a=np.full(N, BACKGROUND_LABEL, np.int64),
                      labels_b=np.full(len(clouds[1][0]), BACKGROUND_LABEL, np.int64),
                      num_valid_a=clouds[0][1], num_valid_b=clouds[1][1],
                      a_from_b=a_from_b.astype(np.float32),
                      object_a_from_b=np.zeros((0, 4, 4), np.float32), object_valid=np.zeros(0, bool),
                      gap=d, has_pose=has_pose, sequence=s.name, view=v, frame=t)
        if self.transform is not None:
            sample = self.transform(sample, rng)
        return sample


# --------------------------------------------------------------------------------------------- collate

def collate_pairs(samples: list[dict]) -> dict:
    """Stack a list of pair (or frame) sample dicts into a batch dict: torch's ``default_collate``.

    Arrays become tensors with a leading B (``points_a`` -> (B, N, 3) float32, ``a_from_b`` -> (B, 4, 4),
    ``object_a_from_b`` -> (B, K_max, 4, 4), ``labels_a`` -> (B, N) int64); ints and bools become (B,)
    tensors (``gap`` int64, ``has_pose`` bool); strings stay lists.

    Raises:
        ValueError: the samples have different keys, or arrays of different shapes (e.g. clouds of
            different N: set ``num_points`` on the Dataset); names the key and the shapes.
    """
    if not samples:
        raise ValueError("collate: empty batch")
    for key, first in samples[0].items():
        try:
            values = [s[key] for s in samples]
        except KeyError:
            raise ValueError(f"collate: key {key!r} missing from some samples") from None
        shapes = {v.shape for v in values} if isinstance(first, np.ndarray) else ()
        if len(shapes) > 1:
            raise ValueError(f"collate: {key!r} has different shapes in one batch {sorted(shapes)} "
                             "(set num_points on the Dataset to get equal N)")
    return default_collate(samples)
