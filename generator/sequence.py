"""One sequence end to end: ``SceneSpec`` -> meshes -> poses -> depth + instance per (frame, view) -> sensor
model -> fixed-size camera-frame point clouds with labels -> :class:`~synthseq.types.PointSequence`.

The public API used by the build (``pipelines/build.py``)::

    spec = make_spec(cfg.generate, root_seed, index)      # cheap, plain data, sent to a Ray task
    seq = generate_sequence(spec, renderer=renderer)       # the same spec gives identical arrays anywhere
"""

from __future__ import annotations

import logging

import numpy as np

from synthseq.generator.assets import object_geometry, room_geometry
from synthseq.generator.scene import SceneSpec, make_spec, sequence_seed, static_render_meshes
from synthseq.geometry import backproject
from synthseq.types import BACKGROUND_LABEL, PointSequence, sample_fixed

logger = logging.getLogger(__name__)

__all__ = ["SceneSpec", "generate_sequence", "make_spec", "sequence_seed", "sample_view", "sample_views"]

# Neighbours whose z differs by more than this fraction of z are across a depth edge (normal estimation).
_NORMAL_EDGE_FRACTION = 0.1
_NEIGHBOUR_DR = np.array([0, 0, 1, -1])
_NEIGHBOUR_DC = np.array([1, -1, 0, 0])


# Frames rendered and noised together: bounds the images held at once (~12 bytes per pixel) whatever T is.
# On a device, bigger chunks mean fewer GL draws, readbacks and kernel launches per sequence.
_CHUNK_PIXELS = 1 << 22
_DEVICE_CHUNK_PIXELS = 1 << 25
_NORMAL_BLOCK_POINTS = 8192  # points per depth_normals call in sample_views (its arrays stay in L2)


def _sensor_rng(seed: int) -> np.random.Generator:
    """The stream for sensor noise: independent of make_spec's ``default_rng(seed)`` and of the sampling."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), 1]))


def _sampling_rng(seed: int) -> np.random.Generator:
    """The stream that picks the N points of each view (kept apart from the sensor stream, so that how frames
    are grouped into batches changes nothing)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), 2]))


