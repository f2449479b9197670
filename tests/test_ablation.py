"""The ablation table (training/evaluation/ablation.py, scripts/ablation_table.py) on real `synthseq evaluate`
reports of a TUM capture: rates and paired differences equal those counted from pairs.csv by hand, mismatched or
seen-in-training reports are refused with the file named, the script writes the markdown."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("open3d", reason="the baselines need open3d (pip install 'synthseq[render]')")
pytest.importorskip("torch", reason="the stage reports run the estimator (pip install 'synthseq[train]')")

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "training" / "weights" / "pose_match_small.pt"


@pytest.fixture(scope="module")
def reports(tum_rpy_dir, tmp_path_factory):
    """A baseline report (identity, ICP) and two stage reports (the shipped weights with and without the fine
    stage) on the same 6 pairs of fr1/rpy's frames 50-99 (0-49 trained the shipped weights)."""
    from synthseq.pipelines.cli import main

    root = tmp_path_factory.mktemp("ablation")
    common = ["--real", f"{tum_rpy_dir}@50:100", "--gaps", "1", "10", "--max-pairs", "3", "--max-depth", "4",
              "--no-progress", "--set", "evaluate.trajectory_pairs=0"]
    runs = {"baselines": ["--checkpoint", "none", "--methods", "identity", "icp"],
            "fine": ["--checkpoint", str(WEIGHTS), "--methods", "identity", "ours_coarse", "ours"],
            "coarse": ["--checkpoint", str(WEIGHTS), "--methods", "identity", "ours",
                       "--set", "evaluate.estimator.refine=none"]}
    for name, args in runs.items():
        assert main(["evaluate", *args, *common, "--out", str(root / name)]) == 0
    return root


def _by_hand(report: Path, method: str) -> np.ndarray:
    rows = [r for r in csv.DictReader(open(report / "pairs.csv")) if r["method"] == method]
    rows.sort(key=lambda r: (r["sequence"], int(r["gap"]), int(r["frame_a"])))
    return np.array([int(r["success"]) for r in rows], float)


def test_rates_and_paired_differences_match_pairs_csv(reports):
    from synthseq.training.evaluation.ablation import compare_reports, render_ablation

    s = compare_reports({"fine": reports / "fine", "coarse": reports / "coarse"}, reports / "baselines",
                        versus="icp", reference="fine")
    assert s["num_pairs"] == 6 and s["stages"] == ["fine", "coarse"]
    rows = {r["name"]: r for r in s["rows"]}
    assert set(rows) == {"identity", "ICP", "fine: ours, coarse", "fine: ours", "coarse: ours"}
    icp = _by_hand(reports / "baselines", "icp")
    for name, report, method in (("ICP", "baselines", "icp"), ("fine: ours", "fine", "ours"),
                                 ("coarse: ours", "coarse", "ours"), ("identity", "baselines", "identity")):
        v = _by_hand(reports / report, method)
        r = rows[name]
        assert r["success"] == pytest.approx(v.mean())
        assert r["ci"][0] <= r["success"] <= r["ci"][1]
        if method != "icp":
            d = r["vs_icp"]
            assert d[0] == pytest.approx((v - icp).mean())
            assert np.isnan(d[1]) and np.isnan(d[2])  # 6 pairs: too few blocks for a paired interval
            assert (d[3], d[4]) == (int((v > icp).sum()), int((v < icp).sum()))
    # the same method of the reference stage is the pairing for stage rows; the reference has none against itself
    d = rows["coarse: ours"]["vs_reference"]
    want = _by_hand(reports / "coarse", "ours") - _by_hand(reports / "fine", "ours")
    assert d[0] == pytest.approx(want.mean())
    assert "vs_reference" not in rows["fine: ours"] and "vs_reference" not in rows["ICP"]
    # gap 1 on fr1/rpy: the identity is right on all three pairs
    assert s["per_gap"]["tum_fr1_rpy@50:100"][1]["identity"] == 1.0
    assert s["median_rot"]["tum_fr1_rpy@50:100"]["gap"] == 10
    text = render_ablation(s)
    assert "# Ablation: 2 stages on the same 6 pairs" in text and "| fine: ours |" in text
    assert "**tum_fr1_rpy@50:100**: success % by gap" in text and "| tum_fr1_rpy@50:100 (10) |" in text
    assert "(too few pairs for an interval)" in text


