"""Tests for datasets/real: load_capture on TUM RGB-D, 7-Scenes and point-cloud folders; bad input; parsers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from synthseq.datasets import load_capture
from synthseq.datasets.real import detect_format
from synthseq.datasets.real.sevenscenes import read_pose_matrix
from synthseq.datasets.real.tum import FR1_INTRINSICS, read_tum_list
from synthseq.datasets.trajectory import read_tum_trajectory
from synthseq.errors import DataError
from synthseq.geometry import project_points


# --------------------------------------------------------------------------------------------- helpers

def _write_png16(path, array):
    Image.fromarray(np.asarray(array, dtype=np.uint16)).save(path)


def make_tum_folder(root, T=3, gt_offsets=(0.0, 0.001, -0.002), depth_value=10000, size=(64, 48)):
    """A tiny TUM folder: T flat depth frames (depth_value / 5000 m) 1/30 s apart, GT rows near each."""
    (root / "depth").mkdir(parents=True)
    W, H = size
    lines = ["# depth maps", "# timestamp filename"]
    gt = ["# ground truth trajectory", "# timestamp tx ty tz qx qy qz qw"]
    for i in range(T):
        t = 100.0 + i / 30.0
        name = f"depth/{t:.6f}.png"
        img = np.full((H, W), depth_value, np.uint16)
        img[0, :] = 0  # an invalid row
        _write_png16(root / name, img)
        lines.append(f"{t:.6f} {name}")
    for i, off in enumerate(gt_offsets):
        gt.append(f"{100.0 + i / 30.0 + off:.6f} {0.1 * i} 0 0 0 0 0 1")
    (root / "depth.txt").write_text("\n".join(lines) + "\n")
    (root / "groundtruth.txt").write_text("\n".join(gt) + "\n")
    return root


def make_7scenes_folder(root, T=2, size=(64, 48)):
    root.mkdir(parents=True)
    W, H = size
    for i in range(T):
        img = np.full((H, W), 2000, np.uint16)
        img[:, :4] = 65535
        img[:, 4:8] = 0
        _write_png16(root / f"frame-{i:06d}.depth.png", img)
        P = np.eye(4)
        P[:3, 3] = [0.1 * i, 0.0, 0.0]
        np.savetxt(root / f"frame-{i:06d}.pose.txt", P)
    return root


# --------------------------------------------------------------------------------------------- real data

def test_tum_xyz_pair_backprojection_matches_pixels(tum_xyz_pair_dir):
    seq = load_capture(tum_xyz_pair_dir, num_points=2048, keep_depth=True)
    assert detect_format(tum_xyz_pair_dir) == "tum"
    assert seq.points.shape == (2, 1, 2048, 3) and seq.points.dtype == np.float32
    assert seq.camera_poses.shape == (2, 1, 4, 4)
    np.testing.assert_allclose(seq.intrinsics[0], FR1_INTRINSICS)
    assert seq.image_size.tolist() == [[640, 480]]
    assert seq.timestamps.tolist() == [1305031102.160407, 1305031102.262886]
    # PROVENANCE: valid fraction 0.75, depth 0.858-3.717 m.
    assert np.all(np.abs(seq.num_valid / (640 * 480) - 0.75) < 0.02)
    z = seq.points[..., 2]
    assert z.min() >= 0.858 - 1e-4 and z.max() <= 3.717 + 1e-4
    # Geometry: every point projects back onto an integer pixel whose PNG value / 5000 is its z.
    raw = np.asarray(Image.open(tum_xyz_pair_dir / "depth" / "1305031102.160407.png"))
    uv = project_points(seq.intrinsics[0], seq.points[0, 0].astype(np.float64))
    cols, rows = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
    assert np.max(np.abs(uv - np.stack([cols, rows], 1))) < 1e-3
    np.testing.assert_allclose(seq.points[0, 0, :, 2], raw[rows, cols] / 5000.0, rtol=1e-6)
    # keep_depth stores millimetres.
    np.testing.assert_array_equal(seq.depth[0, 0], np.round(raw / 5.0).astype(np.uint16))
    # The GT rows associated by nearest timestamp (<= 4.6 ms).
    gt_t, gt = read_tum_trajectory(tum_xyz_pair_dir / "groundtruth.txt")
    i = np.argmin(np.abs(gt_t - seq.timestamps[0]))
    np.testing.assert_array_equal(seq.camera_poses[0, 0], gt[i])


def test_tum_rpy_frame_selection_and_seed(tum_rpy_dir):
    a = load_capture(tum_rpy_dir, start=10, stride=5, max_frames=3, num_points=256, seed=1)
    assert a.points.shape == (3, 1, 256, 3)
    _, names = read_tum_list(tum_rpy_dir / "depth.txt")
    assert a.timestamps[0] == pytest.approx(float(names[10][len("depth/"):-4]))
    # A frame's points depend on (seed, frame index) only, not on the selection.
    b = load_capture(tum_rpy_dir, start=15, max_frames=1, num_points=256, seed=1)
    np.testing.assert_array_equal(a.points[1], b.points[0])
    c = load_capture(tum_rpy_dir, start=15, max_frames=1, num_points=256, seed=2)
    assert not np.array_equal(c.points[0], b.points[0])
    near = load_capture(tum_rpy_dir, start=15, max_frames=1, num_points=256, max_depth_m=1.5, min_depth_m=1.0)
    assert near.points[..., 2].max() <= 1.5 and near.points[..., 2].min() >= 1.0
    assert near.num_valid[0, 0] < b.num_valid[0, 0]
    vox = load_capture(tum_rpy_dir, start=15, max_frames=1, num_points=256, voxel_size_m=0.05)
    assert vox.num_valid[0, 0] < b.num_valid[0, 0] / 10


def test_sevenscenes_reads_poses_and_intrinsics(sevenscenes_dir):
    seq = load_capture(sevenscenes_dir, max_frames=3, stride=10, num_points=512)
    assert detect_format(sevenscenes_dir) == "7scenes"
    assert seq.points.shape == (3, 1, 512, 3)
    np.testing.assert_allclose(seq.intrinsics[0], [[585, 0, 320], [0, 585, 240], [0, 0, 1]])
    assert seq.timestamps.tolist() == pytest.approx([0.0, 10 / 30, 20 / 30])
    raw_pose = np.loadtxt(sevenscenes_dir / "frame-000010.pose.txt")
    np.testing.assert_allclose(seq.camera_poses[1, 0], raw_pose, atol=3e-4)
    R = seq.camera_poses[:, 0, :3, :3]
    np.testing.assert_allclose(R @ np.swapaxes(R, 1, 2), np.tile(np.eye(3), (3, 1, 1)), atol=1e-12)
    z = seq.points[..., 2]
    assert z.min() >= 0.801 - 1e-4 and z.max() <= 3.602 + 1e-4  # PROVENANCE: valid 801-3602 mm


def test_pointcloud_folder(real_dir):
    seq = load_capture(real_dir / "pcl_test_clouds", num_points=500)
    assert detect_format(real_dir / "pcl_test_clouds") == "pointclouds"
    # bun0, bun4, office1, table_scene_mug_stereo_textured (by name); finite counts from PROVENANCE.md.
    assert seq.num_valid[:, 0].tolist() == [397, 361, 254456, 209280]
    assert seq.camera_poses is None and seq.points.shape == (4, 1, 500, 3)
    assert np.all(np.isfinite(seq.points))
    one = load_capture(real_dir / "pcl_test_clouds" / "bun0.pcd", num_points=100)
    assert one.points.shape == (1, 1, 100, 3)


def test_light_import_does_not_pull_torch_or_open3d(tum_xyz_pair_dir):
    code = ("import sys, synthseq.datasets as d; d.load_capture(sys.argv[1], num_points=16); "
            "bad = [m for m in ('torch', 'open3d') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code, str(tum_xyz_pair_dir)], check=True)


# --------------------------------------------------------------------------------------------- synthetic folders

def test_tum_synthetic_folder_and_tolerance(tmp_path):
    root = make_tum_folder(tmp_path / "tum")
    seq = load_capture(root, num_points=100)
    assert seq.points.shape == (3, 1, 100, 3)
    assert seq.num_valid[:, 0].tolist() == [64 * 47] * 3
    np.testing.assert_allclose(seq.points[..., 2], 2.0)
    np.testing.assert_allclose(seq.camera_poses[:, 0, 0, 3], [0.0, 0.1, 0.2])
    no_gt = load_capture(root, groundtruth=False, num_points=10)
    assert no_gt.camera_poses is None


def test_tum_frame_without_ground_truth(tmp_path):
    root = make_tum_folder(tmp_path / "tum", gt_offsets=(0.0, -0.03, 0.0))
    with pytest.raises(DataError, match=r"groundtruth\.txt: no ground-truth pose within 0\.02 s of depth frame "
                                        r"100\.0333"):
        load_capture(root, missing_pose="error")
    seq = load_capture(root, num_points=8)  # default: dropped (with a warning), so a mocap gap never crashes
    assert seq.num_frames == 2
    kept = load_capture(root, missing_pose="nan", num_points=8)
    assert kept.num_frames == 3 and np.isnan(kept.camera_poses[1]).all() and np.isfinite(kept.camera_poses[[0, 2]]).all()
    assert load_capture(root, max_time_difference=0.06, num_points=8).num_frames == 3


def test_missing_depth_txt_and_pngs(tmp_path):
    root = make_tum_folder(tmp_path / "tum")
    (root / "depth.txt").rename(root / "depth.bak")
    with pytest.raises(FileNotFoundError, match=r"tum/depth\.txt"):
        load_capture(root)
    (root / "depth.bak").rename(root / "depth.txt")
    next((root / "depth").iterdir()).unlink()
    with pytest.raises(FileNotFoundError, match=r"depth/100\.\d+\.png: depth image not found"):
        load_capture(root)


def test_png_not_16_bit_and_truncated(tmp_path, tum_xyz_pair_dir):
    root = make_tum_folder(tmp_path / "tum")
    first = sorted((root / "depth").iterdir())[0]
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(first)
    with pytest.raises(DataError, match=rf"{first.name}: expected a 16-bit greyscale depth image .*got mode L"):
        load_capture(root)
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(first)
    with pytest.raises(DataError, match="got mode RGB"):
        load_capture(root)
    data = (tum_xyz_pair_dir / "depth" / "1305031102.160407.png").read_bytes()
    first.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=rf"{first.name}: unreadable or truncated"):
        load_capture(root)
    first.write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=rf"{first.name}: not an image"):
        load_capture(root)


def test_sevenscenes_synthetic_invalid_values_and_missing_pose(tmp_path):
    root = make_7scenes_folder(tmp_path / "seven")
    seq = load_capture(root, num_points=50, keep_depth=True)
    assert seq.num_valid[:, 0].tolist() == [48 * 56] * 2  # 0 and 65535 columns dropped
    np.testing.assert_allclose(seq.points[..., 2], 2.0)
    assert seq.depth.max() == 2000
    np.testing.assert_allclose(seq.camera_poses[1, 0, :3, 3], [0.1, 0, 0])
    (root / "frame-000001.pose.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"frame-000001\.pose\.txt: pose file missing"):
        load_capture(root)
    assert load_capture(root, poses=False, num_points=8).camera_poses is None
    (root / "frame-000000.pose.txt").write_text("1 0 0 0\n0 1 0 0\n0 0 1 0\n")
    with pytest.raises(DataError, match=r"frame-000000\.pose\.txt: expected 4 rows"):
        read_pose_matrix(root / "frame-000000.pose.txt")


def test_bad_point_clouds(tmp_path):
    folder = tmp_path / "clouds"
    folder.mkdir()
    (folder / "a.xyz").write_text("# nothing\n")
    with pytest.raises(DataError, match=r"a\.xyz: empty point cloud"):
        load_capture(folder)
    (folder / "a.xyz").write_text("0 0 1\n1 1 two\n")
    with pytest.raises(DataError, match=r"a\.xyz:2: expected 'x y z'"):
        load_capture(folder)
    (folder / "a.xyz").unlink()
    np.save(folder / "b.npy", np.full((10, 3), np.nan, np.float32))
    with pytest.raises(DataError, match=r"b\.npy: no finite point"):
        load_capture(folder)
    np.save(folder / "b.npy", np.zeros((0, 3), np.float32))
    with pytest.raises(DataError, match=r"b\.npy: empty point cloud"):
        load_capture(folder)
    np.save(folder / "b.npy", np.ones((5, 2), np.float32))
    with pytest.raises(DataError, match=r"b\.npy: expected a numeric array of shape"):
        load_capture(folder)
    (folder / "b.npy").unlink()
    (folder / "c.ply").write_text("ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\n"
                                  "property float z\nend_header\n")
    with pytest.raises(DataError, match=r"c\.ply: empty or unreadable"):
        load_capture(folder)
    (folder / "c.ply").unlink()
    pcd = ("# .PCD v0.7\nVERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 2\nHEIGHT 1\n"
           "VIEWPOINT 0 0 0 1 0 0 0\nPOINTS 2\nDATA ascii\nnan nan nan\nnan nan nan\n")
    (folder / "d.pcd").write_text(pcd)
    with pytest.raises(DataError, match=r"d\.pcd: (no finite point|empty or unreadable)"):
        load_capture(folder)
    (folder / "d.pcd").unlink()
    np.save(folder / "e.npy", np.arange(12, dtype=np.float32).reshape(2, 2, 3))
    ok = load_capture(folder, num_points=4)
    assert ok.num_valid.tolist() == [[4]] and ok.camera_poses is None


def test_unknown_folder(tmp_path):
    with pytest.raises(DataError, match="unknown capture format"):
        load_capture(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_capture(tmp_path / "missing")


# --------------------------------------------------------------------------------------------- properties

_TEXT = st.text(alphabet="0123456789.-+eE #\n\t ,naifx/png", max_size=200)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200) | _TEXT)
def test_property_tum_list_only_raises_data_error(tmp_path, data):
    path = tmp_path / "depth.txt"
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    try:
        stamps, names = read_tum_list(path)
    except DataError as e:
        assert str(path) in str(e)
    else:
        assert len(stamps) == len(names) > 0 and np.all(np.diff(stamps) > 0)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200) | _TEXT
       | st.lists(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=3, max_size=5),
                  min_size=3, max_size=5).map(lambda rows: "\n".join(" ".join(map(str, r)) for r in rows)))
def test_property_7scenes_pose_only_raises_data_error(tmp_path, data):
    path = tmp_path / "frame-000000.pose.txt"
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    try:
        M = read_pose_matrix(path)
    except DataError as e:
        assert str(path) in str(e)
    else:
        assert M.shape == (4, 4) and np.allclose(M[:3, :3] @ M[:3, :3].T, np.eye(3), atol=1e-9)
