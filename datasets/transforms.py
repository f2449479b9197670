"""Sample transforms for the pair/frame Datasets: resampling, centre/scale normalisation, rigid augmentation.

A transform is a callable ``transform(sample, rng) -> sample`` on the numpy sample dicts of
``synthseq.datasets.torch`` (keys ``points_a``, ``points_b``, ``a_from_b``, ...); ``rng`` is the
per-sample ``np.random.Generator`` the Dataset derives from (seed, epoch, index), so a transform never
touches a global RNG and the same seed gives the same samples with any number of DataLoader workers.

Every transform keeps the ground truth consistent with the points it changes: after any chain of them,
``points_a ~ a_from_b @ points_b`` still holds on overlapping surface (and ``object_a_from_b[k]`` for the
points of object k). Pure numpy: importing this module does not import torch.

Pose conventions under normalisation (``Normalize``): with one centre ``c`` (3,) and scale ``s`` shared by
both clouds of a pair, ``p' = (p - c) / s``, a transform ``a_from_b = [R | t]`` becomes
``[R | (R c + t - c) / s]`` in normalised coordinates. A pose ``[R' | t']`` predicted in normalised
coordinates maps back to metres as ``[R' | s t' + c - R' c]`` - see ``denormalize_pose``. Rotations are
unchanged, because the centre and scale are shared by the two clouds.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from synthseq.geometry import invert_pose, random_rotation, transform_points
from synthseq.types import sample_fixed

Sample = dict
Transform = Callable[[Sample, np.random.Generator], Sample]

# Keys that hold per-point arrays of cloud a / cloud b (resampled together with the points).
_PER_POINT_A = ("points_a", "labels_a", "normals_a")
_PER_POINT_B = ("points_b", "labels_b", "normals_b")


class Compose:
    """Apply transforms in order: ``Compose([Resample(1024), RandomRigid(), Normalize()])``."""

    def __init__(self, transforms: Iterable[Transform]):
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        for t in self.transforms:
            sample = t(sample, rng)
        return sample

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class Resample:
    """Resample each cloud of the sample to exactly ``num_points`` rows (with ``sample_fixed``: without
    replacement when the cloud has enough points, otherwise all points then random repeats). Labels and
    normals follow their points. Works on pair samples (``points_a``/``points_b``) and frame samples
    (``points``)."""

    def __init__(self, num_points: int):
        if int(num_points) <= 0:
            raise ValueError(f"Resample: num_points must be positive, got {num_points}")
        self.num_points = int(num_points)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        out = dict(sample)
        for keys in (_PER_POINT_A, _PER_POINT_B, ("points", "labels", "normals")):
            if keys[0] not in sample:
                continue
            n = len(sample[keys[0]])
            idx = sample_fixed(self.num_points, n, rng)
            for k in keys:
                if k in sample and sample[k] is not None:
                    arr = np.asarray(sample[k])
                    out[k] = arr[idx] if n else np.zeros((self.num_points,) + arr.shape[1:], arr.dtype)
        return out

    def __repr__(self) -> str:
        return f"Resample({self.num_points})"


def normalize_pose(a_from_b: np.ndarray, centre: np.ndarray, scale: float) -> np.ndarray:
    """Express (..., 4, 4) metric transforms in the coordinates ``p' = (p - centre) / scale`` shared by
    both frames: ``[R | t] -> [R | (R c + t - c) / s]``."""
    a_from_b = np.asarray(a_from_b)
    c = np.asarray(centre, dtype=a_from_b.dtype)
    out = a_from_b.copy()
    R = a_from_b[..., :3, :3]
    out[..., :3, 3] = ((R @ c) + a_from_b[..., :3, 3] - c) / scale
    return out


def denormalize_pose(a_from_b_normalized, centre, scale):
    """Map (..., 4, 4) transforms predicted in normalised coordinates back to metres:
    ``[R' | t'] -> [R' | s t' + c - R' c]``. The inverse of ``normalize_pose``.

    Works on numpy arrays and on torch tensors (``centre`` (..., 3) and ``scale`` (...) broadcast over a
    batch, e.g. the collated ``norm_centre`` (B, 3) and ``norm_scale`` (B,)).
    """
    T = a_from_b_normalized
    R = T[..., :3, :3]
    t = T[..., :3, 3]
    out = T.clone() if hasattr(T, "clone") else np.array(T, copy=True)
    scale = scale[..., None] if hasattr(scale, "ndim") and scale.ndim > 0 else scale
    out[..., :3, 3] = scale * t + centre - (R @ centre[..., None])[..., 0]
    return out


class Normalize:
    """Centre and scale the two clouds of a pair with ONE shared centre and scale, so the pose between
    them stays rigid (rotation unchanged; translation transformed as in ``normalize_pose``).

    ``centre`` is the mean of the valid points of cloud a (``mode='a'``, default: the reference frame the
    pose maps into) or of both clouds (``mode='both'``); ``scale`` is the largest distance of a point of
    either cloud from the centre (the pair fits the unit ball). Adds ``norm_centre`` (3,) float32 and
    ``norm_scale`` () float32 to the sample, and rewrites ``a_from_b`` and ``object_a_from_b``. Use
    ``denormalize_pose(pred, sample['norm_centre'], sample['norm_scale'])`` to bring predictions back to
    metres. Frame samples (``points``) are centred on their own mean.
    """

    def __init__(self, mode: str = "a", min_scale: float = 1e-6):
        if mode not in ("a", "both"):
            raise ValueError(f"Normalize: mode must be 'a' or 'both', got {mode!r}")
        self.mode = mode
        self.min_scale = float(min_scale)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        out = dict(sample)
        if "points_a" not in sample:
            p = np.asarray(sample["points"], np.float64)
            c = p.mean(axis=0) if len(p) else np.zeros(3)
            s = max(float(np.max(np.linalg.norm(p - c, axis=1), initial=0.0)), self.min_scale)
            out["points"] = ((p - c) / s).astype(np.float32)
            out["norm_centre"] = c.astype(np.float32)
            out["norm_scale"] = np.float32(s)
            return out
        pa = np.asarray(sample["points_a"], np.float64)
        pb = np.asarray(sample["points_b"], np.float64)
        ref = pa if self.mode == "a" else np.concatenate([pa, pb])
        c = ref.mean(axis=0) if len(ref) else np.zeros(3)
        both = np.concatenate([pa, pb])
        s = max(float(np.max(np.linalg.norm(both - c, axis=1), initial=0.0)), self.min_scale)
        out["points_a"] = ((pa - c) / s).astype(np.float32)
        out["points_b"] = ((pb - c) / s).astype(np.float32)
        for key in ("a_from_b", "object_a_from_b", "camera_a_from_b"):
            if key in sample:
                out[key] = normalize_pose(np.asarray(sample[key], np.float64), c, s).astype(np.float32)
        out["norm_centre"] = c.astype(np.float32)
        out["norm_scale"] = np.float32(s)
        return out

    def __repr__(self) -> str:
        return f"Normalize(mode={self.mode!r})"


def random_rigid(rng: np.random.Generator, max_angle_deg: float, max_translation_m: float) -> np.ndarray:
    """A (4, 4) rigid transform: a rotation about a uniformly random axis by an angle uniform in
    [0, max_angle_deg] (uniform over SO(3) from 180 deg on; ``geometry.random_rotation``) and a translation
    uniform in the cube [-max_translation_m, max_translation_m]^3."""
    T = np.eye(4)
    T[:3, :3] = random_rotation(rng, None if max_angle_deg >= 180.0 else np.deg2rad(max_angle_deg))
    T[:3, 3] = rng.uniform(-max_translation_m, max_translation_m, size=3)
    return T


class RandomRigid:
    """Random rigid augmentation that keeps the ground truth consistent.

    Cloud a is moved by a random ``A`` and cloud b by ``B`` (``B = A`` when ``independent`` is False):
    ``p_a' = A p_a``, ``p_b' = B p_b``. The poses become ``a_from_b' = A @ a_from_b @ inv(B)`` (and the
    same for every ``object_a_from_b[k]``), so ``p_a' = a_from_b' p_b'`` wherever ``p_a = a_from_b p_b``.
    With ``independent=True`` the relative pose itself changes: this widens the pose distribution a pose
    network sees. Normals rotate with their points. The applied transforms are stored as
    ``aug_a_from_a`` / ``aug_b_from_b`` (4, 4) float32 (identity when absent), so evaluation can undo them.

    Frame samples (``points``) get one random transform; their ``world_from_camera`` becomes
    ``world_from_camera @ inv(A)`` and ``camera_from_object`` becomes ``A @ camera_from_object``.
    """

    def __init__(self, max_angle_deg: float = 180.0, max_translation_m: float = 0.0, independent: bool = False):
        self.max_angle_deg = float(max_angle_deg)
        self.max_translation_m = float(max_translation_m)
        self.independent = bool(independent)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        out = dict(sample)
        A = random_rigid(rng, self.max_angle_deg, self.max_translation_m)
        if "points_a" not in sample:
            out["points"] = transform_points(A, np.asarray(sample["points"], np.float64)).astype(np.float32)
            if sample.get("normals") is not None:
                out["normals"] = _rotate(A, sample["normals"])
            Ainv = invert_pose(A)
            if "world_from_camera" in sample:
                out["world_from_camera"] = (np.asarray(sample["world_from_camera"], np.float64) @ Ainv).astype(np.float32)
            if "camera_from_object" in sample:
                out["camera_from_object"] = (A @ np.asarray(sample["camera_from_object"], np.float64)).astype(np.float32)
            out["aug_from_camera"] = (A @ np.asarray(sample.get("aug_from_camera", np.eye(4)), np.float64)).astype(np.float32)
            return out
        B = random_rigid(rng, self.max_angle_deg, self.max_translation_m) if self.independent else A
        out["points_a"] = transform_points(A, np.asarray(sample["points_a"], np.float64)).astype(np.float32)
        out["points_b"] = transform_points(B, np.asarray(sample["points_b"], np.float64)).astype(np.float32)
        for key, M in (("normals_a", A), ("normals_b", B)):
            if sample.get(key) is not None:
                out[key] = _rotate(M, sample[key])
        Binv = invert_pose(B)
        for key in ("a_from_b", "object_a_from_b", "camera_a_from_b"):
            if key in sample:
                out[key] = (A @ np.asarray(sample[key], np.float64) @ Binv).astype(np.float32)
        # Compose with earlier augmentations so the stored transforms always map the original clouds.
        out["aug_a_from_a"] = (A @ np.asarray(sample.get("aug_a_from_a", np.eye(4)), np.float64)).astype(np.float32)
        out["aug_b_from_b"] = (B @ np.asarray(sample.get("aug_b_from_b", np.eye(4)), np.float64)).astype(np.float32)
        return out

    def __repr__(self) -> str:
        return (f"RandomRigid(max_angle_deg={self.max_angle_deg}, max_translation_m={self.max_translation_m}, "
                f"independent={self.independent})")


def _rotate(T: np.ndarray, normals: np.ndarray) -> np.ndarray:
    n = np.asarray(normals)
    return (n.astype(np.float64) @ T[:3, :3].T).astype(n.dtype)
