"""The build's device and GPU scheduling (``build.device``, ``build.tasks_per_gpu``; docs/cluster.md).

A real local Ray cluster that declares two GPUs on this CPU-only machine (``ray.init(num_gpus=2)``: Ray gives
tasks GPU ids and CUDA_VISIBLE_DEVICES as on a GPU node) and the real generator (tiny config). torch here
has no CUDA, so ``auto`` falls back to numpy on its GPU and ``cuda`` fails in one line; the tests that need a
real CUDA device skip with a reason. The test process never imports torch (a forked build helper must not
inherit its OpenMP runtime).
"""

from __future__ import annotations

import os
import shutil
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
TINY = ["build.sequences_per_shard=1", "generate.num_frames=2", "generate.sensor=kinect"]


def _cuda_available() -> bool:
    """A CUDA device torch can use (asked in a subprocess: this process keeps torch unimported)."""
    if not (Path("/dev/nvidia0").exists() or shutil.which("nvidia-smi")):
        return False
    r = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                       capture_output=True, text=True)
    return r.stdout.strip() == "True"


CUDA = _cuda_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device torch can use (none on this machine)")
needs_no_cuda = pytest.mark.skipif(CUDA, reason="checks the failure on a machine without a CUDA device")


@pytest.fixture
def gpu_nodes():
    """A head without CPUs, two worker nodes with 1 CPU and 1 (declared) GPU each and one CPU-only node, each
    with its own raylet, under a private RAY_TMPDIR; this process is not connected to it."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("this process is already connected to a Ray cluster (run this test first or alone)")
    import tempfile

    from ray.cluster_utils import Cluster

    tmp = tempfile.mkdtemp(prefix="ssqg", dir="/tmp")  # short: Ray's socket paths live under it
    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = tmp
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        gpu = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
        cpu_only = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster, gpu, cpu_only
    finally:
        ray.shutdown()
        cluster.shutdown()
        if saved is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.slow
def test_every_gpu_of_a_multinode_cluster_builds(gpu_nodes, tmp_path):
    """--address on a cluster of two 1-GPU nodes and a CPU-only node: one builder on each GPU node, every shard
    built on a GPU node (the CPU-only node takes none: one path per build), each recording its node's GPU 0."""
    from synthseq.pipelines.build import build_dataset

    cluster, gpu, cpu_only = gpu_nodes
    cfg = load_config("tiny", [*TINY, "build.num_sequences=4", "build.device=auto"])
    build_dataset(cfg, tmp_path / "ds", address=cluster.address, progress=False)
    entries = read_manifest(tmp_path / "ds")["shards"]
    assert verify_dataset(tmp_path / "ds") == [] and len(entries) == 4
    assert {e["node"] for e in entries} == {n.node_id for n in gpu}
    assert {e["gpu"] for e in entries} == {"0"} and {e["device"] for e in entries} == {"numpy"}


@pytest.fixture(scope="module")
def gpu_ray():
    ray = pytest.importorskip("ray")
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def _hashes(root: Path) -> dict:
    return {e["file"]: e["sha256"] for e in read_manifest(root)["shards"]}


def _cli(capsys, *args):
    code = cli_main(list(args))
    return code, capsys.readouterr().err.strip()


# ------------------------------------------------------------------------------------------- config

@pytest.mark.parametrize("override, message", [
    ("build.device=gpu", "build.device: expected one of none, cpu, cuda, auto, got 'gpu'"),
    ("build.device=CUDA", "build.device: expected one of none, cpu, cuda, auto, got 'CUDA'"),
    ("build.tasks_per_gpu=0", "build.tasks_per_gpu: expected an int from 1 to 64, got 0"),
])
def test_bad_device_config_one_line(tmp_path, capsys, override, message):
    out = tmp_path / "ds"
    code, err = _cli(capsys, "build", "tiny", "--out", str(out), "--set", override)
    assert code == 1 and len(err.splitlines()) == 1, err
    assert f"--set {override}: {message}" in err, err
    assert not out.exists()


def test_default_build_records_no_device():
    """build.device none (the default) leaves shard_config, so every default shard's bytes, as they were."""
    from synthseq.pipelines.build import shard_config

    assert "device" not in shard_config(load_config("tiny"))
    assert shard_config(load_config("tiny", ["build.device=cpu"]))["device"] == "cpu"
    assert load_config("tiny").build.device == "none"


