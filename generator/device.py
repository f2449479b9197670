"""The sensor model, back-projection and point sampling of a batch of views as torch code on one device.

The GPU path of :func:`synthseq.generator.sequence.generate_sequence` (``device="cuda"``): the rendered
batch (T x V views from one readback of the ``moderngl`` atlas) is uploaded once, the Kinect model
(:func:`synthseq.generator.sensor.kinect_model`, the same code as the numpy path), the choice of N points per
view, their back-projection and normals run on the device, and only the N sampled points per view (plus
the images the config stores) come back. Random words come from a ``torch.Generator`` on the device seeded
from the sequence seed: deterministic for a given device, but not equal to the numpy path's stream (the
numpy path is the reference; tests/test_sensor.py checks that both compute the same function of the same
random words).

torch is imported lazily: ``import synthseq.generator`` never imports it.
"""

from __future__ import annotations

import numpy as np

from synthseq.types import BACKGROUND_LABEL, Camera

# Neighbours whose z differs by more than this fraction of z are across a depth edge (as the numpy path).
_NORMAL_EDGE_FRACTION = 0.1


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the torch device path needs torch: pip install 'synthseq[torch]'") from e
    return torch


def device_generator(seed: int, device):
    """A ``torch.Generator`` on ``device`` seeded from the sequence seed (its own stream, [seed, 3])."""
    torch = _torch()
    state = int(np.random.SeedSequence([int(seed), 3]).generate_state(1, np.uint64)[0] >> np.uint64(1))
    gen = torch.Generator(device=device)
    gen.manual_seed(state)
    return gen


def sensor_batch(depth, instance, camera: Camera, cfg, gen):
    """The sensor model on a (B, H, W) batch of tensors (float32 depth, int instance) on one device.

    Returns:
        depth (B, H, W) float32 (0 = invalid) and instance (B, H, W) int16 (-1 = invalid), on the device.
    """
    torch = _torch()
    from synthseq.generator.sensor import ArrayOps, kinect_model

    if cfg.model == "ideal":
        return depth.to(torch.float32).clone(), instance.to(torch.int16).clone()
    words = torch.randint(0, 1 << 16, (4, *depth.shape), generator=gen, device=depth.device, dtype=torch.int32)
    return kinect_model(depth, instance, words, camera, cfg, ArrayOps("torch"))


def sample_views(depth, instance, K: np.ndarray, num_points: int, gen, ideal_depth=None, ideal_instance=None):
    """Pick exactly N valid pixels of each of B views and back-project them (the batched ``sample_view``).

    Without replacement and in random order when a view has M >= N valid pixels; otherwise its M valid
    pixels first (shuffled), then random repeats: the contract of ``synthseq.types.sample_fixed``.

    Args:
        depth: (B, H, W) float32 tensor after the sensor model, 0 = invalid.
        instance: (B, H, W) int tensor.
        K: (3, 3) intrinsics.
        num_points: N.
        gen: the device generator.
        ideal_depth, ideal_instance: (B, H, W) the clean render for normals; None = no normals.

    Returns:
        points (B, N, 3) float32, labels (B, N) int16, normals (B, N, 3) float32 or None, num_valid (B,)
        int32; all tensors on the device. Views with no valid pixel: zero points/normals, labels -1.
    """
    torch = _torch()
    B, H, W = depth.shape
    dev = depth.device
    flat = depth.reshape(B, H * W)
    valid = flat > 0
    M = valid.sum(dim=1)
    # Random keys made unique by the pixel index in their low bits: torch.rand would tie (76,800 draws from
    # 2^24 values) and topk may order ties differently from run to run on a GPU. Invalid pixels sort last.
    index_bits = max(1, (H * W - 1).bit_length())
    keys = torch.randint(0, 1 << (62 - index_bits), (B, H * W), generator=gen, device=dev, dtype=torch.int64)
    keys = (keys << index_bits) | torch.arange(H * W, device=dev)[None, :]
    keys = keys | (~valid).to(torch.int64) << 62  # valid pixels first, in random order
    k = min(num_points, H * W)
    order = torch.topk(keys, k, dim=1, largest=False, sorted=True).indices  # (B, k)
    j = torch.arange(num_points, device=dev)[None, :].expand(B, num_points)
    # uniform in [0, M) (an integer draw: float32 rand * M can round up to M); the modulo bias is < 2^-40
    repeats = torch.randint(0, 1 << 62, (B, num_points), generator=gen, device=dev, dtype=torch.int64)
    repeats = torch.remainder(repeats, M.clamp(min=1)[:, None])
    src = torch.where(j < M[:, None], j, repeats).clamp(max=k - 1)
    pix = order.gather(1, src)  # (B, N) flat pixel indices
    rows, cols = pix // W, pix % W
    z = flat.gather(1, pix)
    points = backproject(rows, cols, z, K).to(torch.float32)
    labels = instance.reshape(B, H * W).gather(1, pix).to(torch.int16)
    empty = (M == 0)[:, None]
    points = points * ~empty[..., None]
    labels = torch.where(empty, torch.full_like(labels, BACKGROUND_LABEL), labels)
    normals = None
    if ideal_depth is not None:
        normals = depth_normals(ideal_depth, ideal_instance, rows, cols, K) * ~empty[..., None]
    return points, labels, normals, M.to(torch.int32)


