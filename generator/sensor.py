"""Depth sensor models applied to rendered depth: ``ideal`` (identity) and a Kinect-v1-like structured-light model.

The ``kinect`` model follows what is measured for the Kinect v1 (a structured-light sensor that measures
disparity against a projected IR pattern), applied in this order:

1. **Lateral noise** (pixel shift): every pixel takes the depth and instance of a neighbour at a random
   offset ``round(N(0, sigma_L))`` in u and v, sigma_L ~ 0.8 px of the Kinect's 640x480 IR image for surfaces
   not seen at grazing angles (Nguyen, Izadi & Lovell, "Modeling Kinect Sensor Noise for Improved 3D
   Reconstruction and Tracking", 3DIMPVT 2012, Fig. 6). The shift is given in Kinect IR pixels
   (``focal_px``) and scaled to the rendered camera by ``fx / focal_px``, so a 320x240 render shifts half
   as many of its own pixels.
2. **Axial noise**: ``z + N(0, sigma_z(z))`` with ``sigma_z(z) = 0.0012 + 0.0019 (z - 0.4)^2`` metres
   (Nguyen et al. 2012, eq. 6, fitted for 0.4-3 m at small angles), times ``axial_noise_scale``.
3. **Disparity quantisation**: the Kinect reports disparity ``d = baseline_m * focal_px / z`` in steps of
   ``1 / disparity_subpixel`` px (1/8 px on the Kinect v1; Khoshelham & Elberink, Sensors 2012), so
   ``z`` is snapped to ``baseline_m * focal_px / (round(d * s) / s)``: steps of about
   ``z^2 / (baseline_m * focal_px * s)``, ~2.9 mm at 1 m and ~46 mm at 4 m with the defaults.
4. **Range limits**: depth outside ``[min_depth_m, max_depth_m]`` becomes invalid.
5. **Random dropout** (``dropout_prob`` per pixel) and **edge dropout**: pixels within ``edge_width_px``
   of a depth discontinuity (a jump > ``edge_jump_m``, an instance change or a miss next to a hit) are
   dropped with ``edge_dropout_prob`` — the Kinect loses the pattern at object boundaries.

Invalid pixels get depth 0 and instance -1. All randomness comes from the ``rng`` given (no global RNG).
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from synthseq.config import bounded, from_dict
from synthseq.errors import ConfigError
from synthseq.types import Camera

logger = logging.getLogger(__name__)

SENSOR_MODELS = ("ideal", "kinect")

# Pixels per block of apply_sensor_batch (~3 views at 320x240: the arrays of one block stay in L2).
_SENSOR_BLOCK_PIXELS = 1 << 18


@dataclass(frozen=True)
class SensorConfig:
    """The ``generate.sensor`` section: which depth sensor model to apply and its parameters.

    Args:
        model: ``"ideal"`` (rendered depth unchanged) or ``"kinect"`` (Kinect-v1-like, module docstring).
        min_depth_m: closer depth is invalid (Kinect v1: ~0.4 m).
        max_depth_m: farther depth is invalid (Kinect v1 spec 4.5 m, usable to ~6 m).
        axial_noise_scale: multiplies sigma_z = 0.0012 + 0.0019 (z - 0.4)^2 m (Nguyen 2012); 0 = off.
        lateral_sigma_px: std of the random pixel shift in Kinect IR pixels (Nguyen 2012: ~0.8); 0 = off.
        baseline_m: projector-camera baseline of the disparity model (Kinect v1: 0.075 m).
        focal_px: focal length of the Kinect IR camera in its own pixels (Kinect v1: ~580 px at 640x480).
        disparity_subpixel: disparity steps per pixel (Kinect v1: 8, i.e. 1/8 px); 0 = no quantisation.
        dropout_prob: probability that any valid pixel is dropped.
        edge_dropout_prob: probability that a pixel near a depth discontinuity is dropped.
        edge_jump_m: a depth difference to a 4-neighbour larger than this is a discontinuity.
        edge_width_px: how far (pixels, Chebyshev) from a discontinuity a pixel counts as an edge pixel.
    """

    model: Literal["ideal", "kinect"] = "kinect"
    min_depth_m: float = bounded(0.4, ge=0)
    max_depth_m: float = bounded(5.0, gt=0)
    axial_noise_scale: float = bounded(1.0, ge=0)
    lateral_sigma_px: float = bounded(0.8, ge=0)
    baseline_m: float = bounded(0.075, gt=0)
    focal_px: float = bounded(580.0, gt=0)
    disparity_subpixel: int = bounded(8, ge=0)
    dropout_prob: float = bounded(0.005, ge=0, le=1)
    edge_dropout_prob: float = bounded(0.5, ge=0, le=1)
    edge_jump_m: float = bounded(0.05, gt=0)
    edge_width_px: int = bounded(1, ge=0)

    def __post_init__(self):
        if self.max_depth_m <= self.min_depth_m:
            raise ConfigError(
                f"sensor.max_depth_m: expected a value > min_depth_m ({self.min_depth_m}), got {self.max_depth_m}"
            )


def sensor_config_from(value, path: str = "generate.sensor") -> SensorConfig:
    """Build a :class:`SensorConfig` from what a YAML config holds at ``path``.

    Accepts a model name (``sensor: ideal`` / ``sensor: kinect``, defaults for the rest), a mapping of fields
    (``sensor: {model: kinect, dropout_prob: 0.01}``), None (defaults) or a SensorConfig.

    Raises:
        ConfigError: unknown model name, unknown key, wrong type or out-of-range value, naming the key path.
    """
    if isinstance(value, SensorConfig):
        return value
    if isinstance(value, str):
        if value not in SENSOR_MODELS:
            valid = ", ".join(repr(m) for m in SENSOR_MODELS)
            raise ConfigError(f"{path}: expected one of {valid} or a mapping, got {value!r}")
        return SensorConfig(model=value)  # type: ignore[arg-type]
    if value is not None and not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a model name ('ideal', 'kinect') or a mapping, got {value!r}")
    try:
        return from_dict(SensorConfig, value, path)
    except ConfigError as e:
        # __post_init__ cannot know the path; re-prefix its message.
        msg = str(e)
        if msg.startswith("sensor."):
            raise ConfigError(f"{path}.{msg[len('sensor.'):]}") from None
        raise


def axial_sigma_m(depth_m: np.ndarray) -> np.ndarray:
    """Kinect-v1 axial noise std for z-depth ``depth_m``: 0.0012 + 0.0019 (z - 0.4)^2 m (Nguyen et al. 2012)."""
    z = np.asarray(depth_m)
    return 0.0012 + 0.0019 * (z - 0.4) ** 2


def quantize_disparity(depth_m: np.ndarray, baseline_m: float, focal_px: float, subpixel: int) -> np.ndarray:
    """Snap z-depth to the depths a disparity sensor can report (steps of 1/subpixel px of disparity).

    Args:
        depth_m: (...) float, metres; values <= 0 stay 0.
        baseline_m, focal_px: the disparity model d = baseline_m * focal_px / z.
        subpixel: disparity steps per pixel; 0 returns a copy unchanged.

    Returns:
        (...) float32 quantised depth, metres.
    """
    z = np.asarray(depth_m, dtype=np.float32)
    if subpixel <= 0:
        return z.copy()
    bf = np.float32(baseline_m * focal_px)
    valid = z > 0
    steps = np.zeros_like(z)
    np.divide(bf * subpixel, z, out=steps, where=valid)
    steps = np.rint(steps)
    out = np.zeros_like(z)
    # A disparity of 0 steps would be infinitely far: invalid.
    np.divide(bf * subpixel, steps, out=out, where=valid & (steps > 0))
    return out


def edge_mask(depth_m: np.ndarray, instance: np.ndarray, jump_m: float, width_px: int) -> np.ndarray:
    """Pixels within ``width_px`` of a depth discontinuity (jump > ``jump_m``, instance change, hit/miss).

    Args:
        depth_m: (..., H, W) float, 0 = miss. instance: (..., H, W) int (numpy arrays or torch tensors).

    Returns:
        (..., H, W) bool, the same array type as the input.
    """
    hit = depth_m > 0
    edge = hit & False  # zeros of the right type, shape and device
    # 4-neighbour pairs along rows (axis -2) and columns (axis -1)
    for a, b in (((Ellipsis, slice(1, None), slice(None)), (Ellipsis, slice(None, -1), slice(None))),
                 ((Ellipsis, slice(None), slice(1, None)), (Ellipsis, slice(None), slice(None, -1)))):
        jump = (abs(depth_m[a] - depth_m[b]) > jump_m) | (instance[a] != instance[b]) | (hit[a] != hit[b])
        edge[a] |= jump
        edge[b] |= jump
    for _ in range(max(0, int(width_px) - 1)):  # grow by one pixel (3x3) per step
        grown = edge | False  # a copy
        grown[..., 1:, :] |= edge[..., :-1, :]
        grown[..., :-1, :] |= edge[..., 1:, :]
        rows = grown | False
        grown[..., :, 1:] |= rows[..., :, :-1]
        grown[..., :, :-1] |= rows[..., :, 1:]
        edge = grown
    if width_px <= 0:
        edge = hit & False
    return edge & hit


@functools.lru_cache(maxsize=1)
def _normal_table() -> np.ndarray:
    """(65536,) float32 standard-normal quantiles at (i + 0.5) / 65536, rescaled to unit variance."""
    from statistics import NormalDist

    inv_cdf = NormalDist().inv_cdf
    table = np.array([inv_cdf((i + 0.5) / 65536.0) for i in range(65536)], dtype=np.float64)
    table /= table.std()
    table = table.astype(np.float32)
    table.setflags(write=False)
    return table


@functools.lru_cache(maxsize=8)
def _rounded_normal_table(sigma: float) -> np.ndarray:
    """(65536,) int32 ``rint(sigma * q)`` for the quantiles q of :func:`_normal_table`: pixel shifts."""
    table = np.rint(_normal_table().astype(np.float64) * sigma).astype(np.int32)
    table.setflags(write=False)
    return table


def standard_normal16(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    """Standard-normal draws resolved to 2^16 quantiles (tails cut at 4.3 sigma), float32.

    Inverse-CDF lookup of uint16 draws: ~5x cheaper than ``rng.standard_normal`` at image sizes, which
    matters at hundreds of views per second; the truncation beyond 4.3 sigma is irrelevant for a sensor
    model whose own noise model is a fit.
    """
    return _normal_table().take(rng.integers(0, 1 << 16, size=shape, dtype=np.uint16))

def apply_sensor(
    depth_m: np.ndarray,
    instance: np.ndarray,
    camera: Camera,
    cfg: SensorConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply the sensor model to one rendered view (:func:`apply_sensor_batch` with B = 1).

    Args:
        depth_m: (H, W) float32 z-depth, metres, 0 = no surface.
        instance: (H, W) int16 instance ids, -1 = none.
        camera: the camera that rendered them (its fx scales the lateral noise).
        cfg: the sensor model and its parameters.
        rng: the only source of randomness (same state => same output).

    Returns:
        depth_m: (H, W) float32, new array; invalid (dropped, out of range) pixels are 0.
        instance: (H, W) int16, new array; -1 wherever depth is 0.

    Raises:
        ValueError: shapes differ or do not match the camera.
    """
    depth_m = np.asarray(depth_m)
    instance = np.asarray(instance)
    H, W = camera.height, camera.width
    if depth_m.shape != (H, W) or instance.shape != (H, W):
        raise ValueError(
            f"apply_sensor: expected depth and instance of shape (H, W) = {(H, W)}, "
            f"got {depth_m.shape} and {instance.shape}"
        )
    z, inst = apply_sensor_batch(depth_m[None], instance[None], camera, cfg, rng)
    return z[0], inst[0]


