"""Progress output (issue 13.5, issue 14): a bar on a terminal, occasional plain lines in a log."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from synthseq.progress import LineProgress, progress

from test_view import box_sequence, write_dataset


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_plain_lines_every_interval_and_at_the_end():
    out, clock = io.StringIO(), Clock()
    bar = LineProgress(total=100, desc="train", unit="step", file=out, interval_s=5.0, clock=clock)
    for _ in range(100):
        clock.t += 0.3
        bar.update(1)
        bar.set_postfix({"loss": "0.5"})
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert 5 <= len(lines) <= 7  # 30 s at one line per 5 s, plus the final one
    assert lines[-1].startswith("train: 100/100 step (100%)") and "| loss 0.5" in lines[-1]
    assert "s left" in lines[0] and "3.33 step/s" in lines[0]


def test_disabled_prints_nothing_and_terminal_gets_tqdm():
    out = io.StringIO()
    for _ in progress(range(10), desc="x", disable=True, file=out):
        pass
    assert out.getvalue() == ""
    assert isinstance(progress(total=3, file=io.StringIO()), LineProgress)
    master, slave = os.openpty()
    with os.fdopen(slave, "w") as tty:
        bar = progress(total=3, file=tty)
        assert type(bar).__module__.startswith("tqdm")
        bar.close()
    os.close(master)


def test_a_logged_command_writes_lines_not_carriage_returns(tmp_path):
    """`synthseq view --gif` with stderr to a file: one line per update (interval 0 here), no \\r; stdout has
    only the result line (no Open3D or Filament banner)."""
    data = write_dataset(tmp_path / "data", [box_sequence(num_frames=3)])
    env = dict(os.environ, SYNTHSEQ_PROGRESS_INTERVAL="0")
    exe = str(Path(sys.executable).with_name("synthseq"))
    proc = subprocess.run([exe, "view", str(data), "--gif", str(tmp_path / "s.gif"), "--renderer", "open3d"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("rendering: ")]
    assert len(lines) == 3 and lines[-1].startswith("rendering: 3/3 frame (100%)"), proc.stderr
    assert proc.stdout.splitlines() == [f"wrote {tmp_path / 's.gif'} (3 frames of sequence 000000)"], proc.stdout


def test_open3d_warnings_stay_off_stdout_once_the_cli_started():
    """The CLI's import hook sets Open3D's verbosity at `import open3d` anywhere (ICP baselines, readers):
    the colour-coded [Open3D WARNING] lines never reach stdout, where result tables go."""
    code = ("import open3d as o3d\n"
            "o3d.io.read_point_cloud('/nonexistent.xyz')\n"
            "o3d.pipelines.registration.registration_icp(o3d.geometry.PointCloud(), o3d.geometry.PointCloud(), 0.1)\n"
            "print('done')\n")
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "[Open3D WARNING]" in plain.stdout  # the library's default: why the hook exists
    hooked = subprocess.run([sys.executable, "-c", "from synthseq.progress import quiet_open3d_on_import\n"
                             "quiet_open3d_on_import()\n" + code], capture_output=True, text=True, timeout=120)
    assert hooked.returncode == 0 and hooked.stdout == "done\n", hooked.stdout
