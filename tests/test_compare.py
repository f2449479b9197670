"""`synthseq compare`: the per-frame statistics against geometry with known answers, the pooled W1 weighting,
and the command on a real generated dataset against a real capture (table, JSON, PNG; bad input = one line)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from synthseq.pipelines.cli import main
from synthseq.pipelines.compare import knn_distance, local_patches, normal_view_angles, pooled_w1, wilson_interval

CONFIGS = Path(__file__).resolve().parents[1] / "pipelines" / "configs"


def _plane(angle_deg: float, z0: float = 2.0, n: int = 40, spacing: float = 0.01) -> np.ndarray:
    """A grid of points on a plane through (0, 0, z0) whose normal is tilted ``angle_deg`` from the optical axis
    about x."""
    a = np.radians(angle_deg)
    u, v = np.meshgrid(np.arange(n) - n / 2, np.arange(n) - n / 2)
    u, v = u.ravel() * spacing, v.ravel() * spacing
    return np.stack([u, v * np.cos(a), z0 + v * np.sin(a)], axis=1)


@pytest.mark.parametrize("angle", [0.0, 30.0, 60.0])
def test_normal_view_angles_of_tilted_planes(angle):
    p = _plane(angle)
    got = normal_view_angles(p)
    a = np.radians(angle)
    normal = np.array([0.0, -np.sin(a), np.cos(a)])  # x cross (0, cos a, sin a)
    expected = np.degrees(np.arccos(np.abs(p @ normal) / np.linalg.norm(p, axis=1)))
    assert np.abs(got - expected).max() < 1e-6


def test_knn_distance_of_a_regular_grid():
    p = _plane(0.0, spacing=0.02)
    d = knn_distance(p, k=4)
    interior = (np.abs(p[:, 0]) < 0.3) & (np.abs(p[:, 1]) < 0.3)
    assert np.allclose(d[interior], 0.02, atol=1e-9)  # 4 nearest: the 4-neighbourhood


def test_local_patches_are_centred_and_of_one_size():
    rng = np.random.default_rng(0)
    clouds = [rng.normal(size=(300, 3)) + 5.0, rng.normal(size=(50, 3))]  # the second is too small
    patches = local_patches(clouds, 10, 64, rng)
    assert patches.shape == (10, 64, 3)
    assert np.allclose(patches.mean(axis=1), 0.0, atol=1e-12)
    assert np.all(np.abs(patches) < 6)  # from the first cloud only, centred


def test_pooled_w1_weights_every_capture_equally():
    a = {"_z": np.zeros(10)}
    b = {"_z": np.ones(1000)}
    # Equal weights: the pool is half 0 m, half 1 m; all-zero depths are 0.5 m away (concatenation: ~0.99 m).
    assert pooled_w1(np.zeros(100), [a, b]) == pytest.approx(0.5)
    assert pooled_w1(np.full(100, 0.5), [a, b]) == pytest.approx(0.5)
    assert pooled_w1(np.ones(5), [b]) == pytest.approx(0.0)


def test_wilson_interval():
    lo, hi = wilson_interval(0.5, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    lo, hi = wilson_interval(1.0, 20)
    assert hi == pytest.approx(1.0) and 0.8 < lo < 0.85


def _write_dataset(root: Path, cfg_overrides: list[str], num: int = 2) -> None:
    """A dataset written the way pipelines/build does (shards + manifest), from the real generator."""
    from synthseq.datasets.shards import FORMAT_VERSION, ShardWriter, sequence_key, sha256_file, shard_name
    from synthseq.generator.config import load_generate_config
    from synthseq.generator.scene import make_spec
    from synthseq.generator.sequence import generate_sequence

    cfg = load_generate_config(CONFIGS / "indoor.yaml", cfg_overrides)
    root.mkdir(parents=True)
    path = root / shard_name(0)
    with ShardWriter(path, config={"test": True}) as w:
        for i in range(num):
            w.write(sequence_key(i), generate_sequence(make_spec(cfg, 0, i)))
    shards = [{"file": path.name, "sequence_ids": [sequence_key(i) for i in range(num)],
               "bytes": path.stat().st_size, "sha256": sha256_file(path)}]
    (root / "manifest.json").write_text(json.dumps({"format": "synthseq", "format_version": FORMAT_VERSION,
                                                    "complete": True, "shards": shards}))


SMALL = ["generate.cameras.width=80", "generate.cameras.height=60", "generate.num_frames=4",
         "generate.num_points=512"]


@pytest.fixture(scope="module")
def indoor_root(tmp_path_factory, meshes_dir):
    root = tmp_path_factory.mktemp("cmp") / "indoor"
    _write_dataset(root, SMALL)
    return root


def test_compare_cli_writes_table_json_and_plot(indoor_root, tum_rpy_dir, sevenscenes_dir, tmp_path, capsys):
    out = tmp_path / "cmp"
    rc = main(["compare", str(indoor_root), f"{tum_rpy_dir}@0:8", f"{sevenscenes_dir}@0:8", "--out", str(out),
               "--frames", "8", "--patches", "20", "--patch-size", "32"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "synthetic (moving views)" in text and "tum_fr1_rpy@0:8" in text and "7scenes_redkitchen@0:8" in text
    assert "W1(z) synthetic vs pooled real" in text and "1-NNA" in text
    res = json.loads((out / "compare.json").read_text())
    assert res["num_points"] == 512 and res["views"] == [0, 1]
    assert set(res["real"]) == {"tum_fr1_rpy@0:8", "7scenes_redkitchen@0:8"}
    w1 = res["w1_z_m"]["synthetic_vs_pool"]
    assert 0.0 < w1 < 3.0
    # the table's number is the JSON's
    assert f"{w1:.3f} m" in text
    for s in [res["synthetic"], *res["real"].values()]:
        assert 0.0 < s["valid_ratio"]["mean"] <= 1.0
        assert 0.0 < s["normal_view_angle_deg"]["median"] < 90.0
        assert s["knn8_distance_mm"]["median"] > 0
    # the two real captures are far apart in depth (TUM desk ~1.1 m, 7-Scenes kitchen ~1.7 m)
    assert res["w1_z_m"]["real_vs_pool_of_others"]["tum_fr1_rpy@0:8"] > 0.2
    pr = res["patch_realism"]
    assert 0.5 <= pr["1nna"] <= 1.0 and pr["num_generated"] == 20
    assert pr["1nna_ci95"][0] <= pr["1nna"] <= pr["1nna_ci95"][1]
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*tmp*"))


def test_compare_bad_input_is_one_line(indoor_root, tum_rpy_dir, tmp_path, capsys):
    out = tmp_path / "cmp"
    cases = [
        ([str(tmp_path / "nope"), str(tum_rpy_dir)], "manifest"),
        ([str(indoor_root), str(tmp_path / "no_capture")], "no_capture"),
        ([str(indoor_root), f"{tum_rpy_dir}@5:5"], "empty frame range"),
        ([str(indoor_root), str(tum_rpy_dir), str(tum_rpy_dir)], "given twice"),
        ([str(indoor_root), str(tum_rpy_dir), "--patch-size", "2"], "--patch-size"),
    ]
    for args, message in cases:
        assert main(["compare", *args, "--out", str(out), "--frames", "4"]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("synthseq compare: error:") and message in err and "\n" not in err, err
    assert not out.exists()  # nothing written on failure


def test_compare_refuses_a_dataset_without_moving_views(tmp_path, tum_rpy_dir, capsys, meshes_dir):
    root = tmp_path / "static"
    from synthseq.datasets.shards import FORMAT_VERSION, ShardWriter, sequence_key, sha256_file, shard_name
    from synthseq.generator.config import load_generate_config
    from synthseq.generator.scene import make_spec
    from synthseq.generator.sequence import generate_sequence

    cfg = load_generate_config(CONFIGS / "tiny.yaml", ["generate.num_frames=2", "generate.cameras.handheld.enabled=false"])
    root.mkdir()
    path = root / shard_name(0)
    with ShardWriter(path, config={"test": True}) as w:
        w.write(sequence_key(0), generate_sequence(make_spec(cfg, 0, 0)))
    (root / "manifest.json").write_text(json.dumps({
        "format": "synthseq", "format_version": FORMAT_VERSION, "complete": True,
        "shards": [{"file": path.name, "sequence_ids": [sequence_key(0)], "bytes": path.stat().st_size,
                    "sha256": sha256_file(path)}]}))
    assert main(["compare", str(root), f"{tum_rpy_dir}@0:4"]) == 1
    assert "no moving camera view" in capsys.readouterr().err
