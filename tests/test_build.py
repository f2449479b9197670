"""The Ray build: determinism across worker counts, resume after SIGKILL, a killed worker, bad input.

Everything runs a real local Ray cluster (``ray.init(num_cpus=2)``) and the real generator (tiny config).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from synthseq.datasets.shards import ShardReader, read_manifest, verify_dataset
from synthseq.pipelines.cli import main as cli_main
from synthseq.pipelines.config import load_config

SYNTHSEQ = str(Path(sys.executable).with_name("synthseq"))
TINY = ["--set", "generate.num_frames=3"]


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def _shard_hashes(root: Path) -> dict:
    return {e["file"]: e["sha256"] for e in read_manifest(root)["shards"]}


def _arrays(root: Path) -> dict:
    out = {}
    for e in read_manifest(root)["shards"]:
        with ShardReader(root / e["file"]) as r:
            for key in r.sequence_ids:
                s = r.read(key)
                out[key] = (s.points, s.labels, s.camera_poses, s.object_poses, s.num_valid)
    return out


def test_one_and_two_workers_identical(ray_cluster, tmp_path):
    from synthseq.pipelines.build import build_dataset

    cfg1 = load_config("tiny", ["build.num_sequences=4", "build.sequences_per_shard=1", "build.workers=1",
                                "generate.num_frames=3"])
    cfg2 = load_config("tiny", ["build.num_sequences=4", "build.sequences_per_shard=1", "build.workers=2",
                                "generate.num_frames=3"])
    build_dataset(cfg1, tmp_path / "w1", progress=False)
    build_dataset(cfg2, tmp_path / "w2", progress=False)
    assert verify_dataset(tmp_path / "w1") == [] and verify_dataset(tmp_path / "w2") == []
    a1, a2 = _arrays(tmp_path / "w1"), _arrays(tmp_path / "w2")
    assert sorted(a1) == ["000000", "000001", "000002", "000003"]
    for key in a1:
        for x, y in zip(a1[key], a2[key]):
            assert np.array_equal(x, y)
    # not only equal arrays: byte-identical shards, so the manifests' checksums agree
    assert _shard_hashes(tmp_path / "w1") == _shard_hashes(tmp_path / "w2")
    # different sequences differ (the seeds are per sequence)
    assert not np.array_equal(a1["000000"][0], a1["000001"][0])


def test_resume_rebuilds_only_missing_and_corrupt(ray_cluster, tmp_path):
    from synthseq.pipelines.build import build_dataset

    cfg = load_config("tiny", ["build.num_sequences=3", "build.sequences_per_shard=1", "generate.num_frames=3"])
    out = tmp_path / "ds"
    build_dataset(cfg, out, progress=False)
    ref = _shard_hashes(out)
    keep = out / "shard-00000.h5"
    st = keep.stat()
    (out / "shard-00001.h5").unlink()
    (out / "shard-00002.h5").write_bytes(b"garbage")
    build_dataset(cfg, out, resume=True, progress=False)
    assert _shard_hashes(out) == ref and verify_dataset(out) == []
    assert keep.stat().st_mtime_ns == st.st_mtime_ns and keep.stat().st_ino == st.st_ino


def _finish_after(proc, pred, interval: float, what: str) -> str:
    """Wait until ``pred()`` (e.g. it killed a worker), then for the command ``proc`` to end; its stderr. The
    command's process group is killed if the test fails first."""
    try:
        assert _wait_for(pred, timeout=240, interval=interval), what
        _, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return stderr


def _wait_for(pred, timeout=240.0, interval=0.2):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return True
        time.sleep(interval)
    return False