def test_paired_interval_needs_enough_independent_blocks():
    """The paired difference's interval: a moving-block bootstrap of the per-pair differences where there are at
    least MIN_BLOCKS effective blocks; none below (one lost pair of 6 would give an interval excluding zero)."""
    from synthseq.training.evaluation.ablation import MIN_BLOCKS, _paired

    a, b = np.ones(60), np.ones(60)
    a[[5, 25]] = 0.0  # a loses two pairs b gets right, wins one b gets wrong
    b[40] = 0.0
    groups = np.repeat(np.arange(6), 10)
    mean, lo, hi, won, lost = _paired(a, b, groups, {g: 1 for g in range(6)})
    assert mean == pytest.approx((a - b).mean()) and lo <= mean <= hi and lo < 0 < hi
    assert (won, lost) == (1, 2) and mean == pytest.approx(-1 / 60)
    few = _paired(a[:6], b[:6], groups[:6], {0: 1})  # 6 pairs, one block each: 6 < MIN_BLOCKS
    assert np.isnan(few[1]) and np.isnan(few[2]) and MIN_BLOCKS > 6
    long_blocks = _paired(a, b, groups, {g: 10 for g in range(6)})  # 60 pairs in blocks of 10: 6 blocks
    assert np.isnan(long_blocks[1])


def test_mismatched_and_seen_in_training_reports_are_refused(reports, tmp_path):
    from synthseq.training.evaluation.ablation import compare_reports, read_pairs

    lines = (reports / "coarse" / "pairs.csv").read_text().splitlines()
    short = tmp_path / "short"
    short.mkdir()
    drop = ",".join(next(line for line in lines[1:] if line.split(",")[2] == "10").split(",")[1:4]) + ","
    (short / "pairs.csv").write_text("\n".join(line for line in lines if drop not in line) + "\n")
    with pytest.raises(ValueError, match=r"short/pairs.csv: 5 pairs, not the 6 of .*fine/pairs.csv"):
        compare_reports({"fine": reports / "fine", "short": short})
    seen = tmp_path / "seen"
    seen.mkdir()
    (seen / "pairs.csv").write_text("\n".join([lines[0], lines[1][:-1] + "1", *lines[2:]]) + "\n")
    with pytest.raises(ValueError, match=r"seen/pairs.csv:2: tum_fr1_rpy@50:100 was seen in training"):
        read_pairs(seen)
    with pytest.raises(FileNotFoundError, match="nowhere/pairs.csv: no such file"):
        read_pairs(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"no 'ours_icp' rows \(stage fine"):
        compare_reports({"fine": reports / "fine"}, method="ours_icp")
    with pytest.raises(ValueError, match="reference stage 'X' is not among"):
        compare_reports({"fine": reports / "fine"}, reference="X")


def test_script_writes_markdown_and_rejects_bad_specs(reports, tmp_path):
    script = REPO / "scripts" / "ablation_table.py"
    out = tmp_path / "ablation.md"
    r = subprocess.run([sys.executable, str(script), f"fine={reports / 'fine'}", f"coarse={reports / 'coarse'}",
                        "--baseline", str(reports / "baselines"), "--reference", "fine", "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert out.read_text().startswith("# Ablation: 2 stages on the same 6 pairs")
    assert not out.with_name("ablation.md.tmp").exists()
    r = subprocess.run([sys.executable, str(script), "fine"], capture_output=True, text=True)
    assert r.returncode == 2 and "'fine': expected NAME=REPORT_DIR" in r.stderr
    r = subprocess.run([sys.executable, str(script), f"x={tmp_path / 'none'}", "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "no such file" in r.stderr
    assert out.read_text().startswith("# Ablation")  # the earlier output is left as it was
