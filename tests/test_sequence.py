"""generate_sequence end to end with the real raycast renderer: shapes, determinism, labels vs images, the
sensor model, sampling vs a naive reference, the shard round trip, import hygiene."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from synthseq.generator.config import load_generate_config
from synthseq.generator.scene import make_spec
from synthseq.generator.sequence import generate_sequence, sample_view
from synthseq.geometry import backproject_depth, project_points
from synthseq.types import sample_fixed

CONFIGS = Path(__file__).resolve().parents[1] / "pipelines" / "configs"
_ARRAYS = ("points", "num_valid", "labels", "normals", "depth", "instance", "camera_poses", "object_poses",
           "intrinsics", "image_size", "timestamps")


@pytest.fixture(scope="module")
def tiny_cfg():
    return load_generate_config(CONFIGS / "tiny.yaml", ["generate.cameras.handheld.enabled=true"])


@pytest.fixture(scope="module")
def tiny_seq(tiny_cfg):
    return generate_sequence(make_spec(tiny_cfg, 0, 2))


def test_shapes_and_dtypes(tiny_cfg, tiny_seq):
    s = tiny_seq
    T, V, N = tiny_cfg.num_frames, tiny_cfg.cameras.num_views, tiny_cfg.num_points
    K = s.num_objects
    W, H = tiny_cfg.cameras.width, tiny_cfg.cameras.height
    assert s.points.shape == (T, V, N, 3) and s.points.dtype == np.float32
    assert s.num_valid.shape == (T, V) and s.num_valid.dtype == np.int32 and np.all(s.num_valid > N)
    assert s.labels.shape == (T, V, N) and s.labels.dtype == np.int16
    assert s.labels.min() >= -1 and s.labels.max() < K
    assert s.normals.shape == (T, V, N, 3) and s.normals.dtype == np.float16
    np.testing.assert_allclose(np.linalg.norm(s.normals.astype(np.float32), axis=-1), 1.0, atol=2e-3)
    assert s.depth.shape == (T, V, H, W) and s.depth.dtype == np.uint16
    assert s.instance.shape == (T, V, H, W) and s.instance.dtype == np.int16
    assert s.camera_poses.shape == (T, V, 4, 4) and s.object_poses.shape == (T, K, 4, 4)
    assert np.array_equal(s.image_size, np.tile([[W, H]], (V, 1)))
    np.testing.assert_allclose(s.timestamps, np.arange(T) / tiny_cfg.fps)
    assert len(s.object_names) == K and set(s.meshes) == set(s.object_names)
    # The moving camera moves, the static ones do not.
    assert not np.allclose(s.camera_poses[0, -1], s.camera_poses[-1, -1])
    np.testing.assert_array_equal(s.camera_poses[0, 0], s.camera_poses[-1, 0])


def assert_points_agree_with_images(s) -> None:
    """Every stored point projects onto a pixel with its label and depth; num_valid counts the valid pixels."""
    for t in range(s.num_frames):
        for v in range(s.num_views):
            uv = np.rint(project_points(s.intrinsics[v], s.points[t, v].astype(np.float64))).astype(int)
            cols, rows = uv[:, 0], uv[:, 1]
            assert np.array_equal(s.instance[t, v][rows, cols], s.labels[t, v])
            np.testing.assert_allclose(s.depth[t, v][rows, cols] / 1000.0, s.points[t, v, :, 2], atol=6e-4)
            assert s.num_valid[t, v] == np.count_nonzero(s.depth[t, v])


def test_labels_and_depth_agree_with_the_images(tiny_seq):
    assert_points_agree_with_images(tiny_seq)


def test_same_spec_gives_identical_arrays(tiny_cfg):
    from synthseq.generator.render import make_renderer

    cfg = dataclasses.replace(tiny_cfg, sensor="kinect")
    spec = make_spec(cfg, 3, 1)
    a = generate_sequence(spec)
    renderer = make_renderer("raycast")
    generate_sequence(make_spec(cfg, 3, 0), renderer)  # a reused renderer with other state cached
    b = generate_sequence(spec, renderer)
    renderer.close()
    for name in _ARRAYS:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.object_names == b.object_names and a.seed == b.seed == spec.seed
    for n in a.object_names:
        assert np.array_equal(a.meshes[n][0], b.meshes[n][0]) and np.array_equal(a.meshes[n][1], b.meshes[n][1])


def test_kinect_sensor_changes_depth_but_not_geometry_much(tiny_cfg):
    ideal = generate_sequence(make_spec(tiny_cfg, 0, 4))
    noisy = generate_sequence(make_spec(dataclasses.replace(tiny_cfg, sensor="kinect"), 0, 4))
    np.testing.assert_array_equal(ideal.camera_poses, noisy.camera_poses)
    np.testing.assert_array_equal(ideal.object_poses, noisy.object_poses)
    assert noisy.num_valid.sum() < ideal.num_valid.sum()  # dropout, edges, range
    assert not np.array_equal(ideal.depth, noisy.depth)
    both = (ideal.depth > 0) & (noisy.depth > 0)
    diff = np.abs(ideal.depth[both].astype(float) - noisy.depth[both])
    assert np.median(diff) < 50  # mm: noise of a few cm at 2-4 m, lateral shifts aside


def test_sample_view_matches_naive_reference():
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 3.0, size=(30, 40)).astype(np.float32)
    depth[rng.random((30, 40)) < 0.3] = 0.0
    instance = rng.integers(-1, 3, size=(30, 40)).astype(np.int16)
    K = np.array([[35.0, 0, 19.5], [0, 36.0, 14.5], [0, 0, 1]])
    for N in (64, 2000):
        p, lab, nrm, m = sample_view(depth, instance, K, N, np.random.default_rng(5))
        ref_pts, ref_pix = backproject_depth(depth, K)
        idx = sample_fixed(N, len(ref_pts), np.random.default_rng(5))
        assert m == len(ref_pts) and nrm is None
        np.testing.assert_allclose(p, ref_pts[idx], atol=1e-6)
        assert np.array_equal(lab, instance[ref_pix[idx, 0], ref_pix[idx, 1]])
    p, lab, nrm, m = sample_view(np.zeros((30, 40), np.float32), instance, K, 16, rng, np.zeros((30, 40)), instance)
    assert m == 0 and not p.any() and np.all(lab == -1) and not nrm.any()


def test_shard_round_trip(tmp_path, tiny_seq):
    from synthseq.datasets.shards import ShardReader, ShardWriter

    with ShardWriter(tmp_path / "shard-00000.h5") as w:
        w.write("000002", tiny_seq)
    with ShardReader(tmp_path / "shard-00000.h5") as r:
        back = r.read("000002")
    for name in _ARRAYS:
        assert np.array_equal(getattr(back, name), getattr(tiny_seq, name)), name
    assert back.object_names == tiny_seq.object_names and back.seed == tiny_seq.seed


def test_import_does_not_pull_heavy_dependencies():
    code = ("import sys, synthseq.generator, synthseq.generator.sequence, synthseq.generator.config, "
            "synthseq.generator.scene, synthseq.generator.render\n"
            "bad = [m for m in ('torch', 'ray', 'open3d', 'pyrender', 'trimesh') if m in sys.modules]\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.slow
def test_default_config_sequence(meshes_dir):
    import time

    cfg = load_generate_config(CONFIGS / "default.yaml")
    spec = make_spec(cfg, 0, 0)
    t0 = time.perf_counter()
    seq = generate_sequence(spec)
    seconds = time.perf_counter() - t0
    assert seq.points.shape == (30, 5, 2048, 3) and seq.num_objects == 10
    assert np.all(seq.num_valid > 2048)
    assert seconds < 60, seconds


def test_optional_arrays_off(tiny_cfg):
    cfg = load_generate_config(CONFIGS / "tiny.yaml", ["generate.store.normals=false", "generate.store.depth=false",
                                                       "generate.store.instance=false", "generate.num_frames=1"])
    seq = generate_sequence(make_spec(cfg, 0, 0))
    assert seq.normals is None and seq.depth is None and seq.instance is None
    assert seq.points.shape[:2] == (1, 2) and seq.labels is not None


def test_no_room_background_is_invalid(tiny_cfg):
    cfg = load_generate_config(CONFIGS / "tiny.yaml", ["generate.room.enabled=false", "generate.num_frames=2"])
    seq = generate_sequence(make_spec(cfg, 0, 1))
    seen = seq.num_valid > 0
    assert seen.any() and np.all(seq.labels[seen] >= 0)  # only objects are hit; empty pixels are invalid
    assert np.all(seq.num_valid < 80 * 60)


def test_same_arrays_in_another_process(tiny_cfg):
    """No dependence on the process (hash salt, import order, caches): a fresh interpreter gives the same bytes."""
    import hashlib

    def digest(seq):
        h = hashlib.sha256()
        for name in _ARRAYS:
            h.update(np.ascontiguousarray(getattr(seq, name)).tobytes())
        return h.hexdigest()

    code = (
        "import hashlib, numpy as np\n"
        "from synthseq.generator.config import load_generate_config\n"
        "from synthseq.generator.sequence import make_spec, generate_sequence\n"
        f"cfg = load_generate_config({str(CONFIGS / 'tiny.yaml')!r}, ['generate.cameras.handheld.enabled=true',"
        " 'generate.sensor=kinect'])\n"
        "seq = generate_sequence(make_spec(cfg, 9, 4))\n"
        "h = hashlib.sha256()\n"
        f"for name in {_ARRAYS!r}:\n"
        "    h.update(np.ascontiguousarray(getattr(seq, name)).tobytes())\n"
        "print(h.hexdigest())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "PYTHONHASHSEED": "123"})
    cfg = dataclasses.replace(tiny_cfg, sensor="kinect")
    assert out.stdout.strip() == digest(generate_sequence(make_spec(cfg, 9, 4)))


def test_torch_device_path_cpu(tiny_cfg):
    """generate_sequence(device=...) runs sensor, sampling, back-projection and normals as torch code: the
    same contracts as the numpy path (points on the stored depth, labels from the instance image, unit
    normals), deterministic, and statistically like the numpy path."""
    pytest.importorskip("torch")
    cfg = dataclasses.replace(tiny_cfg, sensor="kinect",
                              store=dataclasses.replace(tiny_cfg.store, depth=True, instance=True, normals=True))
    spec = make_spec(cfg, 0, 1)
    a = generate_sequence(spec, device="cpu")
    b = generate_sequence(spec, device="cpu")
    ref = generate_sequence(spec)
    for name in _ARRAYS:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
        assert getattr(a, name).dtype == getattr(ref, name).dtype and getattr(a, name).shape == getattr(ref, name).shape
    np.testing.assert_array_equal(a.camera_poses, ref.camera_poses)
    assert abs(a.num_valid.mean() / ref.num_valid.mean() - 1) < 0.02
    assert_points_agree_with_images(a)
    np.testing.assert_allclose(np.linalg.norm(a.normals.astype(np.float64), axis=-1), 1.0, atol=2e-3)


def test_torch_sample_views_contract():
    """Few valid pixels: every valid pixel once first (shuffled), then repeats; none: zeros and -1; many:
    without replacement. Normals equal the numpy depth_normals on the same pixels."""
    torch = pytest.importorskip("torch")
    from synthseq.generator.device import device_generator, sample_views
    from synthseq.generator.sequence import depth_normals

    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 3.0, size=(3, 30, 40)).astype(np.float32)
    depth[0][rng.random((30, 40)) < 0.3] = 0.0
    depth[1] = 0.0
    depth[2] = 0.0
    depth[2, 5, 7:12] = 1.0  # 5 valid pixels
    instance = rng.integers(-1, 3, size=depth.shape).astype(np.int16)
    K = np.array([[35.0, 0, 19.5], [0, 36.0, 14.5], [0, 0, 1]])
    d, i = torch.from_numpy(depth), torch.from_numpy(instance)
    p, lab, nrm, m = sample_views(d, i, K, 64, device_generator(1, "cpu"), d, i)
    assert p.shape == (3, 64, 3) and lab.dtype == torch.int16 and m.tolist() == [int((depth[0] > 0).sum()), 0, 5]
    p, lab, nrm, m = p.numpy(), lab.numpy(), nrm.numpy(), m.numpy()
    ref_pts, ref_pix = backproject_depth(depth[0], K)
    # view 0: 64 distinct valid pixels
    uv = np.rint(project_points(K, p[0].astype(np.float64))).astype(int)
    assert len({tuple(x) for x in uv}) == 64 and np.all(depth[0][uv[:, 1], uv[:, 0]] > 0)
    np.testing.assert_allclose(p[0, :, 2], depth[0][uv[:, 1], uv[:, 0]], rtol=1e-6)
    assert np.array_equal(lab[0], instance[0][uv[:, 1], uv[:, 0]])
    np.testing.assert_allclose(nrm[0], depth_normals(depth[0], instance[0], uv[:, 1], uv[:, 0], K), atol=1e-5)
    # view 1: nothing valid
    assert not p[1].any() and np.all(lab[1] == -1) and not nrm[1].any()
    # view 2: the 5 valid pixels first, each once, then repeats of them
    cols = np.rint(project_points(K, p[2].astype(np.float64))[:, 0]).astype(int)
    assert sorted(cols[:5].tolist()) == [7, 8, 9, 10, 11] and set(cols[5:].tolist()) <= {7, 8, 9, 10, 11}


def test_sample_views_equals_sample_view_per_view():
    """The batched sampler (what generate_sequence uses) against the one-view reference, view by view, with
    the same random stream: many valid pixels, few (repeats), none."""
    from synthseq.generator.sequence import sample_views

    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 3.0, size=(4, 30, 40)).astype(np.float32)
    depth[0][rng.random((30, 40)) < 0.3] = 0.0
    depth[1] = 0.0
    depth[2][rng.random((30, 40)) < 0.97] = 0.0  # fewer valid pixels than N
    instance = rng.integers(-1, 3, size=depth.shape).astype(np.int16)
    ideal = depth + np.float32(0.01)
    K = np.array([[35.0, 0, 19.5], [0, 36.0, 14.5], [0, 0, 1]])
    p, lab, nrm, m = sample_views(depth, instance, K, 100, np.random.default_rng(5), ideal, instance)
    ref_rng = np.random.default_rng(5)
    for b in range(4):
        rp, rl, rn, rm = sample_view(depth[b], instance[b], K, 100, ref_rng, ideal[b], instance[b])
        assert m[b] == rm
        np.testing.assert_array_equal(p[b], rp)
        np.testing.assert_array_equal(lab[b], rl)
        np.testing.assert_allclose(nrm[b], rn, atol=1e-6)


@pytest.mark.parametrize("renderer", ["moderngl", "raycast"])
def test_simplified_mesh_files_are_the_ground_truth(renderer, meshes_dir):
    """objects.mesh_detail: the simplified mesh is what is rendered and what the sequence stores, so labelled
    points lie on the stored meshes as with full meshes."""
    from test_geometry import assert_labelled_points_on_their_meshes

    from synthseq.generator.assets import unit_mesh

    cfg = load_generate_config(CONFIGS / "tiny.yaml", [
        f"generate.objects.mesh_dir={meshes_dir}", "generate.objects.count=4", "generate.objects.mesh_ratio=1.0",
        "generate.objects.mesh_detail=32", "generate.sensor=ideal", "generate.num_frames=3",
        f"generate.renderer={renderer}"])
    spec = make_spec(cfg, 7, 0)
    assert all(o.is_mesh_file and (o.detail, o.simplify) == (32, "quadric") for o in spec.objects)
    seq = generate_sequence(spec)
    for o in spec.objects:
        faces, full_faces = len(seq.meshes[o.name][1]), len(unit_mesh(o.path)[1])
        assert faces <= full_faces and (full_faces < 2000 or faces < full_faces / 2)  # tray, bunny, box: simplified
    assert (seq.labels >= 0).sum() > 100
    assert_labelled_points_on_their_meshes(seq)
