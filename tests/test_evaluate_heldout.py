"""Issue 9 / 14: evaluation refuses training data (real frame ranges and synthetic datasets) unless allowed and
then marks it; says what is missing when there is nothing to evaluate; never clobbers or half-writes --out;
evaluates captures whose ground truth has gaps. Runs the identity method only (no baselines) to stay fast."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from test_real_readers import make_tum_folder

torch = pytest.importorskip("torch")


def _checkpoint(run_dir, real=(), data=None, num_points=64):
    """An initialised (untrained) checkpoint whose config records the training inputs train.real / train.data."""
    from synthseq.config import to_dict
    from synthseq.training.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, save_checkpoint
    from synthseq.training.config import TrainConfig
    from synthseq.training.models import build_models

    torch.manual_seed(0)
    cfg = TrainConfig(num_points=num_points, use_gan=False, real=[str(r) for r in real],
                      data=None if data is None else str(data))
    models = build_models(cfg.model)
    state = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "step": 0,
             "config": {"name": "tiny", "train": to_dict(cfg)},
             "models": {k: models[k].state_dict() for k in ("G", "D", "P")} | {"P_ema": models["P"].state_dict()},
             "optimizers": {}, "rng": {}, "metrics": {}}
    save_checkpoint(state, run_dir / "checkpoints" / "last.pt")
    return run_dir


def _tum(tmp_path, T=12, name="tum"):
    return make_tum_folder(tmp_path / name, T=T, gt_offsets=(0.0,) * T)


def _eval(run, real=(), synthetic=None, out=None, gaps=(1, 2), **kw):
    from synthseq.training.evaluation import EvaluateConfig, evaluate

    cfg = EvaluateConfig(checkpoint=run, real=[str(r) for r in real], synthetic=synthetic, gaps=list(gaps),
                         max_pairs=4, methods=["identity"])
    return evaluate(cfg, out, **kw)


def test_real_overlap_is_refused_naming_it(tmp_path):
    from synthseq.errors import DataError

    cap = _tum(tmp_path)
    run = _checkpoint(tmp_path / "run", real=[f"{cap}@0:6"])
    with pytest.raises(DataError, match=rf"--real {cap}@4:10: frames 4:6 were training data \(train.real: {cap}@0:6\)"):
        _eval(run, [f"{cap}@4:10"], out=tmp_path / "r1")
    # the whole folder overlaps too (resolved through another spelling of the path)
    other = tmp_path / "." / "tum"
    with pytest.raises(DataError, match="frames 0:6 were training data"):
        _eval(run, [other], out=tmp_path / "r1")
    assert not (tmp_path / "r1").exists()
    # a non-overlapping range of the same folder is allowed (STOP is exclusive)
    m = _eval(run, [f"{cap}@6:12"], out=tmp_path / "r2")
    e = m["sequences"]["tum@6:12"]
    assert not e["seen_in_training"] and e["gaps"]["1"]["num_pairs"] == 4


def test_allow_train_data_marks_every_row(tmp_path):
    cap = _tum(tmp_path)
    run = _checkpoint(tmp_path / "run", real=[str(cap)])
    out = tmp_path / "rep"
    # held: another capture (T=10); a byte-identical copy would be the same data, and refused as such
    m = _eval(run, [f"{cap}@0:6", f"{_tum(tmp_path, T=10, name='held')}"], out=out, allow_train_data=True)
    assert m["sequences"]["tum@0:6"]["seen_in_training"] and not m["sequences"]["held"]["seen_in_training"]
    rows = [r for r in m["headline"] if r["sequence"] == "tum@0:6"]
    assert rows and all(r["seen_in_training"] for r in rows)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["allow_train_data"] and saved["sequences"]["tum@0:6"]["seen_in_training"]
    report = (out / "report.md").read_text()
    assert "| tum@0:6 **[seen in training]** | 1 | identity (no motion) |" in report
    assert "| held | 1 | identity (no motion) |" in report
    assert "tum@0:6: not judged (seen in training)" in report
    with open(out / "pairs.csv") as f:
        seen = {(r["sequence"], r["seen_in_training"]) for r in csv.DictReader(f)}
    assert seen == {("tum@0:6", "1"), ("held", "0")}


def _synthetic(root, seed=0, generate=None, ids=("000000", "000001")):
    """A built-dataset directory whose manifest records the build identity (generate config, seed)."""
    from test_evaluate import _tiny_dataset

    _tiny_dataset(root, num_sequences=len(ids), T=6, N=256)
    m = json.loads((root / "manifest.json").read_text())
    gen = generate or {"scene": "corner"}
    m.update(seed=seed, shard_config={"generate": gen, "seed": seed})
    (root / "manifest.json").write_text(json.dumps(m))
    return root


def test_synthetic_training_set_is_refused(tmp_path):
    from synthseq.errors import DataError

    train = _synthetic(tmp_path / "train")
    run = _checkpoint(tmp_path / "run", data=train)
    with pytest.raises(DataError, match=r"--synthetic .*train is the training dataset"):
        _eval(run, synthetic=train, out=tmp_path / "r")
    # a copy holds byte-identical shards
    import shutil

    shutil.copytree(train, tmp_path / "copy")
    with pytest.raises(DataError, match="byte-identical to shards of the training dataset"):
        _eval(run, synthetic=tmp_path / "copy", out=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_synthetic_same_build_identity_shares_sequences(tmp_path):
    from synthseq.errors import DataError

    train = _synthetic(tmp_path / "train")
    run = _checkpoint(tmp_path / "run", data=train)
    # Same generate config and seed, a bigger build (other shard bytes): sequences 0 and 1 are the same ones.
    three = ("000000", "000001", "000002")
    same = _synthetic(tmp_path / "same", ids=three)
    with pytest.raises(DataError, match=r"sequence\(s\) 000000, 000001 are the training dataset's .*another --seed"):
        _eval(run, synthetic=same, out=tmp_path / "r")
    # Another seed: held out, whatever the ids.
    other = _synthetic(tmp_path / "other", seed=1, ids=three)
    m = _eval(run, synthetic=other, out=tmp_path / "r2", gaps=(1,))
    assert "synthetic (3 sequences)" in m["sequences"]
    # allowed: the shared sequences are pooled apart and marked, the new one is held out
    m = _eval(run, synthetic=same, out=tmp_path / "r3", gaps=(1,), allow_train_data=True)
    assert set(m["sequences"]) == {"synthetic (1 sequences)", "synthetic (2 sequences, seen in training)"}
    assert m["sequences"]["synthetic (2 sequences, seen in training)"]["seen_in_training"]


def test_nothing_to_evaluate_says_what_is_missing(tmp_path):
    from synthseq.errors import DataError

    cap = _tum(tmp_path, T=6)
    with pytest.raises(DataError, match=r"nothing to evaluate: tum: gap 30 is longer than its 6 frames"):
        _eval(None, [cap], out=tmp_path / "r", gaps=(30,))
    no_gt = _tum(tmp_path, T=6, name="nogt")
    (no_gt / "groundtruth.txt").unlink()
    with pytest.raises(DataError, match=r"nothing to evaluate: nogt has no ground truth \(camera poses\)"):
        _eval(None, [no_gt], out=tmp_path / "r")
    assert not (tmp_path / "r").exists()
    assert not list(tmp_path.glob(".r.partial-*"))
    # some gaps fit: the others are skipped with a note
    m = _eval(None, [cap], out=tmp_path / "r", gaps=(1, 30))
    assert list(m["sequences"]["tum"]["gaps"]) == ["1"]
    assert any("gap 30 is longer than its 6 frames; skipped" in n for n in m["notes"])


def test_out_is_never_clobbered_or_half_written(tmp_path, capsys):
    from synthseq.errors import UsageError
    from synthseq.pipelines.cli import main

    cap = _tum(tmp_path, T=6)
    out = tmp_path / "rep"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="already exists.*--overwrite"):
        _eval(None, [cap], out=out)
    rc = main(["evaluate", "--real", str(cap), "--methods", "identity", "--gaps", "1", "--out", str(out),
               "--no-progress"])
    assert rc == 1 and "already exists" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
    # --overwrite replaces the folder as a whole (no stale files left)
    rc = main(["evaluate", "--real", str(cap), "--methods", "identity", "--gaps", "1", "--out", str(out),
               "--no-progress", "--overwrite"])
    assert rc == 0 and not (out / "keep.txt").exists() and (out / "report.md").is_file()
    printed = capsys.readouterr().out
    # the GT moves 10 cm per frame: no motion always fails; 5 pairs, with a 95% interval
    assert "| tum | 1 | identity (no motion) | 0% [0-" in printed and "| 5 |" in printed

    # interrupted mid-run (Ctrl-C): nothing partial appears, the old report stays
    class Interrupt:
        def __init__(self, total):
            pass

        def update(self, n):
            raise KeyboardInterrupt

        def close(self):
            pass

    from synthseq.training.evaluation import EvaluateConfig, evaluate

    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(KeyboardInterrupt):
        evaluate(EvaluateConfig(real=[str(cap)], methods=["icp"], gaps=[1], max_pairs=2), tmp_path / "new",
                 progress=Interrupt)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_tum_ground_truth_gaps_are_dropped_and_said(tmp_path):
    # frame 3 has no ground-truth pose within 0.02 s (a mocap gap, as in tum_fr1_xyz_a)
    cap = make_tum_folder(tmp_path / "gappy", T=8, gt_offsets=(0, 0, 0, 0.025, 0, 0, 0, 0))
    m = _eval(None, [cap], out=tmp_path / "r", gaps=(1, 2))
    e = m["sequences"]["gappy"]
    assert e["gaps"]["1"]["num_pairs"] == 4 and e["gaps"]["2"]["num_pairs"] == 4
    with open(tmp_path / "r" / "pairs.csv") as f:
        pairs = {(int(r["frame_a"]), int(r["frame_b"])) for r in csv.DictReader(f)}
    assert not any(3 in p for p in pairs)
    assert any("1 frame(s) without a ground-truth pose within 0.02 s (frames [3])" in n for n in m["notes"])


def test_real_pairs_train_on_captures_with_ground_truth_gaps(tmp_path):
    from synthseq.datasets.torch import RealPairs

    cap = make_tum_folder(tmp_path / "gappy", T=5, gt_offsets=(0, 0, 0.025, 0, 0))
    ds = RealPairs([str(cap)], gaps=(1,), num_points=16)
    assert len(ds) == 4  # no frame dropped: the pairs keep their true gaps
    assert [bool(ds[i]["has_pose"]) for i in range(4)] == [True, False, False, True]
    assert np.isfinite(np.stack([ds[i]["a_from_b"] for i in range(4)])).all()


@pytest.mark.skipif(not __import__("pathlib").Path(__file__).resolve().parents[2].joinpath(
    "shared/data/real/tum_fr1_xyz_a").is_dir(), reason="../shared/data/real/tum_fr1_xyz_a is absent")
def test_shared_tum_xyz_a_with_mocap_gaps_evaluates(real_dir, tmp_path):
    m = _eval(None, [real_dir / "tum_fr1_xyz_a@95:110"], out=tmp_path / "r", gaps=(1, 5))
    assert any("2 frame(s) without a ground-truth pose" in n and "[101, 102]" in n for n in m["notes"])
    assert m["sequences"]["tum_fr1_xyz_a@95:110"]["gaps"]["5"]["num_pairs"] == 4


def test_real_overlap_is_found_in_another_copy_of_the_training_capture(tmp_path):
    """The checkpoint records where its captures were; a checkout whose data lives elsewhere (CI's copy of
    ../shared, while the recorded path may still exist on that machine) evaluates another copy of them."""
    import shutil

    from synthseq.errors import DataError

    cap = _tum(tmp_path)
    run = _checkpoint(tmp_path / "run", real=[f"{cap}@0:6"])
    moved = shutil.copytree(cap, tmp_path / "elsewhere" / "tum")  # same folder name, the recorded path exists
    with pytest.raises(DataError, match=rf"--real {moved}@2:8: frames 2:6 were training data"):
        _eval(run, [f"{moved}@2:8"], out=tmp_path / "r1")
    renamed = shutil.copytree(cap, tmp_path / "renamed")  # another name, the same files
    with pytest.raises(DataError, match=rf"--real {renamed}: frames 0:6 were training data"):
        _eval(run, [renamed], out=tmp_path / "r1")
    assert not (tmp_path / "r1").exists()
    # another capture (other name, other files) is held out
    other = _tum(tmp_path, T=10, name="other")
    assert not _eval(run, [other], out=tmp_path / "r2")["sequences"]["other"]["seen_in_training"]
