"""Sensor models: Kinect-v1 noise statistics against Nguyen et al. 2012, disparity quantisation, dropout, seeds."""

from __future__ import annotations

import numpy as np
import pytest

from synthseq.errors import ConfigError
from synthseq.types import Camera
from synthseq.generator.sensor import (
    SensorConfig,
    apply_sensor,
    apply_sensor_batch,
    axial_sigma_m,
    edge_mask,
    quantize_disparity,
    sensor_config_from,
    standard_normal16,
)

CAMERA = Camera.from_fov(60.0, 320, 240)
# Everything off; each test switches on the one effect it measures.
OFF = dict(
    axial_noise_scale=0.0,
    lateral_sigma_px=0.0,
    disparity_subpixel=0,
    dropout_prob=0.0,
    edge_dropout_prob=0.0,
    max_depth_m=6.0,
)


def plane(z: float, camera: Camera = CAMERA, instance: int = 0):
    return (
        np.full((camera.height, camera.width), z, dtype=np.float32),
        np.full((camera.height, camera.width), instance, dtype=np.int16),
    )


def kinect(**changes) -> SensorConfig:
    return SensorConfig(model="kinect", **{**OFF, **changes})


@pytest.mark.parametrize("z", [0.6, 1.0, 2.0, 3.0, 4.5])
def test_axial_noise_std_matches_nguyen_2012(z):
    depth, inst = plane(z)
    out, out_inst = apply_sensor(depth, inst, CAMERA, kinect(axial_noise_scale=1.0), np.random.default_rng(1))
    expected = 0.0012 + 0.0019 * (z - 0.4) ** 2
    n = out.size
    assert np.all(out > 0) and np.array_equal(out_inst, inst)
    # 76800 samples: the std of the std estimate is ~0.26 %; the mean is unbiased
    assert abs(out.std() / expected - 1.0) < 0.02, (out.std(), expected)
    assert abs(out.mean() - z) < 5 * expected / np.sqrt(n)
    assert out.dtype == np.float32


def test_axial_sigma_formula():
    np.testing.assert_allclose(axial_sigma_m(np.array([0.4, 1.4])), [0.0012, 0.0012 + 0.0019])


def test_standard_normal16_is_standard_normal():
    x = standard_normal16(np.random.default_rng(0), (400_000,)).astype(np.float64)
    assert abs(x.mean()) < 0.01 and abs(x.std() - 1.0) < 0.005
    assert abs(np.mean(np.abs(x) < 1.0) - 0.6827) < 0.005


def test_disparity_quantisation_steps_match_the_model():
    baseline_m, focal_px, subpixel = 0.075, 580.0, 8
    z = np.linspace(0.5, 4.5, 20001, dtype=np.float32)
    q = quantize_disparity(z, baseline_m, focal_px, subpixel)
    bf = baseline_m * focal_px
    steps = bf * subpixel / q.astype(np.float64)
    np.testing.assert_allclose(steps, np.rint(steps), atol=2e-3)  # reported depths sit on disparity steps
    half_step = z.astype(np.float64) ** 2 / (bf * subpixel) / 2
    assert np.all(np.abs(q - z) <= half_step * 1.01 + 1e-6)
    # distinct levels are spaced z^2 / (b f s): ~2.9 mm at 1 m, ~46 mm at 4 m
    levels = np.unique(q)
    for at in (1.0, 4.0):
        i = np.searchsorted(levels, at)
        spacing = levels[i + 1] - levels[i]
        np.testing.assert_allclose(spacing, at**2 / (bf * subpixel), rtol=0.02)
    assert quantize_disparity(np.zeros(3), baseline_m, focal_px, subpixel).tolist() == [0, 0, 0]


def test_apply_sensor_quantises_through_disparity():
    depth, inst = plane(2.0)
    depth[:, 160:] = 1.0
    out, _ = apply_sensor(depth, inst, CAMERA, kinect(disparity_subpixel=8), np.random.default_rng(0))
    np.testing.assert_allclose(out, quantize_disparity(depth, 0.075, 580.0, 8))
    assert len(np.unique(out)) == 2