def backproject(rows, cols, z, K: np.ndarray):
    """The torch twin of :func:`synthseq.geometry.backproject`: pixel rows, cols and z-depth tensors of one
    shape (...) -> (..., 3) camera-frame points (OpenCV axes), in z's dtype."""
    torch = _torch()
    fx, fy, cx, cy = (float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]))
    return torch.stack([(cols - cx) / fx * z, (rows - cy) / fy * z, z], dim=-1)


def depth_normals(depth, instance, rows, cols, K: np.ndarray):
    """Surface normals at (B, N) pixels of (B, H, W) z-depth tensors: the torch twin of
    :func:`synthseq.generator.sequence.depth_normals` (same rule: central differences on the same surface,
    one-sided where only one neighbour is, facing the camera, -ray where no neighbour pair is usable).

    Returns:
        (B, N, 3) float32 unit normals, OpenCV camera frame.
    """
    torch = _torch()
    B, H, W = depth.shape
    fd = depth.reshape(B, 1, H * W).to(torch.float64)
    fi = instance.reshape(B, 1, H * W)
    z0 = fd[:, 0].gather(1, rows * W + cols)  # (B, N)
    p = backproject(rows, cols, z0, K)  # (B, N, 3)
    dr = torch.tensor([0, 0, 1, -1], device=depth.device)[None, :, None]
    dc = torch.tensor([1, -1, 0, 0], device=depth.device)[None, :, None]
    r = rows[:, None, :] + dr  # (B, 4, N): +u, -u, +v, -v
    c = cols[:, None, :] + dc
    inb = (r >= 0) & (r < H) & (c >= 0) & (c < W)
    r, c = r.clamp(0, H - 1), c.clamp(0, W - 1)
    idx = (r * W + c).reshape(B, -1)
    zn = fd[:, 0].gather(1, idx).reshape(r.shape)
    same = fi[:, 0].gather(1, idx).reshape(r.shape) == fi[:, 0].gather(1, rows * W + cols)[:, None, :]
    ok = inb & (zn > 0) & same & ((zn - z0[:, None]).abs() <= _NORMAL_EDGE_FRACTION * z0[:, None])
    pn = backproject(r, c, zn, K)  # (B, 4, N, 3) the four neighbours
    xs = torch.where(ok, pn[..., 0], p[:, None, :, 0])
    ys = torch.where(ok, pn[..., 1], p[:, None, :, 1])
    zs = torch.where(ok, zn, z0[:, None])
    u = torch.stack([xs[:, 0] - xs[:, 1], ys[:, 0] - ys[:, 1], zs[:, 0] - zs[:, 1]], dim=-1)
    v = torch.stack([xs[:, 2] - xs[:, 3], ys[:, 2] - ys[:, 3], zs[:, 2] - zs[:, 3]], dim=-1)
    n = torch.cross(u, v, dim=-1)
    norm = n.norm(dim=-1)
    good = (ok[:, 0] | ok[:, 1]) & (ok[:, 2] | ok[:, 3]) & (z0 > 0) & (norm > 1e-12)
    facing = (n * p).sum(-1)
    n = n * (torch.where(facing > 0, -1.0, 1.0) / torch.where(good, norm, torch.ones_like(norm)))[..., None]
    ray = backproject(rows, cols, torch.ones_like(z0), K)
    ray = -ray / ray.norm(dim=-1, keepdim=True)
    return torch.where(good[..., None], n, ray).to(torch.float32)