def depth_normals(depth: np.ndarray, instance: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                  K: np.ndarray, images: np.ndarray | None = None) -> np.ndarray:
    """Surface normals at some pixels of a z-depth image, from the back-projected 4-neighbourhood.

    Tangents are central differences where both neighbours lie on the same surface (same instance, z within
    10 %), one-sided where only one does. Normals face the camera (n . p < 0). Pixels with no usable neighbour
    pair (or no depth) get the direction back to the camera, -p / |p|.

    Args:
        depth: (H, W) float z-depth, metres, 0 = none (the ideal, pre-sensor render), or (B, H, W) images.
        instance: (H, W) or (B, H, W) int instance ids.
        rows, cols: (M,) int pixel coordinates.
        K: (3, 3) intrinsics.
        images: (M,) int index of each pixel's image when ``depth`` is (B, H, W) (many views in one call:
            the per-call overhead of ~40 small array operations is paid once).

    Returns:
        (M, 3) float64 unit normals, OpenCV camera frame.
    """
    H, W = depth.shape[-2:]
    flat_depth = depth.reshape(-1)
    flat_instance = instance.reshape(-1)
    base = 0 if images is None else images * (H * W)  # flat offset of each pixel's image
    centre = rows * W + cols + base
    # synthseq.geometry.backproject's arithmetic, on contiguous component arrays (x, y, z apart), not (M, 3)
    # stacks: numpy's per-call overhead dominates at M ~ 2000, and strided components cost every later pass
    Kd = np.asarray(K, dtype=np.float64)
    fx, fy, cx, cy = Kd[0, 0], Kd[1, 1], Kd[0, 2], Kd[1, 2]
    z0 = flat_depth[centre].astype(np.float64)
    x0 = (cols - cx) / fx * z0
    y0 = (rows - cy) / fy * z0
    # The 4 neighbours at once (rows of these (4, M) arrays): +u, -u, +v, -v.
    r = rows[None, :] + _NEIGHBOUR_DR[:, None]
    c = cols[None, :] + _NEIGHBOUR_DC[:, None]
    inb = (r >= 0) & (r < H) & (c >= 0) & (c < W)
    r = np.minimum(np.maximum(r, 0), H - 1)
    c = np.minimum(np.maximum(c, 0), W - 1)
    idx = r * W + c + base
    zn = flat_depth[idx].astype(np.float64)
    ok = (inb & (zn > 0) & (flat_instance[idx] == flat_instance[centre][None, :])
          & (np.abs(zn - z0) <= _NORMAL_EDGE_FRACTION * z0))
    # A neighbour off the surface is replaced by the centre point itself: central differences where both
    # sides are on the surface, one-sided where one is, a zero tangent where none is.
    xs = np.where(ok, (c - cx) / fx * zn, x0)
    ys = np.where(ok, (r - cy) / fy * zn, y0)
    zs = np.where(ok, zn, z0)
    ux, uy, uz = xs[0] - xs[1], ys[0] - ys[1], zs[0] - zs[1]
    vx, vy, vz = xs[2] - xs[3], ys[2] - ys[3], zs[2] - zs[3]
    n = np.empty((len(rows), 3))
    n[:, 0] = uy * vz - uz * vy
    n[:, 1] = uz * vx - ux * vz
    n[:, 2] = ux * vy - uy * vx
    norm = np.sqrt((n * n).sum(axis=1))
    good = (ok[0] | ok[1]) & (ok[2] | ok[3]) & (z0 > 0) & (norm > 1e-12)
    # Unit length, facing the camera (n . p < 0); pixels without a usable neighbourhood get -ray.
    facing = n[:, 0] * x0 + n[:, 1] * y0 + n[:, 2] * z0
    n *= (np.where(facing > 0, -1.0, 1.0) / np.where(good, norm, 1.0))[:, None]
    if not good.all():
        bad = ~good
        ray = backproject(rows[bad], cols[bad], np.ones(bad.sum()), K)
        n[bad] = -ray / np.linalg.norm(ray, axis=-1, keepdims=True)
    return n


def sample_view(depth: np.ndarray, instance: np.ndarray, K: np.ndarray, num_points: int,
                rng: np.random.Generator, ideal_depth: np.ndarray | None = None,
                ideal_instance: np.ndarray | None = None):
    """Back-project one depth image and sample exactly ``num_points`` of its valid pixels.

    Only the sampled pixels are back-projected (the same points, in the same order, as
    ``backproject_depth(depth, K)[0][sample_fixed(N, M, rng)]``).

    Args:
        depth: (H, W) float z-depth after the sensor model, metres, 0 = invalid.
        instance: (H, W) int instance ids after the sensor model.
        K: (3, 3) intrinsics.
        num_points: N.
        rng: picks the points.
        ideal_depth, ideal_instance: (H, W) the clean render, for normals; None = no normals.

    Returns:
        points (N, 3) float32 camera frame; labels (N,) int16; normals (N, 3) float32 or None; num_valid int.
        With no valid pixel: zero points and normals, labels -1.
    """
    flat = depth.reshape(-1)
    valid = np.flatnonzero(flat > 0)  # NaN compares False: invalid too
    M = len(valid)
    if M == 0:
        normals = np.zeros((num_points, 3), np.float32) if ideal_depth is not None else None
        return (np.zeros((num_points, 3), np.float32), np.full(num_points, BACKGROUND_LABEL, np.int16),
                normals, 0)
    pix = valid[sample_fixed(num_points, M, rng)]
    W = depth.shape[1]
    rows, cols = pix // W, pix % W
    points = backproject(rows, cols, depth[rows, cols], K).astype(np.float32)
    labels = instance.reshape(-1)[pix].astype(np.int16)
    normals = None
    if ideal_depth is not None:
        normals = depth_normals(ideal_depth, ideal_instance, rows, cols, K).astype(np.float32)
    return points, labels, normals, M