def test_random_dropout_rate():
    depth, inst = plane(1.5)
    out, out_inst = apply_sensor(depth, inst, CAMERA, kinect(dropout_prob=0.1), np.random.default_rng(3))
    dropped = out == 0
    assert abs(dropped.mean() - 0.1) < 0.005
    assert np.all(out_inst[dropped] == -1) and np.all(out_inst[~dropped] == 0)


def test_edge_dropout_hits_discontinuities_only():
    depth, inst = plane(1.0)
    depth[:, 160:] = 2.0
    inst[:, 160:] = 1
    edges = edge_mask(depth, inst, jump_m=0.05, width_px=1)
    assert edges[:, 159:161].all() and edges.sum() == 2 * CAMERA.height
    assert edge_mask(depth, inst, 0.05, 3)[:, 157:163].all() and edge_mask(depth, inst, 0.05, 3).sum() == 6 * 240
    out, _ = apply_sensor(depth, inst, CAMERA, kinect(edge_dropout_prob=0.5), np.random.default_rng(4))
    dropped = out == 0
    assert not dropped[~edges].any()
    assert abs(dropped[edges].mean() - 0.5) < 0.07  # 480 edge pixels
    # a hit next to a miss is an edge too
    depth[:, :40] = 0
    assert edge_mask(depth, inst, 0.05, 1)[:, 40].all() and not edge_mask(depth, inst, 0.05, 1)[:, 39].any()


def test_lateral_noise_shifts_pixels_by_the_configured_sigma():
    # A camera with the Kinect's own focal length: the shift is exactly lateral_sigma_px of its pixels.
    camera = Camera.from_focal(580.0, 580.0, 159.5, 119.5, 320, 240)
    cols = np.arange(camera.width, dtype=np.float32)
    depth = np.broadcast_to(1.0 + 0.001 * cols, (camera.height, camera.width)).astype(np.float32)
    rows = np.broadcast_to(np.arange(camera.height, dtype=np.int16)[:, None], depth.shape).copy()
    sigma = 2.0
    out, out_rows = apply_sensor(depth, rows, camera, kinect(lateral_sigma_px=sigma), np.random.default_rng(5))
    src_col = np.rint((out.astype(np.float64) - 1.0) / 0.001)
    du = (src_col - cols)[20:-20, 20:-20]  # away from the clamped border
    dv = (out_rows - rows).astype(np.float64)[20:-20, 20:-20]
    expected = np.sqrt(sigma**2 + 1.0 / 12.0)  # rounding a N(0, sigma) adds ~1/12 px^2
    for d in (du, dv):
        assert abs(d.mean()) < 0.05 and abs(d.std() / expected - 1.0) < 0.04, (d.mean(), d.std())
    # at 320x240 with fx ~ 277 px the shift scales down by fx / focal_px
    half = Camera.from_focal(290.0, 290.0, 159.5, 119.5, 320, 240)
    out, _ = apply_sensor(depth, rows, half, kinect(lateral_sigma_px=sigma), np.random.default_rng(5))
    du = (np.rint((out.astype(np.float64) - 1.0) / 0.001) - cols)[20:-20, 20:-20]
    assert abs(du.std() / np.sqrt(1.0 + 1 / 12) - 1.0) < 0.05


def test_range_limits_clip():
    depth, inst = plane(1.0)
    depth[:10] = 0.3
    depth[10:20] = 5.5
    depth[20:30] = 0.0
    out, out_inst = apply_sensor(depth, inst, CAMERA, kinect(max_depth_m=5.0), np.random.default_rng(0))
    assert np.all(out[:30] == 0) and np.all(out_inst[:30] == -1)
    assert np.all(out[30:] == 1.0) and np.all(out_inst[30:] == 0)


def _scene_images():
    depth, inst = plane(2.5)
    depth[60:180, 100:220] = 1.2
    inst[60:180, 100:220] = 3
    inst[:, :50] = -1
    return depth, inst


