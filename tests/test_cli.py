"""The CLI's contract with a user (issue 14, issue 13.4): bad input is one line naming its source, outputs
are never clobbered nor left half-written, a closed pipe is not an error, and a bug is a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from synthseq.pipelines import cli

from test_view import box_sequence, write_dataset

SYNTHSEQ = str(Path(sys.executable).with_name("synthseq"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("cli") / "data", [box_sequence(), box_sequence(seed=1)])


def run_cli(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


# ------------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("argv, expected", [
    # --set and flags are named as the source, not the config file
    (["build", "tiny", "--set", "train.batch_size=abc"], "--set train.batch_size=abc: train.batch_size: expected int"),
    (["build", "tiny", "--num-sequences", "-3"], "--num-sequences -3: build.num_sequences"),
    # a scalar is never silently turned into a mapping
    (["build", "tiny", "--set", "generate.sensor.dropout_prob=0.01"], "generate.sensor is 'ideal', not a mapping"),
    # absurd sizes are refused with the limit stated
    (["build", "tiny", "--set", "generate.cameras.width=100000"], "expected a value <= 8192, got 100000"),
    (["view", "DATA", "--point-size", "-2", "--screenshot", "OUT/x.png"], "--point-size: expected a value between"),
    (["view", "DATA", "--size", "100000x10", "--screenshot", "OUT/x.png"], "--size: expected positive sizes up to"),
    (["export", "DATA", "--sequence", "0", "--num-points", "0", "--out", "OUT/e"], "--num-points: expected a value"),
    (["view", "DATA", "--frame", "99", "--screenshot", "OUT/x.png"], "--frame 99 out of range"),
])
def test_bad_input_is_one_line_naming_its_source(argv, expected, dataset, tmp_path, capsys):
    argv = [str(dataset) if a == "DATA" else a.replace("OUT", str(tmp_path / "o")) for a in argv]
    if argv[0] == "build":
        argv += ["--out", str(tmp_path / "o")]
    rc, out, err = run_cli(argv, capsys)
    assert rc == 1 and err.count("\n") == 1 and expected in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists(), "a refused command left an output behind"


def test_yaml_syntax_error_names_file_line_and_column(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("generate:\n  num_frames: 4\n  fps: [1, 2\ntrain: {}\n")
    rc, _, err = run_cli(["build", cfg, "--out", tmp_path / "o"], capsys)
    assert rc == 1 and err.count("\n") == 1
    assert f"{cfg}:4:6: not valid YAML" in err, err  # where the parser gave up


def test_unexpected_exception_is_a_traceback_and_a_bug_report(monkeypatch, tmp_path, capsys):
    from synthseq.pipelines import inspect

    def broken(args):
        raise ZeroDivisionError("division by zero somewhere deep")

    monkeypatch.setattr(inspect, "run_info", broken)
    rc, _, err = run_cli(["info", tmp_path], capsys)
    assert rc == 1
    assert "Traceback" in err and "ZeroDivisionError" in err and "bug in synthseq" in err
    # a ValueError/KeyError from a bug is not dressed up as bad input any more
    monkeypatch.setattr(inspect, "run_info", lambda args: {}["missing"])
    rc, _, err = run_cli(["info", tmp_path], capsys)
    assert rc == 1 and "Traceback" in err and "KeyError" in err


def test_missing_optional_dependency_names_the_extra():
    e = ModuleNotFoundError("No module named 'open3d'", name="open3d")
    assert "pip install 'synthseq[render]'" in cli.missing_dependency(e)
    assert cli.missing_dependency(ModuleNotFoundError("x", name="synthseq.nope")) is None  # our bug
    assert cli.missing_dependency(ImportError("cannot import name 'f' from 'm'")) is None


def test_closed_pipe_is_not_an_error(dataset):
    """`synthseq info DATA | head -1`: exit 0, nothing on stderr."""
    proc = subprocess.run(f"'{SYNTHSEQ}' info '{dataset}' | head -c 10; exit ${{PIPESTATUS[0]}}", shell=True,
                          executable="/bin/bash", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_help_examples_name_existing_configs():
    from synthseq.pipelines.config import resolve_config_path

    for line in cli.EPILOG.splitlines():
        words = line.split()
        if words[:2] in (["synthseq", "build"], ["synthseq", "train"]):
            assert resolve_config_path(words[2]).is_file(), line


# -------------------------------------------------------------------------------------- output safety

def test_outputs_are_never_clobbered(dataset, tmp_path, capsys):
    png, out = tmp_path / "f.png", tmp_path / "exp"
    assert run_cli(["view", dataset, "--screenshot", png, "--renderer", "software"], capsys)[0] == 0
    before = png.read_bytes()
    rc, _, err = run_cli(["view", dataset, "--screenshot", png, "--frame", "1", "--renderer", "software"], capsys)
    assert rc == 1 and "--overwrite" in err and png.read_bytes() == before
    rc, _, err = run_cli(["view", dataset, "--screenshot", png, "--frame", "1", "--renderer", "software",
                          "--overwrite"], capsys)
    assert rc == 0 and png.read_bytes() != before

    assert run_cli(["export", dataset, "--sequence", "0", "--format", "npz", "--out", out], capsys)[0] == 0
    rc, _, err = run_cli(["export", dataset, "--sequence", "1", "--format", "npz", "--out", out], capsys)
    assert rc == 1 and "--overwrite" in err
    rc, _, err = run_cli(["build", "tiny", "--out", out], capsys)
    assert rc == 1 and "not empty" in err


def test_failed_commands_leave_no_partial_output(dataset, tmp_path, monkeypatch, capsys):
    from synthseq.pipelines import export

    calls = []

    def write_then_fail(path, *a, **k):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device", str(path))
        return real_write(path, *a, **k)

    real_write = export.write_cloud
    monkeypatch.setattr(export, "write_cloud", write_then_fail)
    out = tmp_path / "new" / "deeper" / "exp"
    rc, _, err = run_cli(["export", dataset, "--sequence", "0", "--format", "npz", "--out", out], capsys)
    assert rc == 1 and "No space left" in err and len(calls) == 3
    assert not (tmp_path / "new").exists(), list(tmp_path.rglob("*"))

    # into an existing folder: its other files stay, nothing half-written is added
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    calls.clear()
    rc, _, _ = run_cli(["export", dataset, "--sequence", "0", "--format", "npz", "--out", keep], capsys)
    assert rc == 1 and sorted(p.name for p in keep.iterdir()) == ["notes.txt"]
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]

    # a build that fails before its first shard (here: no cluster at that address) leaves no folder
    rc, _, err = run_cli(["build", "tiny", "--out", tmp_path / "b" / "data", "--address", "127.0.0.1:1"], capsys)
    assert rc == 1 and err.count("\n") == 1 and not (tmp_path / "b").exists()

    # a render that fails leaves no image and no folder
    rc, _, err = run_cli(["view", dataset, "--screenshot", tmp_path / "a" / "b.png", "--viewpoint", "sensor",
                          "--fused"], capsys)
    assert rc == 1 and not (tmp_path / "a").exists()


# ------------------------------------------------------------------------------------------ checkpoints

def test_unreadable_checkpoints_are_described_not_echoed(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from synthseq.training.checkpoint import save_checkpoint

    good = save_checkpoint({"format": "synthseq-train", "version": 1, "w": torch.zeros(4096)}, tmp_path / "g.pt")
    data = good.read_bytes()
    cases = {"truncated": data[: len(data) // 2], "empty": b""}
    for name, payload in cases.items():
        (tmp_path / f"{name}.pt").write_bytes(payload)
    torch.save({"obj": Path("x")}, tmp_path / "pickled.pt")  # a pickled object, not only tensors
    for name, words in (("truncated", "truncated or corrupt"), ("empty", "is empty"),
                        ("pickled", "refusing to unpickle")):
        rc, _, err = run_cli(["evaluate", "--checkpoint", tmp_path / f"{name}.pt", "--real", tmp_path,
                              "--out", tmp_path / f"r-{name}"], capsys)
        assert rc == 1 and err.count("\n") == 1, err
        assert words in err and "weights_only" not in err and "Errno" not in err, err


# --------------------------------------------------------------------------------------------- training

def _wait_for_rows(path: Path, rows: int, proc, timeout_s: float = 240.0) -> None:
    import time

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if path.exists() and len(path.read_text().splitlines()) >= rows:
            return
        if proc.poll() is not None:
            raise AssertionError(f"training ended early: {proc.stderr.read()[-2000:]}")
        time.sleep(0.2)
    raise AssertionError("training did not log in time")


def test_interrupted_first_run_saves_a_checkpoint_and_resumes(dataset, tmp_path, capsys):
    """SIGTERM (as Ctrl-C) mid-training: a checkpoint is written before exiting, `--resume` continues from it;
    the same --name again is refused unless --resume/--overwrite (issue 14)."""
    import signal

    pytest.importorskip("torch")
    from synthseq.training.checkpoint import load_checkpoint

    runs = tmp_path / "runs"
    base = ["train", "tiny", "--name", "t1", "--out", str(runs), "--no-progress", "--threads", "1",
            "--set", f"train.data={dataset}", "--set", "train.real=[]", "--set", "train.gaps=[1]",
            "--set", "train.log_interval=1", "--set", "train.checkpoint_interval=100000"]
    proc = subprocess.Popen([SYNTHSEQ, *base, "--set", "train.max_steps=100000"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_rows(runs / "t1" / "metrics.jsonl", 3, proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "checkpoint saved" in err and f"--resume {runs / 't1'}" in err
    step = load_checkpoint(runs / "t1")["step"]
    assert step >= 3

    rc, _, err = run_cli(base + ["--set", "train.max_steps=5"], capsys)
    assert rc == 1 and "--resume" in err and "--overwrite" in err and err.count("\n") == 1
    rc, _, err = run_cli(["train", "--resume", runs / "t1", "--no-progress", "--set",
                          f"train.max_steps={step + 2}"], capsys)
    assert rc == 0, err
    assert load_checkpoint(runs / "t1")["step"] == step + 2
    rc, _, err = run_cli(base + ["--set", "train.max_steps=1", "--overwrite"], capsys)
    assert rc == 0, err
    assert load_checkpoint(runs / "t1")["step"] == 1
    rc, _, err = run_cli(base + ["--name", "a/b"], capsys)
    assert rc == 1 and "--name 'a/b'" in err


@pytest.mark.parametrize("argv, expected", [
    (["register", "--gap", "2.5", "a", "b"], "synthseq register: error: argument --gap: invalid int value: '2.5' "
                                             "(synthseq register --help)"),
    (["evaluate", "--checkpoint", "none"], "synthseq evaluate: error: the following arguments are required: --out"),
    (["frobnicate"], "synthseq: error: argument COMMAND: invalid choice: 'frobnicate'"),
])
def test_usage_errors_are_one_line(argv, expected, capsys):
    from synthseq.pipelines.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(expected), err
