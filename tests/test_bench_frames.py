"""bench/bench_frames.py: single real frames of sensors and rooms the estimator never trained on, seen again from a
known second camera pose. The second view is geometry (its points moved by the truth lie on the first view's
surfaces, a wrong pose does not), and the shipped estimator registers such pairs where the identity fails."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench" / "bench_frames.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_frames", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_second_view_lies_on_the_first_views_surfaces(real_dir):
    pytest.importorskip("PIL", reason="the frames are PNG / TIFF (pip install Pillow)")
    from scipy.spatial import cKDTree
    from scipy.spatial.transform import Rotation

    bench = _bench()
    if not (real_dir / "pcl_test_clouds").is_dir():
        pytest.skip(f"{real_dir / 'pcl_test_clouds'} is absent")
    cloud_a = bench.load_frames(real_dir, 4.0, ["pcl_grabber"])["pcl_grabber"]
    assert 200_000 < len(cloud_a) < 307_200 and cloud_a.dtype == np.float32
    a_from_b = np.eye(4)
    a_from_b[:3, :3] = Rotation.from_rotvec(np.radians(10.0) * np.array([0.0, 1.0, 0.2]) / np.hypot(1, 0.2)).as_matrix()
    a_from_b[:3, 3] = [0.06, -0.02, 0.08]
    cloud_b = bench.second_view(cloud_a, a_from_b, np.random.default_rng(0))
    assert 20_000 < len(cloud_b) <= 320 * 240
    tree = cKDTree(cloud_a)
    on = tree.query(cloud_b @ a_from_b[:3, :3].T + a_from_b[:3, 3])[0]
    off = tree.query(cloud_b @ a_from_b[:3, :3].T)[0]  # the rotation without the 10 cm translation
    assert np.median(on) < 0.01, np.median(on)  # the Kinect noise at ~1 m, not a pose error
    assert np.median(off) > 3 * np.median(on)


def test_shipped_estimator_registers_frames_of_other_sensors(real_dir, tmp_path):
    pytest.importorskip("torch", reason="the estimator needs torch (pip install 'synthseq[train]')")
    pytest.importorskip("open3d", reason="the estimator samples with open3d (pip install 'synthseq[render]')")
    if not (real_dir / "single_frames_open3d").is_dir() or not (real_dir / "pcl_test_clouds").is_dir():
        pytest.skip(f"{real_dir}/single_frames_open3d or pcl_test_clouds is absent")
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--data", str(real_dir), "--frames", "sun_rgbd", "pcl_grabber",
                           "--motions", "2", "--methods", "identity", "ours", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())
    assert len(rows) == 8 and {r["method"] for r in rows} == {"identity", "ours"}
    for r in rows:
        assert r["success"] == (r["method"] == "ours"), r  # 5 / 10 deg motions: the identity is off by them
    assert "| ours | 2 / 2 | 2 / 2 | 4 / 4 |" in proc.stdout
    bad = subprocess.run([sys.executable, str(BENCH), "--data", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 2 and "not found" in bad.stderr and bad.stderr.count("\n") == 1