def test_same_seed_same_output_different_seed_differs():
    depth, inst = _scene_images()
    cfg = SensorConfig()  # the default Kinect model, everything on
    a = apply_sensor(depth, inst, CAMERA, cfg, np.random.default_rng(42))
    b = apply_sensor(depth, inst, CAMERA, cfg, np.random.default_rng(42))
    c = apply_sensor(depth, inst, CAMERA, cfg, np.random.default_rng(43))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    # inputs untouched, outputs are new arrays with the documented dtypes; invalid <=> instance -1
    assert np.all(depth[60:180, 100:220] == 1.2)
    assert a[0].dtype == np.float32 and a[1].dtype == np.int16
    assert np.all(a[1][a[0] == 0] == -1)
    valid = a[0] > 0
    assert 0.9 < valid.mean() < 1.0


def test_ideal_is_exact_and_draws_nothing():
    depth, inst = _scene_images()
    rng = np.random.default_rng(0)
    before = rng.bit_generator.state
    out, out_inst = apply_sensor(depth, inst, CAMERA, sensor_config_from("ideal"), rng)
    np.testing.assert_array_equal(out, depth)
    np.testing.assert_array_equal(out_inst, inst)
    assert out is not depth and out_inst is not inst
    assert rng.bit_generator.state == before


def test_shape_mismatch_is_an_error():
    depth, inst = plane(1.0)
    with pytest.raises(ValueError, match=r"expected depth and instance of shape \(H, W\) = \(240, 320\)"):
        apply_sensor(depth[:100], inst[:100], CAMERA, SensorConfig(), np.random.default_rng(0))


def test_sensor_config_from_string_mapping_and_errors():
    assert sensor_config_from("ideal").model == "ideal"
    assert sensor_config_from("kinect") == SensorConfig()
    assert sensor_config_from(None) == SensorConfig()
    cfg = sensor_config_from({"model": "kinect", "dropout_prob": 0.02, "max_depth_m": 4})
    assert cfg.dropout_prob == 0.02 and cfg.max_depth_m == 4.0
    with pytest.raises(ConfigError, match=r"^generate.sensor: expected one of 'ideal', 'kinect' or a mapping, got 'laser'"):
        sensor_config_from("laser")
    with pytest.raises(ConfigError, match=r"^generate.sensor.noise: unknown key"):
        sensor_config_from({"noise": 1})
    with pytest.raises(ConfigError, match=r"^generate.sensor.dropout_prob: expected a value <= 1, got 1.5"):
        sensor_config_from({"dropout_prob": 1.5})
    with pytest.raises(ConfigError, match=r"^generate.sensor.model: expected one of 'ideal', 'kinect'"):
        sensor_config_from({"model": "tof"})
    with pytest.raises(ConfigError, match=r"^x.sensor.max_depth_m: expected a value > min_depth_m \(0.4\), got 0.3"):
        sensor_config_from({"max_depth_m": 0.3}, "x.sensor")
    with pytest.raises(ConfigError, match=r"^generate.sensor: expected a model name"):
        sensor_config_from(3)


def test_sensor_config_round_trips_through_a_plain_dict():
    from synthseq.config import to_dict

    cfg = sensor_config_from({"model": "kinect", "lateral_sigma_px": 0.5, "edge_width_px": 2})
    assert sensor_config_from(to_dict(cfg)) == cfg
    assert sensor_config_from(to_dict(sensor_config_from("ideal"))).model == "ideal"


def _kinect_scene(B: int = 3):
    """B views of two planes, a box and a missing strip: edges, range limits and instance changes."""
    rng = np.random.default_rng(11)
    depth = np.empty((B, CAMERA.height, CAMERA.width), np.float32)
    inst = np.zeros(depth.shape, np.int16)
    for b in range(B):
        depth[b], inst[b] = _scene_images()
        depth[b] += np.float32(0.5 * b)  # 2.5-3.5 m and 1.2-2.2 m: some of it beyond max_depth_m below
        depth[b, :, rng.integers(0, 300):][:, :10] = 0.0
    return depth, inst