def sample_views(depth: np.ndarray, instance: np.ndarray, K: np.ndarray, num_points: int,
                 rng: np.random.Generator, ideal_depth: np.ndarray | None = None,
                 ideal_instance: np.ndarray | None = None):
    """:func:`sample_view` over B views: the same points, labels and normals, drawing the same random numbers
    in view order; only the draw of N indices (each view has its own M) is per view, the gathers,
    back-projection and normals are array code over the batch.

    Args:
        depth, instance: (B, H, W) after the sensor model. ideal_depth, ideal_instance: (B, H, W) or None.

    Returns:
        points (B, N, 3) float32, labels (B, N) int16, normals (B, N, 3) float32 or None, num_valid (B,) int32.
    """
    B, H, W = depth.shape
    flat_depth, flat_instance = depth.reshape(-1), instance.reshape(-1)
    return _sample_valid(depth.reshape(B, H * W) > 0, lambda at: (flat_depth[at], flat_instance[at]), (H, W), K,
                         num_points, rng, ideal_depth, ideal_instance)


def _sample_valid(valid: np.ndarray, values_at, size: tuple, K: np.ndarray, num_points: int,
                  rng: np.random.Generator, ideal_depth=None, ideal_instance=None):
    """:func:`sample_views` given each view's valid pixels, (B, H * W) bool (NaN depth is invalid), and
    ``values_at(flat)``: (depth, instance) at flat pixel indices of the B images (what a lazy sensor block
    computes only where asked)."""
    B = len(valid)
    H, W = size
    pix = np.zeros((B, num_points), np.int64)
    num_valid = np.zeros(B, np.int32)
    for b in range(B):
        ok = np.flatnonzero(valid[b])
        num_valid[b] = len(ok)
        if len(ok):
            pix[b] = ok[sample_fixed(num_points, len(ok), rng)]
    images = np.repeat(np.arange(B), num_points)
    pix_flat = pix.reshape(-1)
    rows, cols = pix_flat // W, pix_flat % W
    at = images * (H * W) + pix_flat
    z, inst = values_at(at)
    points = backproject(rows, cols, z, K).astype(np.float32)
    labels = inst.astype(np.int16)
    empty = np.repeat(num_valid == 0, num_points)
    points[empty] = 0.0  # pixel 0 of an empty view: its depth is 0 anyway
    labels[empty] = BACKGROUND_LABEL
    normals = None
    if ideal_depth is not None:
        # in blocks of points: ~40 array passes over (4, M) float64 arrays that stay in L2 cost ~1.6x less
        # than over a whole sequence's points (measured); every point's normal is its own, so the same values
        normals = np.empty((len(rows), 3), np.float32)
        for s in range(0, len(rows), _NORMAL_BLOCK_POINTS):
            e = s + _NORMAL_BLOCK_POINTS
            normals[s:e] = depth_normals(ideal_depth, ideal_instance, rows[s:e], cols[s:e], K, images[s:e])
        normals[empty] = 0.0
        normals = normals.reshape(B, num_points, 3)
    return points.reshape(B, num_points, 3), labels.reshape(B, num_points), normals, num_valid


def _noise_and_sample(ideal, ideal_inst, camera, sensor, sensor_rng, K, num_points, sample_rng, normals: bool):
    """The sensor model and the sampling of B views without whole noisy images (nothing stored needs them):
    :func:`~synthseq.generator.sensor.sensor_blocks` gives each block's valid pixels and the depth and
    instance at the sampled ones; the same values as apply_sensor_batch then sample_views (tested)."""
    from synthseq.generator.sensor import sensor_blocks

    parts = []
    for b0, b1, valid, values_at in sensor_blocks(ideal, ideal_inst, camera, sensor, sensor_rng):
        B = b1 - b0
        parts.append(_sample_valid(valid.reshape(B, -1), values_at, ideal.shape[1:], K, num_points, sample_rng,
                                   ideal[b0:b1] if normals else None, ideal_inst[b0:b1]))
    points, labels, nrm, num_valid = (None if x[0] is None else np.concatenate(x) for x in zip(*parts))
    return points, labels, nrm, num_valid