# ------------------------------------------------------------------------------------------- scheduling

def test_one_builder_per_gpu_each_keeps_its_gpu(gpu_ray, tmp_path, caplog):
    """auto on a cluster with 2 GPUs: 2 GPU shard builders (actors), one per GPU id, each building its shards
    in one process; every shard records its GPU. Without CUDA in torch, auto builds the numpy path's arrays."""
    from synthseq.generator.sequence import generate_sequence, make_spec
    from synthseq.pipelines.build import build_dataset

    cfg = load_config("tiny", [*TINY, "build.num_sequences=4", "build.device=auto"])
    summaries = []
    build_dataset(cfg, tmp_path / "auto", progress=False, on_shard=summaries.append)
    entries = read_manifest(tmp_path / "auto")["shards"]
    assert verify_dataset(tmp_path / "auto") == []
    assert sorted(e["gpu"] for e in entries) == ["0", "0", "1", "1"]
    assert {e["device"] for e in entries} == {"numpy"}  # torch here has no CUDA
    told = [r.getMessage() for r in caplog.records if "was built with numpy on GPU" in r.getMessage()]
    assert len(told) == 1 and "torch there sees no CUDA device" in told[0]  # once per build
    assert len({e["node"] for e in entries}) == 1
    pid_of = {}
    for s in summaries:  # a builder holds one GPU for the whole build
        assert pid_of.setdefault(s["gpu"], s["pid"]) == s["pid"]
    assert len(set(pid_of.values())) == 2
    with ShardReader(tmp_path / "auto" / "shard-00003.h5") as r:
        seq = r.read("000003")
    ref = generate_sequence(make_spec(cfg.generate, cfg.build.seed, 3))  # the numpy reference path
    assert np.array_equal(seq.points, ref.points) and np.array_equal(seq.labels, ref.labels)
    deadline = time.monotonic() + 60  # the builders were released (Ray frees a killed actor's GPU asynchronously)
    while gpu_ray.available_resources().get("GPU") != 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert gpu_ray.available_resources().get("GPU") == 2


def test_tasks_per_gpu_shares_each_gpu(gpu_ray, tmp_path):
    """build.tasks_per_gpu=2: each builder reserves half a GPU, so two builders share one."""
    from synthseq.pipelines.build import build_dataset

    cfg = load_config("tiny", [*TINY, "build.num_sequences=2", "build.device=auto", "build.tasks_per_gpu=2",
                               "build.workers=2", "generate.num_frames=1"])
    summaries = []
    build_dataset(cfg, tmp_path / "ds", progress=False, on_shard=summaries.append)
    assert len({s["pid"] for s in summaries}) == 2 and len({s["gpu"] for s in summaries}) == 1


@needs_no_cuda
def test_cuda_where_torch_has_no_cuda_fails_one_line(gpu_ray, tmp_path):
    from synthseq.pipelines.build import BuildError, build_dataset

    out = tmp_path / "ds"
    cfg = load_config("tiny", [*TINY, "build.num_sequences=2", "build.device=cuda"])
    with pytest.raises(BuildError) as info:
        build_dataset(cfg, out, progress=False)
    line = str(info.value)
    assert len(line.splitlines()) == 1
    assert "build.device=cuda: this task on" in line and "sees no CUDA device" in line, line
    assert not out.exists()