def apply_sensor_batch(
    depth_m: np.ndarray,
    instance: np.ndarray,
    camera: Camera,
    cfg: SensorConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply the sensor model to B rendered views at once (array code over the batch, no per-view loop).

    One uniform 64-bit draw per pixel (``rng.integers(0, 2**64, dtype=np.uint64)``: for the default PCG64
    generator, exactly its raw output, ``rng.bit_generator.random_raw``, drawn ~1.5x faster) gives the four
    16-bit random words the model uses (lateral row and column shift, axial noise quantile, dropout), so the
    stream consumed depends only on the number of pixels: splitting a sequence into batches differently gives
    identical output.

    Args:
        depth_m: (B, H, W) float32 z-depth, metres, 0 = no surface.
        instance: (B, H, W) int instance ids, -1 = none.
        camera: the camera of every view (its fx scales the lateral noise).
        cfg: the sensor model and its parameters.
        rng: the only source of randomness (same state => same output); ``ideal`` draws nothing.

    Returns:
        depth_m (B, H, W) float32 and instance (B, H, W) int16, new arrays; invalid pixels are 0 / -1.

    Raises:
        ValueError: shapes differ or do not match the camera.
    """
    depth_m = np.asarray(depth_m)
    instance = np.asarray(instance)
    H, W = camera.height, camera.width
    if depth_m.ndim != 3 or depth_m.shape[1:] != (H, W) or instance.shape != depth_m.shape:
        raise ValueError(
            f"apply_sensor_batch: expected depth and instance of shape (B, H, W) = (B, {H}, {W}), "
            f"got {depth_m.shape} and {instance.shape}"
        )
    if cfg.model == "ideal":
        return depth_m.astype(np.float32, copy=True), instance.astype(np.int16, copy=True)
    z_out = np.empty(depth_m.shape, np.float32)
    inst_out = np.empty(depth_m.shape, np.int16)
    # Cache blocking: ~40 array passes over a block that fits in L2 cost ~2x less per pixel than over a
    # whole sequence (measured, BENCHMARKS.md); the blocks are a fixed pixel budget, and the stream drawn
    # is the same whatever the blocks (one 64-bit word per pixel, in order).
    step = max(1, _SENSOR_BLOCK_PIXELS // (H * W))
    for b0 in range(0, len(depth_m), step):
        b1 = min(len(depth_m), b0 + step)
        # the four little-endian 16-bit words of each pixel's 64-bit draw, as four contiguous arrays
        raw = rng.integers(0, 1 << 64, size=(b1 - b0) * H * W, dtype=np.uint64).astype("<u8", copy=False)
        words = np.ascontiguousarray(raw.view("<u2").reshape(-1, 4).T).reshape(4, b1 - b0, H, W)
        if not _kinect_numpy(depth_m[b0:b1], instance[b0:b1], words, camera, cfg, z_out[b0:b1], inst_out[b0:b1]):
            z_out[b0:b1], inst_out[b0:b1] = kinect_model(depth_m[b0:b1], instance[b0:b1], words, camera, cfg,
                                                         NUMPY_OPS)
    return z_out, inst_out


def _disparity_scale(cfg: SensorConfig) -> float:
    """b f s: baseline x focal length x disparity steps per pixel, as float32 products (numpy and torch alike);
    a depth z has disparity b f s / z steps."""
    return float(np.float32(cfg.baseline_m * cfg.focal_px) * np.float32(cfg.disparity_subpixel))


def _lateral_sigma_px(camera: Camera, cfg: SensorConfig) -> float:
    """The lateral noise's sigma in this camera's pixels (the config's is in the sensor's own focal length)."""
    return cfg.lateral_sigma_px * camera.fx / cfg.focal_px


def _axial_coefficients(cfg: SensorConfig) -> tuple[float, float]:
    """(a2, a0) of the axial noise sigma a2 (z - 0.4)^2 + a0 (Nguyen et al. 2012), as float32 values, so numpy
    and torch compute the same float32 products."""
    return float(np.float32(0.0019 * cfg.axial_noise_scale)), float(np.float32(0.0012 * cfg.axial_noise_scale))


def _noisy_quantised(z, noise_words, cfg: SensorConfig, bfs: float) -> None:
    """Steps 2-3 of :func:`_kinect_numpy` in place on float32 ``z`` (any shape; ``noise_words`` alike): axial
    noise z + (dz dz a2 + a0) n with dz = z - 0.4 (the generic code's operations in its order), then
    bfs / max(rint(bfs / z), 1/2) on every element."""
    a2, a0 = _axial_coefficients(cfg)
    noise = np.subtract(z, 0.4, dtype=np.float32)
    noise *= noise
    noise *= a2
    noise += a0
    noise *= _normal_table().take(noise_words)
    z += noise
    steps = noise
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        np.divide(bfs, z, out=steps)
        np.rint(steps, out=steps)
        np.maximum(steps, 0.5, out=steps)
        np.divide(bfs, steps, out=z)


def _fast_path_holds(camera: Camera, cfg: SensorConfig) -> bool:
    bfs = _disparity_scale(cfg)
    sigma_px = _lateral_sigma_px(camera, cfg)
    return (cfg.model == "kinect" and cfg.axial_noise_scale > 0 and cfg.disparity_subpixel > 0 and sigma_px > 0
            and cfg.min_depth_m > 0 and cfg.max_depth_m < 2.0 * bfs)


def _kinect_numpy(depth_m, instance, words, camera: Camera, cfg: SensorConfig, z_out, inst_out) -> bool:
    """:func:`kinect_model` on numpy arrays in fewer passes, written into ``z_out`` / ``inst_out``: the same
    bits (tested against it), ~25 % less CPU. False (nothing written) for the settings where its shortcut
    does not hold; the caller then runs :func:`kinect_model`.

    The shortcut: the generic code masks invalid pixels out before each division (dividing by 1 instead of 0)
    and tests ``z > 0`` and ``steps > 0`` on the way; here every pixel goes through the disparity arithmetic
    as it is (the same operations on the same float32 values, so valid pixels get the same depth), with the
    step count clamped to >= 1/2, and one range test at the end drops the rest: a pixel whose noisy depth is
    <= 0 or whose step count rounds to <= 0 ends at depth 0 or 2 b f s, which fail ``min_depth_m > 0`` or
    ``max_depth_m < 2 b f s``; a pixel with a noisy depth below the smallest float32 gets step count inf and
    depth 0. Those two bounds are the conditions, with axial noise, quantisation and a lateral shift on.
    """
    if not _fast_path_holds(camera, cfg):
        return False
    bfs = _disparity_scale(cfg)
    sigma_px = _lateral_sigma_px(camera, cfg)
    z = depth_m.astype(np.float32, copy=False)
    edges = edge_mask(z, instance, cfg.edge_jump_m, cfg.edge_width_px) if cfg.edge_dropout_prob > 0 else None
    shifted = _lateral_numpy([z, instance] + ([edges] if edges is not None else []), words[0], words[1],
                             float(sigma_px))
    if shifted is None:
        return False
    z, inst = shifted[0], shifted[1]  # new arrays: updated in place below
    if edges is not None:
        edges = shifted[2]
    hit = z > 0
    _noisy_quantised(z, words[2], cfg, bfs)  # 2. axial noise, 3. disparity quantisation
    # 4. range (it also drops the pixels whose noisy depth or step count was <= 0), 5. dropout
    valid = hit
    valid &= z >= cfg.min_depth_m
    valid &= z <= cfg.max_depth_m
    if cfg.dropout_prob > 0 or edges is not None:
        u = words[3]
        drop = u < int(round(cfg.dropout_prob * 65536))
        if edges is not None:
            p_edge = 1.0 - (1.0 - cfg.dropout_prob) * (1.0 - cfg.edge_dropout_prob)
            drop |= edges & (u < int(round(p_edge * 65536)))
        valid &= ~drop
    np.multiply(z, valid, out=z_out)
    inst += 1
    inst *= valid
    np.subtract(inst, 1, out=inst_out, casting="unsafe")
    return True


def sensor_blocks(depth_m: np.ndarray, instance: np.ndarray, camera: Camera, cfg: SensorConfig,
                  rng: np.random.Generator):
    """:func:`apply_sensor_batch` block by block (its blocks, its random draws), for a caller that needs only
    which pixels are valid and the depth and instance at a few of them (``generate_sequence`` samples N of
    ~77k pixels per view and stores no image).

    Yields:
        (b0, b1, valid, values_at) per block of views: ``valid`` (b1 - b0, H, W) bool is apply_sensor_batch's
        ``depth > 0`` on those views; ``values_at(flat)`` returns (depth float32, instance int16) at flat
        pixel indices of the block, equal to apply_sensor_batch's output there for valid pixels.

    Where the numpy fast path holds (:func:`_kinect_numpy`), a block computes the noisy, quantised depth only
    at the pixels asked for and at the few whose validity depends on the noise: a clean depth inside
    :func:`_sure_range` is in range whatever the noise, so its validity is its hit and dropout, gathered
    with its edge bit as one byte per pixel; depth and instance are gathered at the pixels asked for.
    """
    depth_m = np.asarray(depth_m)
    instance = np.asarray(instance)
    B, H, W = depth_m.shape
    if cfg.model == "ideal" or not _fast_path_holds(camera, cfg):
        z, inst = apply_sensor_batch(depth_m, instance, camera, cfg, rng)
        z_flat, i_flat = z.reshape(-1), inst.reshape(-1)
        yield 0, B, z > 0, lambda flat: (z_flat[flat], i_flat[flat])
        return
    step = max(1, _SENSOR_BLOCK_PIXELS // (H * W))
    for b0 in range(0, B, step):
        b1 = min(B, b0 + step)
        raw = rng.integers(0, 1 << 64, size=(b1 - b0) * H * W, dtype=np.uint64).astype("<u8", copy=False)
        words = np.ascontiguousarray(raw.view("<u2").reshape(-1, 4).T).reshape(4, b1 - b0, H, W)
        block = _kinect_lazy(depth_m[b0:b1], instance[b0:b1], words, camera, cfg)
        if block is None:  # the generic code: whole images
            z, inst = np.empty((b1 - b0, H, W), np.float32), np.empty((b1 - b0, H, W), np.int16)
            if not _kinect_numpy(depth_m[b0:b1], instance[b0:b1], words, camera, cfg, z, inst):
                z, inst = kinect_model(depth_m[b0:b1], instance[b0:b1], words, camera, cfg, NUMPY_OPS)
            z_flat, i_flat = z.reshape(-1), inst.reshape(-1)
            block = (z > 0, lambda flat, z_flat=z_flat, i_flat=i_flat: (z_flat[flat], i_flat[flat]))
        yield (b0, b1, *block)


# Margin (metres, plus 1e-4 of the depth) by which a depth of _sure_range stays inside the range limits for
# every noise value: ~10^4 x float32's rounding of the model's arithmetic.
_SURE_MARGIN_M = 5e-3


@functools.lru_cache(maxsize=16)
def _sure_range(cfg: SensorConfig) -> tuple[float, float]:
    """(lo, hi): a clean depth z with lo <= z <= hi (float32) gets a noisy, quantised depth inside
    [min_depth_m, max_depth_m] for every noise value of the table; lo > hi when there is none.

    Bounds in real arithmetic on a grid of z: noise |n| <= max |table| moves z by at most s(z) max|n| with
    s(z) = a2 (z - 0.4)^2 + a0, and rounding the disparity bfs / z' to whole steps maps z' into
    [z' bfs / (bfs + z'/2), z' bfs / (bfs - z'/2)]; a grid point is kept when both ends are inside the range
    by the margin, which covers float32 rounding (~1e-6 of z) and the change between grid points (the grid
    step times the largest slope of those bounds). The longest run of kept points, less one step at each end.
    """
    bfs = _disparity_scale(cfg)
    a2, a0 = (c * (1 + 1e-5) for c in _axial_coefficients(cfg))
    table = _normal_table()
    n_max = max(-float(table.min()), float(table.max())) * (1 + 1e-6)
    lo_z, hi_z = float(cfg.min_depth_m), float(cfg.max_depth_m)
    count = int(min(200_001, max(2, math.ceil((hi_z - lo_z) / 1e-4) + 1)))
    z = np.linspace(lo_z, hi_z, count)
    grid = (hi_z - lo_z) / (count - 1)
    slope = 2.0 * (1.0 + 2.0 * a2 * max(abs(hi_z - 0.4), abs(lo_z - 0.4)) * n_max)  # of both bounds, generously
    margin = max(_SURE_MARGIN_M, 4.0 * slope * grid) + 1e-4 * z
    s = (a2 * (z - 0.4) ** 2 + a0) * n_max
    low, high = z - s, z + s
    with np.errstate(divide="ignore", invalid="ignore"):
        q_low = low * bfs / (bfs + 0.5 * low)
        q_high = high * bfs / (bfs - 0.5 * high)
    ok = (low > 0) & (high < 2.0 * bfs) & (q_low >= lo_z + margin) & (q_high <= hi_z - margin)
    if ok.sum() < 3:
        return 1.0, 0.0
    # the longest run of consecutive kept grid points
    edges = np.flatnonzero(np.diff(np.concatenate([[0], ok.view(np.int8), [0]])))
    starts, stops = edges[::2], edges[1::2]  # run i covers [starts[i], stops[i])
    i = int(np.argmax(stops - starts))
    first, last = starts[i] + 1, stops[i] - 2
    if first > last:
        return 1.0, 0.0
    lo = np.nextafter(np.float32(z[first]), np.float32(np.inf))
    hi = np.nextafter(np.float32(z[last]), np.float32(-np.inf))
    return float(lo), float(hi)


def _kinect_lazy(depth_m, instance, words, camera: Camera, cfg: SensorConfig):
    """One block of :func:`sensor_blocks` on the fast path: (valid, values_at), or None when the lateral shift
    needs the generic code. The caller checked :func:`_fast_path_holds`."""
    sigma_px = _lateral_sigma_px(camera, cfg)
    lateral = _lateral_index(depth_m.shape, words[0], words[1], float(sigma_px))
    if lateral is None:
        return None
    index, pad = lateral
    bfs = _disparity_scale(cfg)
    lo, hi = _sure_range(cfg)
    z = depth_m.astype(np.float32, copy=False)
    # one byte per clean pixel: 1 hit, 2 in range whatever the noise (implies hit: lo > 0), 4 edge
    code = np.greater(z, 0).view(np.uint8)
    sure = np.greater_equal(z, lo)
    sure &= z <= hi
    code += sure.view(np.uint8) * np.uint8(2)
    if cfg.edge_dropout_prob > 0:
        code |= edge_mask(z, instance, cfg.edge_jump_m, cfg.edge_width_px).view(np.uint8) << np.uint8(2)
    code = _padded(code, pad).reshape(-1).take(index).reshape(z.shape)  # step 1, the lateral shift
    u = words[3]
    drop = u < int(round(cfg.dropout_prob * 65536))
    if cfg.edge_dropout_prob > 0:
        p_edge = 1.0 - (1.0 - cfg.dropout_prob) * (1.0 - cfg.edge_dropout_prob)
        drop |= (code >= 4) & (u < int(round(p_edge * 65536)))
    keep = (code & np.uint8(1)).view(np.bool_)
    keep &= ~drop
    valid = ((code >> np.uint8(1)) & np.uint8(1)).view(np.bool_)  # 0 / 1 bytes: a bool array
    valid &= keep
    padded_z = _padded(z, pad).reshape(-1)
    noise_words = words[2].reshape(-1)
    unsure = np.flatnonzero(keep & ~valid)  # hit, kept, near a range limit: the exact test
    if len(unsure):
        zq = padded_z.take(index[unsure])
        _noisy_quantised(zq, noise_words[unsure], cfg, bfs)
        valid.reshape(-1)[unsure] = (zq >= cfg.min_depth_m) & (zq <= cfg.max_depth_m)
    padded_inst = _padded(instance, pad).reshape(-1)

    def values_at(flat):
        source = index[flat]
        zq = padded_z.take(source)
        _noisy_quantised(zq, noise_words[flat], cfg, bfs)
        return zq, padded_inst.take(source).astype(np.int16, copy=False)

    return valid, values_at


class ArrayOps:
    """The few operations :func:`kinect_model` needs that numpy and torch spell differently."""

    def __init__(self, module: str):
        self.module = module
        if module == "numpy":
            self.f32 = lambda x: x.astype(np.float32, copy=False)
            self.i16 = lambda x: x.astype(np.int16, copy=False)
            self.i32 = lambda x: x.astype(np.int32, copy=False)
            self.clip = np.clip
            self.rint = np.rint
            self.where = np.where
            self.arange = lambda n, like: np.arange(n, dtype=np.int32)
            self.table = lambda values, like: np.asarray(values)
            self.lookup = lambda table, index: table.take(index)
            self.take = lambda x, index: x.take(index)
        elif module == "torch":
            import torch

            self.f32 = lambda x: x.to(torch.float32)
            self.i16 = lambda x: x.to(torch.int16)
            self.i32 = lambda x: x.to(torch.int32)
            self.clip = torch.clamp
            self.rint = torch.round  # half to even, as np.rint
            self.where = torch.where
            self.arange = lambda n, like: torch.arange(n, dtype=torch.int32, device=like.device)
            self.table = lambda values, like: torch.as_tensor(np.array(values), device=like.device)
            self.lookup = lambda table, index: table[index.long()]
            self.take = lambda x, index: x.take(index.long())
        else:
            raise ValueError(f"ArrayOps: expected 'numpy' or 'torch', got {module!r}")


NUMPY_OPS = ArrayOps("numpy")


def kinect_model(depth_m, instance, words, camera: Camera, cfg: SensorConfig, ops: ArrayOps = NUMPY_OPS):
    """The Kinect model (module docstring) on a batch, given its random words; numpy arrays or torch tensors.

    Args:
        depth_m: (B, H, W) float32 z-depth, metres, 0 = no surface.
        instance: (B, H, W) int instance ids, -1 = none.
        words: four (B, H, W) int32 arrays of uniform 16-bit values (0..65535): lateral row shift, lateral
            column shift, axial noise quantile, dropout.
        camera: the camera (fx scales the lateral noise).
        cfg: a ``kinect`` SensorConfig.
        ops: :data:`NUMPY_OPS` or ``ArrayOps("torch")`` (same arithmetic, float32 throughout).

    Returns:
        depth (B, H, W) float32 (0 = invalid) and instance (B, H, W) int16 (-1 wherever depth is 0).
    """
    B, H, W = depth_m.shape
    z = ops.f32(depth_m)
    inst = instance
    # Edges come from the rendered (clean) images: that is where the real pattern breaks up.
    edges = edge_mask(z, inst, cfg.edge_jump_m, cfg.edge_width_px) if cfg.edge_dropout_prob > 0 else None

    # 1. Lateral noise: read each pixel from a randomly shifted neighbour (depth and instance together).
    sigma_px = _lateral_sigma_px(camera, cfg)
    shifted = None
    if sigma_px > 0 and ops.module == "numpy":
        shifted = _lateral_numpy([z, inst] + ([edges] if edges is not None else []), words[0], words[1],
                                 float(sigma_px))
        if shifted is not None:
            z, inst = shifted[0], shifted[1]
            if edges is not None:
                edges = shifted[2]
    if sigma_px > 0 and shifted is None:
        rows = ops.clip(_shift_px(words[0], float(sigma_px), ops) + ops.arange(H, z)[:, None], 0, H - 1)
        cols = ops.clip(_shift_px(words[1], float(sigma_px), ops) + ops.arange(W, z)[None, :], 0, W - 1)
        flat = (rows * W + cols + (ops.arange(B, z) * (H * W))[:, None, None]).reshape(-1)
        z = ops.take(z.reshape(-1), flat).reshape(B, H, W)
        inst = ops.take(inst.reshape(-1), flat).reshape(B, H, W)
        if edges is not None:
            edges = ops.take(edges.reshape(-1), flat).reshape(B, H, W)

    valid = z > 0
    # 2. Axial noise (Nguyen et al. 2012): z + N(0, 1) * scale * (0.0012 + 0.0019 (z - 0.4)^2).
    if cfg.axial_noise_scale > 0:
        normal = ops.lookup(ops.table(_normal_table(), z), words[2])
        dz = z - 0.4
        a2, a0 = _axial_coefficients(cfg)
        z = z + (dz * dz * a2 + a0) * normal
        valid = valid & (z > 0)
    # 3. Disparity quantisation: d = b f / z in steps of 1 / subpixel px; a 0-step disparity is invalid.
    if cfg.disparity_subpixel > 0:
        bfs = _disparity_scale(cfg)
        steps = ops.rint(bfs / (z * valid + ~valid))  # invalid pixels divide by 1, not 0
        valid = valid & (steps > 0)
        z = bfs / (steps + ~valid) * valid
    # 4. Range.
    valid = valid & (z >= cfg.min_depth_m) & (z <= cfg.max_depth_m)
    # 5. Dropout: one 16-bit word per pixel serves both kinds (probabilities resolved to 2^-16).
    if cfg.dropout_prob > 0 or edges is not None:
        u = words[3]
        drop = u < int(round(cfg.dropout_prob * 65536))
        if edges is not None:
            # P(drop) = 1 - (1 - p_random)(1 - p_edge) on edge pixels: independent events on one pixel.
            p_edge = 1.0 - (1.0 - cfg.dropout_prob) * (1.0 - cfg.edge_dropout_prob)
            drop = drop | (edges & (u < int(round(p_edge * 65536))))
        valid = valid & ~drop
    z = ops.f32(z * valid)  # multiplying by the mask: cheaper than where(), and z is finite here
    inst = ops.i16((inst + 1) * valid - 1)
    return z, inst


_LATERAL_BASE: dict = {}  # the last (shape, pad, low) -> flat index of every pixel's unshifted source


def _lateral_numpy(arrays: list, row_words, col_words, sigma_px: float):
    """Step 1 of :func:`kinect_model` on numpy arrays, the same values as its generic code, ~1.5x cheaper:
    each (B, H, W) array is padded by P = max |shift| pixels replicating its edge rows and columns (what
    clipping the shifted coordinates does), and one flat index per pixel, built from the shifts counted in
    uint8 (:func:`_shift_px`'s step comparisons), gathers every array. None when the shift table is not a
    few unit steps (the generic code handles it)."""
    lateral = _lateral_index(arrays[0].shape, row_words, col_words, sigma_px)
    if lateral is None:
        return None
    index, pad = lateral
    B, H, W = arrays[0].shape
    return [_padded(a, pad).reshape(-1).take(index).reshape(B, H, W) for a in arrays]


def _lateral_index(shape: tuple, row_words, col_words, sigma_px: float):
    """(index, pad) of :func:`_lateral_numpy`: the flat index into the arrays padded by ``pad`` pixels
    (:func:`_padded`) from which every pixel of a (B, H, W) batch reads; None when the generic code must run."""
    steps = _shift_steps(sigma_px)
    if steps is None:
        return None
    table = _rounded_normal_table(sigma_px)
    low = int(table[0])
    pad = max(-low, int(table[-1]), 0)
    B, H, W = shape
    Hp, Wp = H + 2 * pad, W + 2 * pad
    key = (B, H, W, pad, low)
    base = _LATERAL_BASE.get(key)
    if base is None:  # padded flat index of pixel (b, r + low, c + low): the smallest shift
        base = ((np.arange(B, dtype=np.int64) * (Hp * Wp))[:, None, None]
                + ((np.arange(H, dtype=np.int64) + (pad + low)) * Wp)[None, :, None]
                + (np.arange(W, dtype=np.int64) + (pad + low))[None, None, :])
        _LATERAL_BASE.clear()
        _LATERAL_BASE[key] = base

    def count(words):  # shift - low: how many steps the word reaches, 0 .. len(steps)
        n = np.greater_equal(words, int(steps[0])).view(np.uint8)
        for step in steps[1:]:
            n += np.greater_equal(words, int(step))
        return n

    if (len(steps) + 1) * Wp < 1 << 15:  # the offset from the smallest shift fits 16 bits: half the passes' bytes
        offset = np.multiply(count(row_words), np.int16(Wp), dtype=np.int16)
        offset += count(col_words)
        index = offset.astype(np.int64)  # then one same-type add: ~1.4x cheaper than a mixed-type one
        index += base
    else:
        index = np.multiply(count(row_words), np.int64(Wp), dtype=np.int64)
        index += base
        index += count(col_words)
    return index.reshape(-1), pad


@functools.lru_cache(maxsize=8)
def _shift_steps(sigma_px: float):
    """The word values at which :func:`_rounded_normal_table` steps up by one (sorted), or None when it is
    constant, steps by more than one or more than 8 times (per-block cost of finding them: ~0.1 ms/view)."""
    table = _rounded_normal_table(sigma_px)
    diff = np.diff(table)
    steps = np.flatnonzero(diff) + 1
    if len(steps) == 0 or len(steps) > 8 or np.any(diff[steps - 1] != 1):
        return None
    steps.setflags(write=False)
    return steps


def _padded(a, pad: int):
    """(B, H + 2 pad, W + 2 pad) copy of ``a`` with its edge rows and columns repeated ``pad`` times."""
    B, H, W = a.shape
    padded = np.empty((B, H + 2 * pad, W + 2 * pad), a.dtype)
    padded[:, pad:pad + H, pad:pad + W] = a
    padded[:, :pad, pad:pad + W] = a[:, :1]
    padded[:, pad + H:, pad:pad + W] = a[:, -1:]
    padded[:, :, :pad] = padded[:, :, pad:pad + 1]
    padded[:, :, pad + W:] = padded[:, :, pad + W - 1:pad + W]
    return padded


def _shift_px(words, sigma_px: float, ops: ArrayOps):
    """``rint(N(0, sigma_px))`` pixel shifts of uniform 16-bit ``words``: the rounded-normal table lookup,
    done by comparing against the table's few step positions (exact: the table is sorted), which is ~5x
    cheaper than a random-access lookup while the shift takes only a few values."""
    table = _rounded_normal_table(sigma_px)
    steps = np.flatnonzero(np.diff(table)) + 1  # word >= steps[j] adds table[steps[j]] - table[steps[j] - 1]
    if len(steps) > 8 or np.any(np.diff(table)[steps - 1] != 1):
        return ops.lookup(ops.table(table, words), words)
    low = int(table[0])
    if len(steps) == 0:
        return ops.i32(words * 0) + low
    shift = ops.i32(words >= int(steps[0])) + low  # (bool + bool would be a logical or)
    for step in steps[1:]:
        shift = shift + (words >= int(step))
    return shift
