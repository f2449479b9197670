"""Frame ranges ``PATH@START:STOP`` (STOP exclusive) for every capture format, parsed once in the loader."""

from __future__ import annotations

import numpy as np
import pytest

from synthseq.datasets.real import load_capture, parse_capture_spec
from synthseq.errors import DataError
from test_real_readers import make_7scenes_folder, make_tum_folder


def test_parse_capture_spec_forms(tmp_path):
    s = parse_capture_spec("data/tum_fr1_rpy@0:50")
    assert (str(s.path), s.start, s.stop, s.has_range) == ("data/tum_fr1_rpy", 0, 50, True)
    assert s.display_name == "tum_fr1_rpy@0:50" and s.range_text == "0:50"
    s = parse_capture_spec("data/x@20:")
    assert (s.start, s.stop, s.range_text) == (20, None, "20:")
    s = parse_capture_spec("data/x")
    assert not s.has_range and s.frame_range is None and s.display_name == "x"
    # a folder that really has an @ in its name is a plain path
    odd = tmp_path / "cap@1:2"
    odd.mkdir()
    assert not parse_capture_spec(str(odd)).has_range


@pytest.mark.parametrize("text, match", [
    ("x@5", "malformed frame range '5'"),
    ("x@a:b", "malformed frame range"),
    ("x@-1:3", "malformed frame range"),
    ("x@", "malformed frame range"),
    ("@0:3", "malformed frame range"),
    ("x@5:5", "empty frame range 5:5"),
    ("x@9:3", "empty frame range 9:3"),
])
def test_parse_capture_spec_refuses_bad_ranges(text, match):
    with pytest.raises(DataError, match=match):
        parse_capture_spec(text)


def test_overlap_of_ranges():
    a, b, c = (parse_capture_spec(t) for t in ("d/x@0:50", "d/./x@40:60", "d/x@50:"))
    assert a.overlaps(b) == (40, 50)
    assert a.overlaps(c) is None  # STOP is exclusive: 0:50 and 50: share no frame
    assert b.overlaps(c) == (50, 60)
    assert parse_capture_spec("d/x").overlaps(c, num_frames=100) == (50, 100)
    assert parse_capture_spec("d/y").overlaps(a) is None


def test_tum_range_selects_the_same_frames_with_the_same_points(tmp_path):
    root = make_tum_folder(tmp_path / "tum", T=6, gt_offsets=(0, 0, 0, 0, 0, 0))
    full = load_capture(root, num_points=32)
    part = load_capture(f"{root}@2:5", num_points=32)
    assert part.num_frames == 3 and part.name == f"{root}@2:5"
    assert np.array_equal(part.points, full.points[2:5])
    assert np.array_equal(part.timestamps, full.timestamps[2:5])
    assert np.array_equal(part.camera_poses, full.camera_poses[2:5])
    tail = load_capture(f"{root}@4:", num_points=32)
    assert tail.num_frames == 2 and np.array_equal(tail.points, full.points[4:])
    # reader options apply within the range
    sub = load_capture(f"{root}@1:6", num_points=32, stride=2, max_frames=2)
    assert np.array_equal(sub.timestamps, full.timestamps[[1, 3]])


def test_sevenscenes_and_pointcloud_ranges(tmp_path):
    root = make_7scenes_folder(tmp_path / "7s", T=4)
    seq = load_capture(f"{root}@1:3", num_points=16)
    assert seq.num_frames == 2 and np.allclose(seq.camera_poses[:, 0, 0, 3], [0.1, 0.2])
    clouds = tmp_path / "clouds"
    clouds.mkdir()
    for i in range(5):
        np.save(clouds / f"{i:03d}.npy", np.full((10, 3), float(i + 1), np.float32))
    seq = load_capture(f"{clouds}@3:", num_points=4)
    assert seq.num_frames == 2 and np.allclose(seq.points[:, 0, 0, 0], [4.0, 5.0])


@pytest.mark.parametrize("rng, match", [("0:7", "frame range 0:7 is out of bounds: the capture has 6 frames"),
                                        ("6:", "frame range 6: is out of bounds"),
                                        ("10:12", "out of bounds")])
def test_out_of_bounds_ranges(tmp_path, rng, match):
    root = make_tum_folder(tmp_path / "tum", T=6, gt_offsets=(0, 0, 0, 0, 0, 0))
    with pytest.raises(DataError, match=match):
        load_capture(f"{root}@{rng}", num_points=8)


def test_unknown_capture_with_range(tmp_path):
    with pytest.raises(FileNotFoundError, match="capture not found"):
        load_capture(f"{tmp_path / 'nope'}@0:5")


def test_real_range_on_shared_data(tum_rpy_dir):
    part = load_capture(f"{tum_rpy_dir}@50:100", num_points=64, max_frames=3)
    full = load_capture(tum_rpy_dir, num_points=64, start=50, max_frames=3)
    assert np.array_equal(part.points, full.points)


def test_train_real_accepts_ranges_and_names_bad_ones(tmp_path):
    from synthseq.errors import ConfigError
    from synthseq.training.config import TrainConfig
    from synthseq.training.data import check_data_paths

    root = make_tum_folder(tmp_path / "tum", T=4, gt_offsets=(0, 0, 0, 0))
    check_data_paths(TrainConfig(real=[f"{root}@0:2", f"{root}@2:"]), data=False)
    with pytest.raises(ConfigError, match=r"train.real\[1\]: .*malformed frame range"):
        check_data_paths(TrainConfig(real=[str(root), f"{root}@x"]), data=False)
    with pytest.raises(ConfigError, match=r"train.real\[0\]: capture not found"):
        check_data_paths(TrainConfig(real=[f"{tmp_path / 'nope'}@0:2"]), data=False)


def test_real_pairs_reads_ranges(tmp_path):
    from synthseq.datasets.torch import RealPairs

    root = make_tum_folder(tmp_path / "tum", T=6, gt_offsets=(0, 0, 0, 0, 0, 0))
    ds = RealPairs([f"{root}@0:3", f"{root}@3:6"], gaps=(1,), num_points=16)
    assert len(ds) == 4 and {ds[i]["sequence"] for i in range(4)} == {f"{root}@0:3", f"{root}@3:6"}


def test_view_and_evaluate_cli_read_ranges(tmp_path, capsys):
    from synthseq.pipelines.cli import main
    from synthseq.pipelines.view import load_sequence

    root = make_tum_folder(tmp_path / "tum", T=5, gt_offsets=(0, 0, 0, 0, 0))
    seq = load_sequence(f"{root}@1:4", capture_options={"num_points": 16})
    assert seq.num_frames == 3 and seq.name == f"{root}@1:4"
    for bad, match in ((f"{root}@3:1", "empty frame range 3:1"), (f"{root}@0:9", "out of bounds"),
                       (f"{root}@x:", "malformed frame range"), (f"{tmp_path / 'nope'}@0:2", "nope")):
        rc = main(["evaluate", "--real", bad, "--methods", "identity", "--gaps", "1", "--out",
                   str(tmp_path / "r"), "--no-progress"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 1 and len(err) == 1 and match in err[0], err
        assert not (tmp_path / "r").exists()
