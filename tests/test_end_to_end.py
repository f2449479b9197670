"""End to end: tiny config -> Ray build -> train a few steps -> evaluate, through the real CLI entry points."""

from __future__ import annotations

import json

import pytest

from synthseq.datasets.shards import read_manifest, verify_dataset
from synthseq.pipelines.cli import main as cli_main


def test_build_train_evaluate(tmp_path, tum_xyz_pair_dir, real_dir, capsys):
    data, runs, report = tmp_path / "data", tmp_path / "runs", tmp_path / "report"
    assert cli_main(["build", "tiny", "--out", str(data), "--num-sequences", "2", "--sequences-per-shard", "1",
                     "--workers", "2", "--no-progress", "--set", "generate.num_frames=6"]) == 0
    assert verify_dataset(data) == [] and read_manifest(data)["complete"]

    assert cli_main(["train", "tiny", "--out", str(runs), "--no-progress",
                     "--set", "name=e2e", "--set", f"train.data={data}",
                     "--set", f"train.real=[{tum_xyz_pair_dir}]",
                     "--set", "train.max_steps=4", "--set", "train.gaps=[1]"]) == 0
    run = runs / "e2e"
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "config.yaml").is_file()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows and all("loss_P" in r for r in rows)

    # evaluated on data it never trained on: the agreed real validation split, a build of another seed
    held_out, test_data = real_dir / "tum_fr1_xyz_b", tmp_path / "test-data"
    assert cli_main(["build", "tiny", "--out", str(test_data), "--num-sequences", "1", "--seed", "1",
                     "--no-progress", "--set", "generate.num_frames=6"]) == 0
    assert cli_main(["evaluate", "--checkpoint", str(run), "--real", f"{held_out}@0:6",
                     "--synthetic", str(test_data), "--gaps", "1", "--max-pairs", "2", "--out", str(report)]) == 0
    out = capsys.readouterr().out
    assert "report.md" in out
    metrics = json.loads((report / "metrics.json").read_text())
    methods = {row["method"] for row in metrics["headline"]}
    assert {"ours", "icp"} <= methods, methods
    assert (report / "report.md").read_text().count("|") > 10
    assert list((report / "plots").glob("*.png"))


def test_bad_checkpoint_is_one_line(tmp_path, capsys):
    code = cli_main(["evaluate", "--checkpoint", str(tmp_path / "nope"), "--real", str(tmp_path),
                     "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and "nope" in err
    assert not (tmp_path / "r").exists()