def test_cpu_device_identical_across_workers_and_resume(gpu_ray, tmp_path):
    """The torch code on the CPU: byte-identical shards with 1 and 2 workers and after a resume. A cpu build
    asks Ray for no GPU (its tasks record none). (A local cpu build with its forked helper gave the same
    shards too: checked by hand, docs/cluster.md; a second Ray start costs this file ~10 s.)"""
    from synthseq.generator.sequence import generate_sequence, make_spec
    from synthseq.pipelines.build import build_dataset

    base = [*TINY, "build.num_sequences=3", "build.device=cpu"]
    build_dataset(load_config("tiny", [*base, "build.workers=1"]), tmp_path / "w1", progress=False)
    build_dataset(load_config("tiny", [*base, "build.workers=2"]), tmp_path / "w2", progress=False)
    ref = _hashes(tmp_path / "w1")
    assert _hashes(tmp_path / "w2") == ref and verify_dataset(tmp_path / "w1") == []
    entries = read_manifest(tmp_path / "w1")["shards"]
    assert {(e["device"], e["gpu"]) for e in entries} == {("cpu", None)}
    out = tmp_path / "w2"
    (out / "shard-00001.h5").unlink()
    (out / "shard-00002.h5").write_bytes(b"garbage")
    build_dataset(load_config("tiny", [*base, "build.workers=2"]), out, resume=True, progress=False)
    assert _hashes(out) == ref and verify_dataset(out) == []
    # `--resume` continues with the recorded build.device, as with the recorded number of sequences
    (out / "shard-00002.h5").unlink()
    generate = [a for o in TINY if o.startswith("generate.") for a in ("--set", o)]
    assert cli_main(["build", "tiny", "--out", str(out), "--resume", "--no-progress", *generate]) == 0
    assert _hashes(out) == ref
    # another random stream than the numpy path's (tested equal to the default build's in the test above)
    cfg = load_config("tiny", base)
    with ShardReader(out / "shard-00000.h5") as r:
        assert not np.array_equal(r.read("000000").points,
                                  generate_sequence(make_spec(cfg.generate, cfg.build.seed, 0)).points)


# ------------------------------------------------------------------------------------------- local clusters

@needs_no_cuda
def test_cuda_on_a_cluster_without_gpus_fails_one_line_and_writes_nothing(tmp_path):
    """The local cluster of a CPU-only machine has no GPU: one line, and the (empty) output folder stays empty."""
    out = tmp_path / "ds"
    out.mkdir()
    r = subprocess.run([SYNTHSEQ, "build", "tiny", "--out", str(out), "--no-progress", "--set", "build.device=cuda"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("synthseq build: error: build.device=cuda: the Ray cluster has no GPU ("), r.stderr
    assert lines[0].endswith("or build on the CPUs with --set build.device=auto"), r.stderr
    assert list(out.iterdir()) == []


@needs_cuda
def test_cuda_build_deterministic_on_a_real_gpu(tmp_path):
    """On a machine with a CUDA device: a cuda build twice (1 and 2 workers) gives the same bytes, and each
    shard records the GPU that built it."""
    for workers in (1, 2):
        r = subprocess.run([SYNTHSEQ, "build", "tiny", "--out", str(tmp_path / f"w{workers}"), "--no-progress",
                            "--workers", str(workers), "--num-sequences", "2", "--sequences-per-shard", "1",
                            "--set", "build.device=cuda", "--set", "generate.renderer=moderngl"],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
    assert _hashes(tmp_path / "w1") == _hashes(tmp_path / "w2")
    assert {e["device"] for e in read_manifest(tmp_path / "w1")["shards"]} == {"cuda"}


def test_failing_sequence_is_one_line_naming_it():
    """A sequence that raises inside a shard task: one BuildError line with its id and seed (the task's own
    code, run in this process; no GPU involved)."""
    from synthseq.pipelines.build import BuildError, ShardJob, build_shard

    generate = load_config("tiny", ["generate.num_frames=1"]).generate
    generate.cameras.width = -5  # past validation: the task's camera refuses it
    with pytest.raises(BuildError, match=r"^sequence 2 \(seed \d+\) failed: ValueError: Camera: image size"):
        build_shard(ShardJob(0, (2,), generate, 0), {}, 1)


def test_egl_device_choice_without_nvidia_egl_is_the_default():
    """Where no EGL device answers NVIDIA's CUDA query (Mesa here), a GPU builder's renderer keeps EGL's
    default device. Asked in a subprocess: loading libEGL here would keep later tests from forking a helper."""
    if Path("/dev/nvidia0").exists():
        pytest.skip("an NVIDIA machine: its EGL devices answer (the choice there is not measured)")
    code = "from synthseq.pipelines.build import _egl_cuda_ordinals, egl_device_for_gpu as f; " \
           "print(_egl_cuda_ordinals(), f('0'), f(None))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.split() == ["{}", "None", "None"], r.stderr
