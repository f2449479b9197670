"""Issue 14: a TUM folder carries its camera (freiburg1/2/3 from its name or depth.txt's header; an
intrinsics.txt wins), and `synthseq info` prints the intrinsics chosen and where they came from."""

from __future__ import annotations

import numpy as np
import pytest

from synthseq.datasets.real import capture_intrinsics, load_capture
from synthseq.datasets.real.tum import TUM_CAMERAS
from synthseq.errors import DataError
from synthseq.geometry import project_points
from test_real_readers import make_tum_folder


@pytest.mark.parametrize("name, camera", [("rgbd_dataset_freiburg1_xyz", "freiburg1"),
                                          ("rgbd_dataset_freiburg2_desk", "freiburg2"),
                                          ("rgbd_dataset_freiburg3_long_office_household", "freiburg3"),
                                          ("tum_fr3_walk", "freiburg3"), ("TUM_FR2_x", "freiburg2")])
def test_camera_from_folder_name(tmp_path, name, camera):
    root = make_tum_folder(tmp_path / name, T=1, gt_offsets=(0.0,))
    K, source = capture_intrinsics(root)
    assert np.array_equal(K, TUM_CAMERAS[camera]) and source == f"folder name ({camera})"
    seq = load_capture(root, num_points=50)
    assert np.array_equal(seq.intrinsics[0], TUM_CAMERAS[camera])
    # the points are back-projected with that camera: they project back inside the image with it
    uv = project_points(seq.intrinsics[0], seq.points[0, 0].astype(np.float64))
    assert (uv >= -0.5).all() and (uv[:, 0] <= 63.5).all() and (uv[:, 1] <= 47.5).all()


def test_published_values():
    # TUM RGB-D website, calibrated colour cameras (depth is registered to them)
    assert [TUM_CAMERAS["freiburg1"][i, j] for i, j in ((0, 0), (1, 1), (0, 2), (1, 2))] == [517.3, 516.5, 318.6, 255.3]
    assert [TUM_CAMERAS["freiburg2"][i, j] for i, j in ((0, 0), (1, 1), (0, 2), (1, 2))] == [520.9, 521.0, 325.1, 249.7]
    assert [TUM_CAMERAS["freiburg3"][i, j] for i, j in ((0, 0), (1, 1), (0, 2), (1, 2))] == [535.4, 539.2, 320.1, 247.6]


def test_header_then_ros_default(tmp_path):
    root = make_tum_folder(tmp_path / "capture", T=1, gt_offsets=(0.0,))
    K, source = capture_intrinsics(root)
    assert source == "ROS default (camera unknown)" and K[0, 0] == 525.0 and K[1, 2] == 239.5
    text = (root / "depth.txt").read_text()
    (root / "depth.txt").write_text("# file: 'rgbd_dataset_freiburg2_pioneer_360.bag'\n" + text)
    K, source = capture_intrinsics(root)
    assert source == "depth.txt header (freiburg2)" and np.array_equal(K, TUM_CAMERAS["freiburg2"])


def test_intrinsics_txt_wins(tmp_path):
    root = make_tum_folder(tmp_path / "rgbd_dataset_freiburg3_x", T=1, gt_offsets=(0.0,))
    (root / "intrinsics.txt").write_text("# fx fy cx cy\n600 610 31.5 23.5\n")
    K, source = capture_intrinsics(root)
    assert source == "intrinsics.txt" and K[0, 0] == 600 and K[1, 1] == 610 and K[0, 2] == 31.5
    assert np.array_equal(load_capture(root, num_points=8).intrinsics[0], K)
    # an explicit argument wins over everything
    assert load_capture(root, num_points=8, intrinsics=(500, 500, 30, 20)).intrinsics[0, 0, 0] == 500
    (root / "intrinsics.txt").write_text("600 610 31.5\n")
    with pytest.raises(DataError, match=r"intrinsics.txt:1: expected 4 numbers \('fx fy cx cy'\)"):
        load_capture(root, num_points=8)
    (root / "intrinsics.txt").write_text("-600 610 31.5 23.5\n")
    with pytest.raises(DataError, match="positive focal lengths"):
        capture_intrinsics(root)


def test_info_prints_intrinsics_and_source(tmp_path, capsys):
    from synthseq.pipelines.cli import main

    root = make_tum_folder(tmp_path / "rgbd_dataset_freiburg3_sitting", T=4, gt_offsets=(0.0, 0.0, 0.025, 0.0))
    assert main(["info", f"{root}@1:4"]) == 0
    out = capsys.readouterr().out
    assert "tum, 3 frames (range 1:4)" in out
    assert "fx 535.4, fy 539.2, cx 320.1, cy 247.6 (from folder name (freiburg3))" in out
    assert "camera poses for 2 of 3 frames; 1 frame(s) without a pose within tolerance (frames [2])" in out
    assert main(["info", f"{root}@0:9"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "frame range 0:9 is out of bounds: the capture has 4 frames" in err[0]


def test_shared_captures_get_freiburg1(real_dir):
    for name in ("tum_fr1_rpy", "tum_fr1_xyz_a", "tum_fr1_xyz_b"):
        K, source = capture_intrinsics(real_dir / name)
        assert np.array_equal(K, TUM_CAMERAS["freiburg1"]) and "freiburg1" in source
    K, source = capture_intrinsics(real_dir / "7scenes_redkitchen")
    assert source == "camera-intrinsics.txt"