def _num_done(out: Path) -> int:
    try:
        return len(json.loads((out / "manifest.json").read_text())["shards"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def test_resume_after_driver_sigkill(tmp_path):
    # enough work per shard (40 frames) that the kill lands mid-build even on a fast machine
    args = ["tiny", "--num-sequences", "8", "--sequences-per-shard", "1", "--workers", "1", "--no-progress",
            "--set", "generate.num_frames=40"]
    ref = tmp_path / "ref"
    subprocess.run([SYNTHSEQ, "build", *args, "--out", str(ref)], check=True, capture_output=True, timeout=600)

    out = tmp_path / "killed"
    proc = subprocess.Popen([SYNTHSEQ, "build", *args, "--out", str(out)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _wait_for(lambda: _num_done(out) >= 2, interval=0.01), "build made no progress"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray cluster it started
        proc.wait()
    done_before = {e["file"]: (out / e["file"]).stat().st_mtime_ns
                   for e in read_manifest(out)["shards"]}
    assert 2 <= len(done_before) < 8
    assert not read_manifest(out)["complete"]

    subprocess.run([SYNTHSEQ, "build", *args, "--out", str(out), "--resume"], check=True,
                   capture_output=True, timeout=600)
    for f, mtime in done_before.items():
        assert (out / f).stat().st_mtime_ns == mtime, f"{f} was rewritten on resume"
    assert _shard_hashes(out) == _shard_hashes(ref)
    assert verify_dataset(out) == [] and read_manifest(out)["complete"]
    assert not list(out.glob("*.tmp"))


def test_killed_worker_is_retried(tmp_path):
    psutil = pytest.importorskip("psutil")
    out = tmp_path / "ds"
    proc = subprocess.Popen([SYNTHSEQ, "build", "tiny", "--out", str(out), "--num-sequences", "4",
                             "--sequences-per-shard", "2", "--workers", "2", "--no-progress",
                             "--set", "generate.num_frames=40"],
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, SYNTHSEQ_BUILD_HELPER="0"))  # every shard a Ray task
    killed = []

    def kill_a_worker():
        for p in psutil.process_iter(["pid", "cmdline"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if "ray::build_shard" in cmd and proc.pid in [a.pid for a in p.parents()]:
                p.kill()
                killed.append(p.info["pid"])
                return True
        return False

    stderr = _finish_after(proc, kill_a_worker, 0.05, "no build_shard worker seen")
    assert proc.returncode == 0, stderr
    assert killed and verify_dataset(out) == []
    assert len(read_manifest(out)["shards"]) == 2


def _timeline(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def _built_by(events: list[dict]) -> dict:
    """shard index -> pid of the process that built it (its 'task: shard read back and hashed' event)."""
    return {e["shard"]: e["pid"] for e in events if e["event"] == "task: shard read back and hashed"}


def test_local_helper_builds_the_same_bytes(tmp_path):
    """A local build forks a helper that builds shards while Ray starts (build_shard, the same bytes): its
    shards and the Ray tasks' are identical to a build where Ray builds every shard."""
    args = ["tiny", "--num-sequences", "4", "--sequences-per-shard", "1", "--workers", "2", "--no-progress",
            "--set", "generate.num_frames=3"]
    runs = {}
    for name, helper in (("with", "1"), ("without", "0")):
        timeline = tmp_path / f"{name}.jsonl"
        subprocess.run([SYNTHSEQ, "build", *args, "--out", str(tmp_path / name)], check=True, capture_output=True,
                       timeout=600, env=dict(os.environ, SYNTHSEQ_BUILD_HELPER=helper,
                                             SYNTHSEQ_BUILD_TIMELINE=str(timeline)))
        runs[name] = _timeline(timeline)
    helpers = {e["pid"] for e in runs["with"] if e["event"] == "helper: start"}
    assert len(helpers) == 1 and helpers & set(_built_by(runs["with"]).values())
    assert not any(e["event"] == "helper: start" for e in runs["without"])
    driver = {e["pid"] for e in runs["without"] if e["event"].startswith("driver")}
    assert set(_built_by(runs["without"])) == {0, 1, 2, 3} and not driver & set(_built_by(runs["without"]).values())
    assert _shard_hashes(tmp_path / "with") == _shard_hashes(tmp_path / "without")
    assert verify_dataset(tmp_path / "with") == [] and read_manifest(tmp_path / "with")["complete"]


def test_killed_helper_gives_its_shard_to_ray(tmp_path):
    timeline = tmp_path / "timeline.jsonl"
    out = tmp_path / "ds"
    proc = subprocess.Popen([SYNTHSEQ, "build", "tiny", "--out", str(out), "--num-sequences", "3",
                             "--sequences-per-shard", "1", "--workers", "2", "--no-progress",
                             "--set", "generate.num_frames=200"],
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, SYNTHSEQ_BUILD_TIMELINE=str(timeline)))
    killed = []

    def kill_the_helper():  # once it has started a shard
        events = _timeline(timeline)
        helper = {e["pid"] for e in events if e["event"] == "helper: start"}
        started = [e for e in events if e["event"] == "task: start" and e["pid"] in helper]
        if started:
            os.kill(started[0]["pid"], signal.SIGKILL)
            killed.append(started[0]["shard"])
        return bool(started)

    stderr = _finish_after(proc, kill_the_helper, 0.02, "the helper started no shard")
    assert proc.returncode == 0, stderr
    assert verify_dataset(out) == [] and len(read_manifest(out)["shards"]) == 3
    helper = {e["pid"] for e in _timeline(timeline) if e["event"] == "helper: start"}
    assert _built_by(_timeline(timeline))[killed[0]] not in helper  # rebuilt by a Ray task


def _given_back_after_release(out: Path) -> None:
    """The body of the test below, run in a fresh interpreter: a process that has rendered (or loaded Open3D,
    torch's OpenMP) must not fork a helper, and pytest's process has done all of these by then."""
    import threading

    from synthseq.pipelines.build import ShardJob, _drive, _Helper, build_shard, shard_config

    cfg = load_config("tiny", ["build.num_sequences=1", "generate.num_frames=120"])
    config_json = json.loads(json.dumps(shard_config(cfg)))
    job = ShardJob(0, (0,), cfg.generate, cfg.build.seed, ())
    pending, lock = [job], threading.Lock()
    helper = _Helper.start(pending, lock, (), {}, config_json, keep_going=True)
    try:
        assert _wait_for(lambda: helper.current is not None, timeout=120, interval=0.005), "the helper took no shard"
        done, released, summaries = {}, [], []
        out.mkdir()

        def release():  # nothing is left for Ray; then the helper dies mid-shard (120 frames)
            released.append(True)
            helper.process.kill()

        _drive(None, pending, out, config_json, 1, 1, False, done, lambda complete: None, summaries.append, {},
               helper=helper, lock=lock, total=[job], release=release)
    finally:
        helper.stop()
    assert released == [True] and list(done) == ["shard-00000.h5"]
    assert [s["pid"] for s in summaries] == [os.getpid()]  # built here, not by the helper
    ref = build_shard(job, config_json, 1)
    assert done["shard-00000.h5"]["sha256"] == ref["sha256"] == hashlib.sha256((out / "shard-00000.h5").read_bytes()).hexdigest()


def test_shard_given_back_after_ray_was_released_is_built_by_the_driver(tmp_path):
    """Once Ray has nothing left, the driver releases it (a local build shuts it down while the helper
    finishes); if the helper then dies, the driver builds the shard it gave back itself: the same bytes."""
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_build; "
            f"test_build._given_back_after_release(test_build.Path({str(tmp_path / 'out')!r})); print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYOPENGL_PLATFORM="egl"))
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


def test_no_helper_is_forked_by_a_process_that_has_rendered(tmp_path):
    """A fork copies only the calling thread: a helper forked by a process whose GL driver (or OpenMP/TBB
    runtime) has run would hang on their locks (it did: glReadPixels waited forever in such a child), so such
    a process builds every shard with Ray; the shards are the same."""
    args = ["tiny", "--num-sequences", "2", "--workers", "2", "--no-progress", *TINY]
    code = ("import logging, sys; logging.basicConfig(level=logging.INFO); "
            "from synthseq.generator.render import make_renderer; make_renderer('moderngl').close(); "
            "from synthseq.pipelines.build import _fork_unsafe_libraries; print(_fork_unsafe_libraries()); "
            "from synthseq.pipelines.cli import main; "
            f"sys.exit(main(['build', '--out', {str(tmp_path / 'a')!r}, *{args!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYOPENGL_PLATFORM="egl"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "_dri.so" in proc.stdout or "libEGL_mesa" in proc.stdout or "nvidia" in proc.stdout
    assert "no build helper: this process has loaded" in proc.stderr
    ref = tmp_path / "ref"
    subprocess.run([SYNTHSEQ, "build", "--out", str(ref), *args], check=True, capture_output=True, timeout=600)
    assert _shard_hashes(tmp_path / "a") == _shard_hashes(ref)


def test_stolen_sequences_give_the_same_shard(tmp_path):
    """The helper builds a shard's last sequences (steal_sequences) while its owner builds the first ones; the
    owner writes the helper's sequences into its shard: the same bytes as building all of them. A claim whose
    process is gone, or a sequence the helper failed on, is built by the owner."""
    from dataclasses import replace

    from synthseq.pipelines.build import ShardJob, build_shard, shard_config, steal_sequences

    cfg = load_config("tiny", ["build.num_sequences=4", "generate.num_frames=3"])
    config_json = json.loads(json.dumps(shard_config(cfg)))
    plain = ShardJob(0, (0, 1, 2, 3), cfg.generate, cfg.build.seed, ())
    ref = build_shard(plain, config_json, 1)["sha256"]

    stolen = tmp_path / "stolen"
    stolen.mkdir()
    job = replace(plain, steal_dir=str(stolen))
    assert steal_sequences(job) == 3  # 3, 2, 1: the owner always builds the first
    assert sorted(p.name for p in stolen.glob("*.seq")) == ["1.seq", "2.seq", "3.seq"]
    assert build_shard(job, config_json, 1)["sha256"] == ref
    assert steal_sequences(job) == 0  # everything claimed

    gone = tmp_path / "gone"
    gone.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (gone / "3.claim").write_text(dead.stdout.strip())  # claimed by a process that died without building it
    (gone / "2.claim").write_text(str(os.getpid()))
    (gone / "2.fail").touch()  # the helper failed on it
    assert build_shard(replace(plain, steal_dir=str(gone)), config_json, 1)["sha256"] == ref


# ------------------------------------------------------------------------------------------- bad input

def _cli(capsys, *args):
    code = cli_main(list(args))
    err = capsys.readouterr().err.strip()
    return code, err


def test_nonempty_output_refused_and_untouched(tmp_path, capsys):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    code, err = _cli(capsys, "build", "tiny", "--out", str(out))
    assert code == 1 and "output directory is not empty; pass --resume" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_output_path_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    code, err = _cli(capsys, "build", "tiny", "--out", str(f))
    assert code == 1 and "exists and is not a directory" in err and f.read_text() == "x"


@pytest.mark.parametrize("override, message", [
    ("generate.bogus=1", r"generate\.bogus: unknown key"),
    ("build.num_sequences=0", r"build\.num_sequences: expected a positive int"),
    ("build.sequences_per_shard=-2", r"build\.sequences_per_shard: expected a positive int"),
    ("generate.num_frames=abc", r"generate\.num_frames: expected int"),
    ("generate.num_frames=0", r"generate\.num_frames"),
    ("generate.renderer=blender", r"generate\.renderer"),
])
def test_bad_config_one_line(tmp_path, capsys, override, message):
    out = tmp_path / "ds"
    code, err = _cli(capsys, "build", "tiny", "--out", str(out), "--set", override)
    assert code == 1 and len(err.splitlines()) == 1, err
    assert __import__("re").search(message, err), err
    assert not out.exists()


def test_missing_config_file(tmp_path, capsys):
    code, err = _cli(capsys, "build", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "ds"))
    assert code == 1 and "nope.yaml: config file not found" in err


def test_resume_with_other_config_refused(ray_cluster, tmp_path, capsys):
    from synthseq.pipelines.build import build_dataset

    out = tmp_path / "ds"
    build_dataset(load_config("tiny", ["build.num_sequences=1", "generate.num_frames=2"]), out, progress=False)
    before = _shard_hashes(out)
    code, err = _cli(capsys, "build", "tiny", "--out", str(out), "--resume", "--num-sequences", "1",
                     "--set", "generate.num_frames=3")
    assert code == 1 and "different config (generate.num_frames: 2 -> 3)" in err
    assert _shard_hashes(out) == before


def test_info_and_verify_cli(ray_cluster, tmp_path, capsys):
    from synthseq.pipelines.build import build_dataset

    out = tmp_path / "ds"
    build_dataset(load_config("tiny", ["build.num_sequences=2", "build.sequences_per_shard=1",
                                       "generate.num_frames=2"]), out, progress=False)
    assert cli_main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2 sequences in 2 shards" in text and "shard-00001.h5:000001" in text
    assert cli_main(["info", str(out / "shard-00000.h5")]) == 0
    assert cli_main(["verify", str(out)]) == 0
    capsys.readouterr()
    f = out / "shard-00001.h5"
    data = bytearray(f.read_bytes())
    data[-100] ^= 0xFF
    f.write_bytes(bytes(data))
    code, err = _cli(capsys, "verify", str(out))
    assert code == 1 and "shard-00001.h5: sha256 mismatch" in err


def test_unreadable_mesh_stops_the_build_before_any_shard(ray_cluster, tmp_path):
    """The tasks draw the specs, but the driver still loads every mesh once (from the bytes it read, while
    Ray starts): a mesh without faces fails before the first task, naming the driver's file."""
    import trimesh

    from synthseq.errors import DataError
    from synthseq.pipelines.build import build_dataset

    meshes = tmp_path / "meshes"
    meshes.mkdir()
    trimesh.creation.box().export(meshes / "box.stl")
    (meshes / "zz_broken.stl").write_bytes(b"solid nothing\nthis is not an STL file\n")
    cfg = load_config("tiny", ["build.num_sequences=2", "generate.num_frames=2", f"generate.objects.mesh_dir={meshes}"])
    out = tmp_path / "ds"
    with pytest.raises(DataError, match=rf"{meshes / 'zz_broken.stl'}: mesh has no faces"):
        build_dataset(cfg, out, progress=False)
    assert not out.exists()
