"""`synthseq register` (pipelines/register.py): the shipped estimator on two real point-cloud files and on a real
capture chained into a TUM trajectory; bad input is one line, exit 1, nothing written."""

from __future__ import annotations

import csv

import numpy as np
import pytest

pytest.importorskip("torch", reason="the estimator needs torch (pip install 'synthseq[train]')")
pytest.importorskip("open3d", reason="the estimator samples with open3d (pip install 'synthseq[render]')")


def test_register_two_cloud_files_writes_the_pose(real_dir, tmp_path, capsys):
    from synthseq.pipelines.cli import main
    from synthseq.training.pseudo_labels import pose_difference

    folder = real_dir / "lidar_pair_fast_gicp"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    out = tmp_path / "pose.txt"
    assert main(["register", str(folder / "251370668.pcd"), str(folder / "251371071.pcd"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    pose = np.loadtxt(out)
    assert pose.shape == (4, 4) and np.allclose(pose[3], [0, 0, 0, 1])
    assert np.allclose(np.loadtxt(printed.splitlines()[1:5]), pose)  # printed = written
    rot, trans = pose_difference(pose, np.loadtxt(folder / "relative.txt"))
    assert rot < 1.0 and trans < 0.05, (rot, trans)
    assert "confidence" in printed and f"pose: {out}" in printed


def test_register_a_capture_chains_a_trajectory_with_per_pair_errors(tum_rpy_dir, tmp_path, capsys):
    from synthseq.datasets.real import load_capture
    from synthseq.datasets.trajectory import read_tum_trajectory
    from synthseq.geometry import relative_pose
    from synthseq.pipelines.cli import main
    from synthseq.training import metrics as M

    out = tmp_path / "new" / "rpy.tum"  # the folder is created
    spec = f"{tum_rpy_dir}@50:71"
    assert main(["register", "--capture", spec, "--gap", "5", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    stamps, traj = read_tum_trajectory(out)
    gt_seq = load_capture(spec, num_points=16)
    frames = np.arange(0, 21, 5)
    assert len(stamps) == 5 and np.allclose(stamps, gt_seq.timestamps[frames], atol=1e-6)
    gt = gt_seq.camera_poses[frames, 0]
    assert np.allclose(traj[0], gt[0], atol=1e-4)  # chained from the ground-truth first pose
    rows = list(csv.DictReader(open(tmp_path / "new" / "rpy.pairs.csv")))
    assert [(int(r["frame_a"]), int(r["frame_b"])) for r in rows] == [(50, 55), (55, 60), (60, 65), (65, 70)]
    # each CSV error is the chained trajectory's step against the ground truth (evo's RPE at delta 1)
    rot, trans = M.relative_pose_errors(relative_pose(traj[:-1], traj[1:]), relative_pose(gt[:-1], gt[1:]))
    assert np.allclose(rot, [float(r["rot_err_deg"]) for r in rows], atol=0.05)
    assert np.allclose(trans, [float(r["trans_err_cm"]) for r in rows], atol=0.05)
    assert np.median(rot) < 5.0  # 5-frame steps of fr1/rpy: ~11 deg of motion each
    assert "4 pairs at gap 5" in printed and "SEEN IN TRAINING" not in printed
    # frames the shipped weights trained on are registered, with a note that the errors are not held out
    assert main(["register", "--capture", f"{tum_rpy_dir}@0:6", "--gap", "5", "--out", str(tmp_path / "t.tum"),
                 "--no-progress"]) == 0
    assert "note: SEEN IN TRAINING: --capture" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["one.ply"], "expected two point-cloud files A B, or --capture PATH; got 1 file(s)"),
    (["--capture", "x"], "--capture needs --out FILE"),
    (["a.ply", "b.ply", "--capture", "x", "--out", "t.tum"], "either two point-cloud files or --capture, not both"),
    (["--capture", "x", "--out", "t.tum", "--gap", "0"], "--gap: expected an integer >= 1, got 0"),
    (["a.ply", "b.ply", "--fallback-below", "2"], "--fallback-below: expected a confidence in [0, 1], got 2.0"),
    (["a.ply", "b.ply", "--out", "newdir/"], "--out newdir/: expected a file name, not a folder"),
    (["a.ply", "b.ply"], "a.ply: no such file"),
    (["a.ply", "b.ply", "--out", "nowhere/pose.txt"], "a.ply: no such file"),  # no folder made for a failed run
    (["--capture", "missing_capture", "--out", "sub/t.tum"], "missing_capture"),
    (["--capture", "missing_capture", "--out", "t.tum"], "missing_capture"),
])
def test_bad_input_is_one_line_and_writes_nothing(argv, message, tmp_path, monkeypatch, capsys):
    """Each case: one line on stderr naming the problem, exit 1, no file or folder left behind."""
    from synthseq.pipelines.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["register", *argv]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("synthseq register: error: ") and message in err, err
    assert list(tmp_path.iterdir()) == []


def test_existing_outputs_and_folders_given_as_clouds_are_refused(tmp_path, monkeypatch, capsys):
    from synthseq.pipelines.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "pose.txt").write_text("keep")
    (tmp_path / "t.pairs.csv").write_text("keep")
    (tmp_path / "clouds").mkdir()
    for argv, message in (
            (["a.ply", "b.ply", "--out", "pose.txt"], "pose.txt: exists already; pass --overwrite"),
            (["--capture", "x", "--out", "t.tum"], "t.pairs.csv: exists already; pass --overwrite"),
            (["--capture", "x", "--out", "clouds"], "clouds: is a directory; give a file name"),
            (["clouds", "b.ply"], "clouds: is a folder; expected a point-cloud file (a folder of frames: --capture)")):
        assert main(["register", *argv]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert (tmp_path / "pose.txt").read_text() == "keep" and (tmp_path / "t.pairs.csv").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clouds", "pose.txt", "t.pairs.csv"]


def test_a_checkpoint_of_another_architecture_is_one_line(tmp_path, monkeypatch, capsys):
    """The checkpoint loader (training/checkpoint.py) names the file when the weights do not fit this synthseq's
    models; register and evaluate both go through it."""
    import torch

    from synthseq.pipelines.cli import main
    from synthseq.pipelines.register import shipped_weights

    state = torch.load(shipped_weights(), weights_only=True)
    first = next(iter(state["models"]["P"]))
    state["models"]["P"][first] = torch.zeros(3, 3)
    bad = tmp_path / "other.pt"
    torch.save(state, bad)
    cloud = tmp_path / "c.npy"
    np.save(cloud, np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32))
    monkeypatch.chdir(tmp_path)
    assert main(["register", str(cloud), str(cloud), "--checkpoint", str(bad), "--out", "pose.txt"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{bad}: cannot load the networks with this synthseq's models" in err, err
    assert not (tmp_path / "pose.txt").exists()


def test_write_files_atomic_writes_all_or_none(tmp_path):
    """register's trajectory and its CSV go through pipelines/view.write_files_atomic: when one write fails,
    neither file, no temporary file and no folder the call made is left."""
    from synthseq.pipelines.view import write_files_atomic

    def fail(p):
        raise OSError("disk full")

    a, b = tmp_path / "new" / "deeper" / "a.txt", tmp_path / "new" / "b.txt"
    with pytest.raises(OSError, match="disk full"):
        write_files_atomic({a: lambda p: open(p, "w").write("a"), b: fail})
    assert list(tmp_path.iterdir()) == []
    write_files_atomic({a: lambda p: open(p, "w").write("a"), b: lambda p: open(p, "w").write("b")})
    assert a.read_text() == "a" and b.read_text() == "b"
    assert sorted(p.name for p in (tmp_path / "new").rglob("*")) == ["a.txt", "b.txt", "deeper"]