def test_batch_equals_views_one_after_another():
    """The sensor stream depends only on the pixels drawn: one call over B views equals B calls in a row,
    which is what lets generate_sequence batch frames as it likes without changing a byte."""
    depth, inst = _kinect_scene(4)
    cfg = SensorConfig(max_depth_m=3.0)
    whole = apply_sensor_batch(depth, inst, CAMERA, cfg, np.random.default_rng(9))
    rng = np.random.default_rng(9)
    parts = [apply_sensor_batch(depth[i:j], inst[i:j], CAMERA, cfg, rng) for i, j in ((0, 1), (1, 3), (3, 4))]
    np.testing.assert_array_equal(whole[0], np.concatenate([p[0] for p in parts]))
    np.testing.assert_array_equal(whole[1], np.concatenate([p[1] for p in parts]))
    with pytest.raises(ValueError, match=r"expected depth and instance of shape \(B, H, W\)"):
        apply_sensor_batch(depth[0], inst[0], CAMERA, cfg, rng)


def test_lateral_shift_by_step_comparison_equals_the_table_lookup():
    from synthseq.generator.sensor import NUMPY_OPS, _rounded_normal_table, _shift_px

    words = np.arange(1 << 16, dtype=np.int32)
    for sigma in (0.1, 0.38, 0.8, 1.5, 4.0):
        np.testing.assert_array_equal(_shift_px(words, sigma, NUMPY_OPS), _rounded_normal_table(sigma)[words])


def test_torch_kinect_model_equals_numpy_on_the_same_random_words():
    """The device path runs the same function: fed the same random words, torch (CPU) and numpy agree."""
    torch = pytest.importorskip("torch")
    from synthseq.generator.sensor import NUMPY_OPS, ArrayOps, kinect_model

    depth, inst = _kinect_scene(3)
    words = np.random.default_rng(2).integers(0, 1 << 16, size=(4, *depth.shape)).astype(np.int32)
    for cfg in (SensorConfig(), SensorConfig(max_depth_m=3.0, lateral_sigma_px=3.0, edge_width_px=2)):
        z_np, i_np = kinect_model(depth, inst, list(words), CAMERA, cfg, NUMPY_OPS)
        z_t, i_t = kinect_model(torch.from_numpy(depth), torch.from_numpy(inst), torch.from_numpy(words),
                                CAMERA, cfg, ArrayOps("torch"))
        assert z_t.dtype == torch.float32 and i_t.dtype == torch.int16
        np.testing.assert_array_equal(i_t.numpy(), i_np)
        np.testing.assert_allclose(z_t.numpy(), z_np, rtol=1e-6, atol=0)
        assert 0.5 < (z_np > 0).mean() < 0.99


@pytest.mark.parametrize("shape", [(3, 240, 320), (2, 1, 3), (1, 5, 2), (1, 3, 9000)])  # 9000: 64-bit offsets
def test_numpy_lateral_gather_equals_the_clipped_lookup(shape):
    """The numpy path's padded gather takes every pixel from the same neighbour as clipping the shifted
    coordinates (the generic code, which torch runs), for depth, instance and edge arrays alike."""
    from synthseq.generator.sensor import NUMPY_OPS, _lateral_numpy, _shift_px

    rng = np.random.default_rng(4)
    B, H, W = shape
    arrays = [rng.uniform(0.5, 4.0, shape).astype(np.float32), rng.integers(-1, 9, shape).astype(np.int16),
              rng.random(shape) < 0.3]
    words = rng.integers(0, 1 << 16, size=(2, *shape)).astype(np.uint16)
    for sigma in (0.1, 0.38, 0.8, 1.5, 4.0):
        rows = np.clip(_shift_px(words[0], sigma, NUMPY_OPS) + np.arange(H)[:, None], 0, H - 1)
        cols = np.clip(_shift_px(words[1], sigma, NUMPY_OPS) + np.arange(W)[None, :], 0, W - 1)
        b = np.arange(B)[:, None, None]
        got = _lateral_numpy(arrays, words[0], words[1], sigma)
        if got is None:  # no shift at all, or more than a few unit steps: the generic code runs
            assert sigma in (0.1, 1.5, 4.0)
            continue
        for a, g in zip(arrays, got):
            assert g.dtype == a.dtype and g.shape == a.shape
            np.testing.assert_array_equal(g, a[b, rows, cols])