def _render_key(obj) -> str:
    """Renderer cache key of an object: its name plus a digest of its ObjectSpec, which determines its geometry
    (the same name from another build - another config, same index - is other geometry)."""
    import hashlib

    return f"{obj.name}@{hashlib.sha1(repr(obj).encode()).hexdigest()[:12]}"


def generate_sequence(spec: SceneSpec, renderer=None, device=None) -> PointSequence:
    """Render, add sensor noise and sample one sequence.

    Frames are rendered in chunks of T x V views per renderer call (``render_frames``); the sensor model
    runs on each chunk as array code, then N points are drawn per view.

    Args:
        spec: from :func:`make_spec`.
        renderer: a :class:`~synthseq.generator.render.base.Renderer` to reuse across sequences (its
            ``render_frames`` / ``render_views`` is used when it has one); None creates ``spec.renderer``
            and closes it after.
        device: None (numpy on the CPU: the reference path) or a torch device (``"cuda"``, ``"cuda:1"``,
            ``"cpu"``): sensor model, sampling, back-projection and normals run there as torch code
            (:mod:`synthseq.generator.device`); deterministic per device, a different random stream from
            the numpy path.

    Returns:
        A :class:`~synthseq.types.PointSequence`: points (T, V, N, 3) float32 camera frame, num_valid
        (T, V), labels (T, V, N) int16 (object index k, -1 room/background), normals (T, V, N, 3) float16 if
        ``spec.store_normals``, depth (T, V, H, W) uint16 mm / instance (T, V, H, W) int16 if stored,
        camera_poses (T, V, 4, 4) world_from_camera (OpenCV), object_poses (T, K, 4, 4) world_from_object,
        intrinsics (V, 3, 3), image_size (V, 2) (W, H), timestamps (T,), meshes (canonical geometry per object
        name, object frame, metres), seed = spec.seed.
    """
    from synthseq.generator.render import RenderMesh, make_renderer
    from synthseq.generator.render.base import render_frames
    from synthseq.generator.sensor import apply_sensor_batch

    own = renderer is None
    if own:
        renderer = make_renderer(spec.renderer)
    try:
        T, V, N, K = spec.num_frames, spec.num_views, spec.num_points, spec.num_objects
        geometries = [object_geometry(o) for o in spec.objects]
        meshes = [RenderMesh(v, f, np.eye(4), k, key=_render_key(o))
                  for k, (o, (v, f)) in enumerate(zip(spec.objects, geometries))]
        object_poses = spec.object_poses()
        world_from_meshes = object_poses
        if spec.room_size is not None:
            rv, rf = room_geometry(spec.room_size, spec.room_ceiling)
            sx, sy, sz = spec.room_size
            meshes.append(RenderMesh(rv, rf, np.eye(4), BACKGROUND_LABEL,
                                     key=f"room_{sx:.6g}_{sy:.6g}_{sz:.6g}_{int(spec.room_ceiling)}"))
        # static furniture and clutter (indoor scenes): world-frame meshes, background label, never moving
        meshes.extend(static_render_meshes(spec))
        if len(meshes) > K:
            world_from_meshes = np.concatenate(
                [object_poses, np.broadcast_to(np.eye(4), (T, len(meshes) - K, 4, 4))], axis=1)
        camera_poses = spec.camera_poses()
        camera = spec.cameras.camera()
        Kmat = camera.intrinsics
        H, W = camera.height, camera.width
        sensor_rng, sample_rng = _sensor_rng(spec.seed), _sampling_rng(spec.seed)

        points = np.zeros((T, V, N, 3), np.float32)
        labels = np.zeros((T, V, N), np.int16)
        num_valid = np.zeros((T, V), np.int32)
        normals = np.zeros((T, V, N, 3), np.float16) if spec.store_normals else None
        depth_mm = np.zeros((T, V, H, W), np.uint16) if spec.store_depth else None
        instance = np.zeros((T, V, H, W), np.int16) if spec.store_instance else None
        chunk = max(1, (_CHUNK_PIXELS if device is None else _DEVICE_CHUNK_PIXELS) // (V * H * W))
        if device is not None:
            from synthseq.generator import device as on_device

            gen = on_device.device_generator(spec.seed, device)
        for t0 in range(0, T, chunk):
            t1 = min(T, t0 + chunk)
            ideal, ideal_inst = render_frames(renderer, meshes, world_from_meshes[t0:t1], camera,
                                              camera_poses[t0:t1])
            B = (t1 - t0) * V
            ideal, ideal_inst = ideal.reshape(B, H, W), ideal_inst.reshape(B, H, W)
            if device is not None:
                import torch

                ideal_t = torch.from_numpy(ideal).to(device)
                inst_t = torch.from_numpy(ideal_inst).to(device)
                d_t, i_t = on_device.sensor_batch(ideal_t, inst_t, camera, spec.sensor, gen)
                p, lab, nrm, m = on_device.sample_views(d_t, i_t, Kmat, N, gen,
                                                        ideal_t if spec.store_normals else None, inst_t)
                points[t0:t1] = p.cpu().numpy().reshape(t1 - t0, V, N, 3)
                labels[t0:t1] = lab.cpu().numpy().reshape(t1 - t0, V, N)
                num_valid[t0:t1] = m.cpu().numpy().reshape(t1 - t0, V)
                if normals is not None:
                    normals[t0:t1] = nrm.cpu().numpy().reshape(t1 - t0, V, N, 3)
                d = d_t.cpu().numpy() if depth_mm is not None else None
                inst = i_t.cpu().numpy() if instance is not None else None
            else:
                if depth_mm is None and instance is None:  # no noisy image is stored: only what is sampled
                    p, lab, nrm, m = _noise_and_sample(ideal, ideal_inst, camera, spec.sensor, sensor_rng, Kmat, N,
                                                       sample_rng, spec.store_normals)
                    d = inst = None
                else:
                    d, inst = apply_sensor_batch(ideal, ideal_inst, camera, spec.sensor, sensor_rng)
                    p, lab, nrm, m = sample_views(d, inst, Kmat, N, sample_rng,
                                                  ideal if spec.store_normals else None, ideal_inst)
                points[t0:t1] = p.reshape(t1 - t0, V, N, 3)
                labels[t0:t1] = lab.reshape(t1 - t0, V, N)
                num_valid[t0:t1] = m.reshape(t1 - t0, V)
                if normals is not None:
                    normals[t0:t1] = nrm.reshape(t1 - t0, V, N, 3)
            if depth_mm is not None:
                depth_mm[t0:t1] = np.clip(np.rint(d * 1000.0), 0, 65535).reshape(t1 - t0, V, H, W)
            if instance is not None:
                instance[t0:t1] = inst.reshape(t1 - t0, V, H, W)
        return PointSequence(
            points=points, num_valid=num_valid,
            intrinsics=np.repeat(Kmat[None], V, axis=0),
            image_size=np.tile(np.array([[W, H]], np.int32), (V, 1)),
            timestamps=spec.times(), camera_poses=camera_poses, labels=labels, object_poses=object_poses,
            normals=normals, depth=depth_mm, instance=instance,
            object_names=spec.object_names,
            meshes={o.name: g for o, g in zip(spec.objects, geometries)},
            seed=int(spec.seed), fps=float(spec.fps), name=spec.name)
    finally:
        if own:
            renderer.close()
