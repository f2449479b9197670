"""Builds on real multi-node Ray clusters on this machine, and the cluster connection's one-line errors.

- ``ray.cluster_utils.Cluster``: a head with no CPUs and two worker nodes with 1 CPU each (their own raylets
  and object stores), so every task runs on a worker node and the driver only writes what tasks return.
- ``ray start --head`` / ``ray start --address`` (slow): the address ``ray start`` prints works with Ray's
  token authentication, and ``ray job submit -- synthseq build`` works.

Isolation: every cluster here lives under its own RAY_TMPDIR, so ``ray.init()`` elsewhere on the machine
never finds it, and is torn down by killing the processes it started (by pid / process group). ``ray stop``
is never called: it kills every Ray process of the user, including other test runs' clusters.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from synthseq.datasets.shards import read_manifest, verify_dataset
from synthseq.pipelines.cli import main as cli_main
from synthseq.pipelines.config import load_config

BIN = Path(sys.executable).parent
SYNTHSEQ = str(BIN / "synthseq")
RAY = str(BIN / "ray")
# Small object stores: the default (30% of RAM per node, in /dev/shm) for several nodes on one shared machine
# made a raylet abort at start.
OBJECT_STORE = ["--object-store-memory", str(200 * 1024 * 1024)]


def _write_meshes(folder: Path, scale: float = 1.0) -> Path:
    """Two real mesh files (STL and PLY) made with trimesh."""
    import trimesh

    folder.mkdir(parents=True, exist_ok=True)
    trimesh.creation.box(extents=(0.3 * scale, 0.2, 0.1)).export(folder / "brick.stl")
    trimesh.creation.icosphere(subdivisions=2, radius=0.2 * scale).export(folder / "ball.ply")
    return folder


def _mesh_cfg(mesh_dir: Path, n: int = 4, frames: int = 3, extra=()):
    return load_config("tiny", [f"build.num_sequences={n}", "build.sequences_per_shard=1",
                                f"generate.num_frames={frames}", f"generate.objects.mesh_dir={mesh_dir}",
                                "generate.objects.mesh_ratio=1.0", *extra])


def _hashes(root: Path) -> dict:
    return {e["file"]: e["sha256"] for e in read_manifest(root)["shards"]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def multinode():
    """A head node without CPUs + two worker nodes with 1 CPU each, under a private RAY_TMPDIR."""
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    tmp = tempfile.mkdtemp(prefix="ssq", dir="/tmp")  # short: Ray's socket paths live under it
    saved = {k: os.environ.get(k) for k in ("RAY_TMPDIR", "RAY_AUTH_MODE")}
    os.environ["RAY_TMPDIR"] = tmp
    os.environ["RAY_AUTH_MODE"] = "token"  # like `ray start` in Ray 2.60: token authentication on
    from ray._raylet import Config

    Config.initialize("")  # what Ray itself calls after switching the mode (authentication_token_setup.py)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        yield cluster, workers
    finally:
        import ray

        ray.shutdown()
        cluster.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        Config.initialize("")
        shutil.rmtree(tmp, ignore_errors=True)


def test_multinode_build_without_the_drivers_files(multinode, tmp_path):
    """Tasks run on the two worker nodes, never open the driver's mesh folder (removed before the first
    task starts) nor its output folder; the shards carry no path of the building machine."""
    cluster, workers = multinode
    mesh_dir = _write_meshes(tmp_path / "meshes")
    cfg = _mesh_cfg(mesh_dir)
    out = tmp_path / "ds"
    summaries = []
    from synthseq.pipelines.build import build_dataset

    manifest = build_dataset(cfg, out, address=cluster.address, progress=False, on_shard=summaries.append,
                             on_planned=lambda: shutil.rmtree(mesh_dir))
    assert not mesh_dir.exists()
    assert verify_dataset(out) == [] and manifest["complete"] and len(manifest["shards"]) == 4
    worker_ids = {w.node_id for w in workers}
    used = {s["node"] for s in summaries}
    assert used == worker_ids, "both worker nodes (and only they) ran shard tasks"
    # meshes were really used, and are named by file name + sha256, never by the driver's path
    names = {m["file"] for m in manifest["shard_config"]["meshes"]}
    assert names == {"ball.ply", "brick.stl"}
    assert all(re.fullmatch(r"[0-9a-f]{64}", m["sha256"]) for m in manifest["shard_config"]["meshes"])
    for e in manifest["shards"]:
        data = (out / e["file"]).read_bytes()
        assert str(tmp_path).encode() not in data and b"/tmp/" not in data
    from synthseq.datasets.shards import ShardReader

    with ShardReader(out / "shard-00000.h5") as r:
        seq = r.read(r.sequence_ids[0])
    assert any(n.endswith(("_brick", "_ball")) for n in seq.object_names)
    assert not list(out.glob("*.tmp")) and not (out / "build.lock").exists()


@pytest.mark.slow
def test_multinode_resume_notices_a_changed_mesh(multinode, tmp_path, capsys):
    """Same meshes in another folder: same shards (no path in them), resume accepted. A mesh changed in
    place: resume refused with the file named, the dataset untouched."""
    cluster, _ = multinode
    from synthseq.pipelines.build import build_dataset

    a = _write_meshes(tmp_path / "a" / "meshes")
    b = _write_meshes(tmp_path / "b" / "elsewhere")
    build_dataset(_mesh_cfg(a, n=2), tmp_path / "da", address=cluster.address, progress=False)
    build_dataset(_mesh_cfg(b, n=2), tmp_path / "db", address=cluster.address, progress=False)
    assert _hashes(tmp_path / "da") == _hashes(tmp_path / "db")
    # resume from the moved folder is the same build
    build_dataset(_mesh_cfg(b, n=2), tmp_path / "da", resume=True, address=cluster.address, progress=False)
    before = _hashes(tmp_path / "da")

    _write_meshes(a, scale=1.5)  # same names, new geometry
    code = cli_main(["build", "tiny", "--out", str(tmp_path / "da"), "--resume", "--address", cluster.address,
                     "--num-sequences", "2", "--sequences-per-shard", "1", "--set", "generate.num_frames=3",
                     "--set", f"generate.objects.mesh_dir={a}", "--set", "generate.objects.mesh_ratio=1.0"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    assert "different config (meshes[" in err and "sha256" in err, err
    assert _hashes(tmp_path / "da") == before


# ----------------------------------------------------------------------------------------- slow, heavy

@pytest.mark.slow
def test_multinode_build_survives_a_killed_worker_node(multinode, tmp_path):
    """Kill a worker node while it runs a shard task: Ray reruns the task on the other node and the
    dataset is byte-identical to an uninterrupted build."""
    cluster, workers = multinode
    from synthseq.pipelines.build import build_dataset

    mesh_dir = _write_meshes(tmp_path / "meshes")
    cfg = _mesh_cfg(mesh_dir, n=6, frames=12)
    build_dataset(cfg, tmp_path / "ref", address=cluster.address, progress=False)

    killed, summaries = [], []

    def kill_the_other_node(summary):
        summaries.append(summary)
        if killed:
            return
        # Two 1-CPU nodes and two tasks in flight: when the first shard arrives, the other node is still
        # rendering its first shard. Kill that node (its raylet, object store and workers).
        victim = next(w for w in workers if w.node_id != summary["node"])
        cluster.remove_node(victim, allow_graceful=False)
        killed.append(victim.node_id)

    try:
        build_dataset(cfg, tmp_path / "ds", address=cluster.address, progress=False, on_shard=kill_the_other_node)
    finally:
        for w in list(workers):
            if w.node_id in killed:
                workers.remove(w)
                workers.append(cluster.add_node(num_cpus=1))  # later tests get two worker nodes again
        cluster.wait_for_nodes()
    assert killed and len(summaries) == 6
    assert all(s["node"] != killed[0] for s in summaries), "no shard came from the killed node"
    assert _hashes(tmp_path / "ds") == _hashes(tmp_path / "ref")
    assert verify_dataset(tmp_path / "ds") == []


class RayStartCluster:
    """A cluster started with the `ray` CLI (`ray start --head --block`, `ray start --address --block`),
    each in its own process group, in a private RAY_TMPDIR and HOME (so its token is its own)."""

    def __init__(self, root: Path, dashboard: bool = False, token: bool = True):
        self.root = root
        self.env = {**os.environ, "RAY_TMPDIR": str(root), "HOME": str(root / "home")}
        for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
            self.env.pop(k, None)
        (root / "home").mkdir(parents=True, exist_ok=True)
        if token:  # `ray start --head` turns token authentication on when a token exists (Ray 2.60)
            import uuid

            (root / "home" / ".ray").mkdir(exist_ok=True)
            (root / "home" / ".ray" / "auth_token").write_text(uuid.uuid4().hex)
        self.token = token
        self.port = _free_port()
        self.dashboard_port = _free_port() if dashboard else None
        self.procs = []
        args = ["--head", "--port", str(self.port), "--num-cpus", "0", "--temp-dir", str(root),
                "--disable-usage-stats", *OBJECT_STORE]
        if dashboard:
            args += ["--include-dashboard", "true", "--dashboard-port", str(self.dashboard_port),
                     "--dashboard-host", "127.0.0.1"]
        else:
            args += ["--include-dashboard", "false"]
        self.head_log = self._start(args, "head")
        self.address = self._wait_for_address()

    def _start(self, args, name, extra_env=None) -> Path:
        # Several nodes on one machine (and other runs' clusters): every fixed default port would clash
        # (the dashboard agent's 52365 did: "bind: Address already in use").
        args = [*args, "--dashboard-agent-listen-port", str(_free_port()), "--metrics-export-port", str(_free_port())]
        log = self.root / f"{name}.log"
        with open(log, "w") as f:
            self.procs.append(subprocess.Popen([RAY, "start", "--block", *args], env={**self.env, **(extra_env or {})},
                                               stdout=f, stderr=subprocess.STDOUT, start_new_session=True))
        return log

    def _wait_for_address(self, timeout=180) -> str:
        t0 = time.time()
        while time.time() - t0 < timeout:
            m = re.search(r"ray start --address='([^']+)'", self.head_log.read_text())
            if m:
                return m.group(1)
            if self.procs[0].poll() is not None:
                break
            time.sleep(0.5)
        raise RuntimeError(f"ray start --head did not come up: {self.head_log.read_text()[-2000:]}")

    def add_worker(self, num_cpus=1) -> None:
        n = len(self.procs)
        # A worker node joining a cluster with token authentication needs RAY_AUTH_MODE=token (and the
        # token) in Ray 2.60, like any client connecting by explicit address (docs/cluster.md).
        self._start(["--address", self.address, "--num-cpus", str(num_cpus), "--disable-usage-stats", *OBJECT_STORE],
                    f"worker{n}", {"RAY_AUTH_MODE": "token"} if self.token else {})

    def wait_for_cpus(self, cpus: int, timeout=180) -> None:
        code = ("import ray, time; ray.init(address=%r, logging_level='ERROR'); t = time.time()\n"
                "while ray.cluster_resources().get('CPU', 0) < %d and time.time() - t < %d: time.sleep(0.5)\n"
                "print(ray.cluster_resources().get('CPU', 0))" % (self.address, cpus, timeout))
        env = {**self.env, "RAY_AUTH_MODE": "token" if self.token else "disabled"}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             timeout=timeout + 60)
        assert out.returncode == 0 and float(out.stdout.split()[-1]) >= cpus, out.stderr[-2000:]

    def stop(self) -> None:
        import psutil

        for p in self.procs:  # --block: SIGTERM makes `ray start` stop its node's processes
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        t0 = time.time()
        while time.time() - t0 < 20 and any(p.poll() is None for p in self.procs):
            time.sleep(0.5)
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
        # anything of this cluster that left its process group (workers, agents): by pid
        marker = str(self.root)
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if marker in " ".join(proc.info["cmdline"] or []):
                    proc.kill()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass


@pytest.fixture
def ray_start_cluster():
    pytest.importorskip("psutil")
    root = Path(tempfile.mkdtemp(prefix="ssq", dir="/tmp"))
    clusters = []

    def start(**kw):
        c = RayStartCluster(root, **kw)
        clusters.append(c)
        return c

    try:
        yield start
    finally:
        for c in clusters:
            c.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_ray_start_address_just_works_with_token_auth(ray_start_cluster, tmp_path):
    """`ray start --head` (token auth on by default) + two `ray start --address` workers; `synthseq build
    --address <the printed address>` from a shell with no RAY_AUTH_MODE set completes and verifies."""
    c = ray_start_cluster()
    c.add_worker()
    c.wait_for_cpus(1)
    c.add_worker()
    c.wait_for_cpus(2)
    assert "Token authentication is enabled" in c.head_log.read_text()
    out = tmp_path / "ds"
    r = subprocess.run([SYNTHSEQ, "build", "tiny", "--out", str(out), "--address", c.address, "--no-progress",
                        "--num-sequences", "4", "--sequences-per-shard", "1", "--set", "generate.num_frames=3"],
                       env=c.env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert verify_dataset(out) == [] and read_manifest(out)["complete"]

    # no token on the client: one line saying what to set, within 30 s, nothing written
    env = {**c.env, "HOME": str(tmp_path / "nohome")}
    t0 = time.time()
    r = subprocess.run([SYNTHSEQ, "build", "tiny", "--out", str(tmp_path / "x"), "--address", c.address],
                       env=env, capture_output=True, text=True, timeout=120)
    took = time.time() - t0
    err = r.stderr.strip()
    assert r.returncode == 1 and len(err.splitlines()) == 1, err[-3000:]
    assert "requires its auth token" in err and "RAY_AUTH_TOKEN" in err and took < 30, (took, err)
    assert not (tmp_path / "x").exists()
    # a wrong token: says the token was refused
    r = subprocess.run([SYNTHSEQ, "build", "tiny", "--out", str(tmp_path / "x"), "--address", c.address],
                       env={**env, "RAY_AUTH_TOKEN": "0" * 32}, capture_output=True, text=True, timeout=120)
    err = r.stderr.strip()
    assert r.returncode == 1 and len(err.splitlines()) == 1 and "refused the auth token from RAY_AUTH_TOKEN" in err


@pytest.mark.slow
def test_ray_job_submit_build(ray_start_cluster, tmp_path):
    """`ray job submit -- synthseq build ...` against a head started with `ray start --head` (docs/cluster.md).

    This head has no token (so token authentication is off); a client that has a token file of its own
    still joins it with --address (it must not switch to token mode, or its tasks could not call back).
    """
    pytest.importorskip("aiohttp", reason="ray job submit needs the dashboard: pip install 'ray[default]'")
    c = ray_start_cluster(dashboard=True, token=False)
    c.add_worker(num_cpus=2)
    c.wait_for_cpus(2)
    assert "Token authentication is disabled" in c.head_log.read_text()
    home = tmp_path / "client"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("a-token-of-another-cluster")
    r = subprocess.run([SYNTHSEQ, "build", "tiny", "--out", str(tmp_path / "direct"), "--address", c.address,
                        "--no-progress", "--num-sequences", "1", "--set", "generate.num_frames=2"],
                       env={**c.env, "HOME": str(home)}, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert verify_dataset(tmp_path / "direct") == []
    out = tmp_path / "ds"
    r = subprocess.run([RAY, "job", "submit", "--address", f"http://127.0.0.1:{c.dashboard_port}", "--",
                        SYNTHSEQ, "build", "tiny", "--out", str(out), "--no-progress", "--num-sequences", "2",
                        "--sequences-per-shard", "1", "--set", "generate.num_frames=3"],
                       env=c.env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "built 2 sequences in 2 shards" in r.stdout
    assert verify_dataset(out) == []


# ----------------------------------------------------------------------------------------- bad input (fast)

def _cli(capsys, *args):
    code = cli_main(list(args))
    return code, capsys.readouterr().err.strip()


def test_unreachable_address_fails_fast_in_one_line(tmp_path, capsys):
    port = _free_port()  # nothing listens there
    t0 = time.time()
    code, err = _cli(capsys, "build", "tiny", "--out", str(tmp_path / "ds"), "--address", f"127.0.0.1:{port}")
    assert code == 1 and len(err.splitlines()) == 1, err
    assert f"cannot reach a Ray cluster at 127.0.0.1:{port}" in err and time.time() - t0 < 30
    assert not (tmp_path / "ds" / "shard-00000.h5").exists()


@pytest.mark.parametrize("address", ["nonsense", "host:port", ":6379"])
def test_malformed_address_one_line(tmp_path, capsys, address):
    code, err = _cli(capsys, "build", "tiny", "--out", str(tmp_path / "ds"), "--address", address)
    assert code == 1 and len(err.splitlines()) == 1 and "expected HOST:PORT" in err, err


@pytest.mark.parametrize("uri, package", [("s3://bucket/ds", "s3fs"), ("gs://bucket/ds", "gcsfs"),
                                          ("weird://x/ds", "fsspec filesystem for weird://")])
def test_unsupported_output_scheme_names_the_package(tmp_path, capsys, uri, package):
    code, err = _cli(capsys, "build", "tiny", "--out", uri)
    assert code == 1 and len(err.splitlines()) == 1 and package in err, err


def test_lock_stops_a_second_build(tmp_path, capsys):
    """A build holding OUT/build.lock (another process) makes a second build into OUT fail in one line."""
    out = tmp_path / "ds"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time\nfrom pathlib import Path\n"
                               "from synthseq.pipelines.build import build_lock\n"
                               "with build_lock(Path(sys.argv[1])):\n    print('held', flush=True)\n"
                               "    time.sleep(60)\n", str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, err = _cli(capsys, "build", "tiny", "--out", str(out), "--resume")
        assert code == 1 and len(err.splitlines()) == 1, err
        assert "another build is writing this directory (pid" in err
        assert sorted(p.name for p in out.iterdir()) == ["build.lock"]
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the dead holder's lock: the directory can be built again
    from synthseq.pipelines.build import build_lock

    with build_lock(out):
        pass
    assert not (out / "build.lock").exists()


@pytest.mark.slow
def test_deterministic_task_error_runs_once(tmp_path):
    """A shard task that raises (here: a mesh whose bytes are not a mesh) is not retried, whatever
    build.max_retries says (Ray's timeline shows one execution), and the build stops with one line naming
    the shard, the sequence and its seed."""
    import hashlib

    import ray
    import trimesh

    from synthseq.pipelines.build import BuildError, ShardJob, _drive, shard_config, shard_task

    mesh_dir = tmp_path / "meshes"
    mesh_dir.mkdir()
    trimesh.creation.box().export(mesh_dir / "box.stl")
    cfg = _mesh_cfg(mesh_dir, n=1, frames=2)
    garbage = b"solid nothing\nthis is not an STL file\n"
    digest = hashlib.sha256(garbage).hexdigest()
    fake = "/nonexistent/driver/path/box.stl"  # the task must not open it (it does not exist anyway)
    job = ShardJob(0, (0,), cfg.generate, cfg.build.seed, ((fake, digest, "box.stl"),))
    ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR")
    try:
        task = shard_task(max_retries=3, threads=1)
        with pytest.raises(BuildError, match=r"shard 0: sequence 0 \(seed \d+\) failed: DataError: /nonexistent/driver/path/box.stl: mesh has no faces"):
            _drive(task, [job], tmp_path / "out", shard_config(cfg), 1, 1, False, {}, lambda complete: None,
                   None, {digest: ray.put(garbage)})
        time.sleep(2)  # task events reach the GCS asynchronously
        runs = [e for e in ray.timeline() if str(e.get("name", "")).endswith("build_shard")]
    finally:
        ray.shutdown()
    assert len(runs) == 1, runs