def test_the_sensor_draw_is_the_generators_raw_output():
    """apply_sensor_batch draws rng.integers(0, 2**64, uint64): for PCG64 (default_rng) the raw 64-bit outputs,
    the stream of earlier versions, and it leaves the generator in the same state."""
    a, b = np.random.default_rng(9), np.random.default_rng(9)
    np.testing.assert_array_equal(a.integers(0, 1 << 64, size=1000, dtype=np.uint64), b.bit_generator.random_raw(1000))
    assert a.random() == b.random()


@pytest.mark.parametrize("changes", [{}, {"max_depth_m": 3.0}, {"min_depth_m": 1.3, "edge_width_px": 2},
                                     {"axial_noise_scale": 40.0, "dropout_prob": 0.2},
                                     {"edge_dropout_prob": 0.0, "dropout_prob": 0.0}])
def test_numpy_fast_path_equals_the_generic_model_bit_for_bit(changes):
    """apply_sensor_batch's numpy path (_kinect_numpy: no masking before the divisions, one range test at the
    end) gives the same bits as kinect_model on the same random words, including pixels the generic code drops
    on the way: no surface, noise pushing depth to <= 0, the range limits exactly, and very far surfaces."""
    from synthseq.generator.sensor import NUMPY_OPS, _kinect_numpy, kinect_model

    depth, inst = _kinect_scene(3)
    depth[0, :5] = np.float32(0.4)
    depth[0, 5:10] = np.float32(5.0)
    depth[0, 10:15] = np.float32(3.0)
    depth[1, :4] = np.float32(1e-3)  # noise of ~1.5 mm: some of it below 0
    depth[1, 4:8] = np.float32(1e-30)
    depth[1, 8:12] = np.float32(690.0)  # disparity rounds to 1 step: depth b f s = 348 m, beyond the range
    depth[1, 12:16] = np.float32(2000.0)  # rounds to 0 steps: dropped (the generic code), 2 b f s (here)
    cfg = SensorConfig(**changes)
    words = np.random.default_rng(3).integers(0, 1 << 16, size=(4, *depth.shape)).astype(np.uint16)
    z_ref, i_ref = kinect_model(depth, inst, list(words), CAMERA, cfg, NUMPY_OPS)
    z, i = np.full(depth.shape, np.nan, np.float32), np.full(depth.shape, 7, np.int16)
    assert _kinect_numpy(depth, inst, words, CAMERA, cfg, z, i)
    np.testing.assert_array_equal(z.view(np.uint32), z_ref.view(np.uint32))
    np.testing.assert_array_equal(i, i_ref)
    assert 0.3 < (z > 0).mean() < 0.99 and z.dtype == np.float32 and i.dtype == np.int16


@pytest.mark.parametrize("changes", [{"min_depth_m": 0.0}, {"max_depth_m": 800.0}, {"axial_noise_scale": 0.0},
                                     {"disparity_subpixel": 0}, {"lateral_sigma_px": 0.0}])
def test_numpy_fast_path_declines_where_its_shortcut_does_not_hold(changes):
    from synthseq.generator.sensor import _kinect_numpy

    depth, inst = _kinect_scene(1)
    z, i = np.zeros_like(depth), np.zeros_like(inst)
    words = np.zeros((4, *depth.shape), np.uint16)
    assert not _kinect_numpy(depth, inst, words, CAMERA, SensorConfig(**changes), z, i)
    assert not z.any() and not i.any()  # nothing written: apply_sensor_batch runs kinect_model


def _range_scene(B: int, seed: int):
    """Depths spread over 0-6 m and piled up at the range limits, misses, instance changes."""
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.0, 6.0, (B, CAMERA.height, CAMERA.width)).astype(np.float32)
    depth[:, :60] = rng.choice(np.float32([0.39, 0.4, 0.405, 0.41, 0.42, 4.7, 4.8, 4.9, 5.0, 5.1, 5.3]), (B, 60, CAMERA.width))
    depth[:, 60:90] = np.float32(2.0) + rng.normal(0, 0.01, (B, 30, CAMERA.width)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.05] = 0.0
    inst = rng.integers(-1, 4, depth.shape).astype(np.int16)
    inst[:, 60:90] = 2
    return depth, inst


@pytest.mark.parametrize("changes", [{}, {"max_depth_m": 3.0}, {"min_depth_m": 1.3, "edge_width_px": 2},
                                     {"axial_noise_scale": 40.0, "dropout_prob": 0.2}, {"edge_dropout_prob": 0.0},
                                     {"lateral_sigma_px": 3.0}, {"model": "ideal"}, {"disparity_subpixel": 0}])
def test_sensor_blocks_equal_apply_sensor_batch(changes):
    """The lazy blocks give apply_sensor_batch's valid pixels, and its depth and instance wherever asked, from
    the same random stream; near the range limits (where validity depends on the noise) and far from them."""
    from synthseq.generator.sensor import _sure_range, sensor_blocks

    cfg = SensorConfig(**changes)
    depth, inst = _range_scene(7, 5)
    z, i = apply_sensor_batch(depth, inst, CAMERA, cfg, np.random.default_rng(8))
    seen = np.zeros(depth.shape, bool)
    for b0, b1, valid, values_at in sensor_blocks(depth, inst, CAMERA, cfg, np.random.default_rng(8)):
        np.testing.assert_array_equal(valid, z[b0:b1] > 0)
        flat = np.flatnonzero(valid)
        zs, js = values_at(flat)
        np.testing.assert_array_equal(zs.view(np.uint32), z[b0:b1].reshape(-1)[flat].view(np.uint32))
        np.testing.assert_array_equal(js, i[b0:b1].reshape(-1)[flat])
        assert zs.dtype == np.float32 and js.dtype == np.int16
        seen[b0:b1] = True
    assert seen.all() and 0.2 < (z > 0).mean() < 0.99
    if changes == {}:
        lo, hi = _sure_range(cfg)
        assert 0.4 < lo < 0.42 and 4.7 < hi < 4.85  # most of the default scene's depths need no noise to decide


def test_sure_range_is_in_range_for_every_noise_value():
    """Every clean depth inside _sure_range ends inside the range limits whatever its noise word and lateral
    source: checked exhaustively over the 2^16 noise words at the range's ends and inside it."""
    from synthseq.generator.sensor import _noisy_quantised, _sure_range

    for cfg in (SensorConfig(), SensorConfig(max_depth_m=3.0, min_depth_m=1.0), SensorConfig(axial_noise_scale=8.0)):
        lo, hi = _sure_range(cfg)
        assert lo < hi
        bfs = float(np.float32(cfg.baseline_m * cfg.focal_px) * np.float32(cfg.disparity_subpixel))
        for z0 in np.concatenate([[lo, hi], np.linspace(lo, hi, 50)]).astype(np.float32):
            zq = np.full(1 << 16, z0, np.float32)
            _noisy_quantised(zq, np.arange(1 << 16, dtype=np.uint16), cfg, bfs)
            assert zq.min() >= cfg.min_depth_m and zq.max() <= cfg.max_depth_m


def test_noise_and_sample_equals_apply_sensor_batch_then_sample_views():
    """generate_sequence without stored images samples from the lazy blocks: the same points, labels, normals
    and valid counts as the full noisy images would give."""
    from synthseq.generator.sequence import _noise_and_sample, sample_views

    depth, inst = _range_scene(8, 6)
    depth[3] = 0.0  # a view with no valid pixel
    K = CAMERA.intrinsics
    for cfg in (SensorConfig(), SensorConfig(max_depth_m=3.0, dropout_prob=0.3), SensorConfig(lateral_sigma_px=3.0)):
        for normals in (True, False):
            z, i = apply_sensor_batch(depth, inst, CAMERA, cfg, np.random.default_rng(1))
            ref = sample_views(z, i, K, 300, np.random.default_rng(2), depth if normals else None, inst)
            got = _noise_and_sample(depth, inst, CAMERA, cfg, np.random.default_rng(1), K, 300,
                                    np.random.default_rng(2), normals)
            for a, b in zip(ref, got):
                if a is None:
                    assert b is None
                    continue
                assert a.dtype == b.dtype and a.shape == b.shape
                np.testing.assert_array_equal(a, b)
            assert ref[3][3] == 0
