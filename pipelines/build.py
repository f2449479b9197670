"""`synthseq build`: render a dataset of HDF5 shards with Ray — one task per shard, resumable, deterministic.

How a build runs (the same on the embedded local cluster and on a multi-node cluster without a shared
filesystem; docs/cluster.md):

1. The driver resolves the config, checks the output directory, takes its lock (``build.lock``, so two
   builds never write one directory), reads every mesh file once and hashes it (a missing mesh fails here,
   before anything is written), and loads each mesh once while Ray starts (an unreadable mesh fails before
   the first task). It makes no ``SceneSpec``: each task draws the specs of its own sequences, in parallel.
2. It writes the resolved ``config.yaml`` and a ``manifest.json`` marked ``"complete": false``. The
   manifest's ``shard_config`` (also stored in every shard) names mesh files by file name and sha256, never
   by the building machine's path: resume refuses a changed mesh, and a moved checkout gives the same bytes.
3. One Ray task per shard receives the ``generate`` config, its sequence indices and the bytes of every
   mesh file (through the object store, keyed by content hash; written to a node-local cache under their
   file names), draws each sequence's spec (``make_spec``, the same on every node), renders its sequences
   into a node-local temporary shard and returns the finished shard's bytes with a small summary (sequence
   ids, sha256, size, timing). The driver checks the sha256 and writes the shard atomically (``*.tmp``,
   fsync, rename). At most ``workers`` tasks run at once (on a local cluster this process started, one more
   per worker waits queued in Ray, so a worker never waits for the driver between shards); results arrive
   through ``ray.wait``. Each finished shard is added to the manifest at once, so a killed build loses only
   the shards that were in flight. On a local cluster that this process starts, a helper process forked
   from the driver before Ray starts takes shards from the same queue and builds them with the same
   ``build_shard`` (the same bytes) while Ray starts, and, with two or more workers, is one of them (Ray gets
   one CPU less); idle at the end, it builds the last sequences of a shard a Ray task is still building
   (:func:`steal_sequences`), and once Ray has nothing left it is shut down while the helper finishes.
   ``SYNTHSEQ_BUILD_HELPER=0`` leaves every shard to Ray (:class:`_Helper`).
   With ``build.device`` cuda (or auto) on a cluster with GPUs, the shards go instead to one
   :class:`ShardBuilder` actor per GPU (per share of one: ``build.tasks_per_gpu``), which keeps its GPU, CUDA
   and GL contexts for the whole build (:class:`_GpuPool`; no helper); docs/cluster.md.
4. ``--resume`` keeps every shard listed in the manifest whose size and sha256 match the file, and
   rebuilds the rest. Sequence i's seed depends only on (root seed, i), and shard j always holds
   sequences [j*S, (j+1)*S), so any mix of workers, nodes and resumes gives byte-identical shards.

Ray retries a task whose worker or node died (``build.max_retries``). A sequence that raises is not
retried (the error is deterministic): the build stops with one line naming the sequence id and seed. Any
other Ray failure (out of memory, an object lost for good) is one line too.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from synthseq.errors import ConfigError, SynthseqError

log = logging.getLogger(__name__)


class BuildError(SynthseqError):
    """A build could not complete (a sequence kept failing, the cluster went away)."""


LOCK = "build.lock"
# When set, the driver and every local task append timestamped events (wall time, process CPU time, pid) to
# this JSON-lines file: `bench/bench_build.py --profile` reads it to show where a build's time goes.
TIMELINE_ENV = "SYNTHSEQ_BUILD_TIMELINE"


def mark(event: str, **info) -> None:
    """Append ``event`` to the build timeline (``$SYNTHSEQ_BUILD_TIMELINE``); does nothing when it is unset."""
    path = os.environ.get(TIMELINE_ENV)
    if not path:
        return
    import json

    line = json.dumps({"t": time.time(), "cpu": time.process_time(), "pid": os.getpid(), "event": event, **info})
    with open(path, "a") as f:  # one short write per line: lines of concurrent processes do not interleave
        f.write(line + "\n")


@dataclass(frozen=True)
class ShardJob:
    """What one Ray task receives: the shard index, its sequence indices, the ``generate`` config and root
    seed their specs are drawn from (plain data), and every mesh file the config draws from, as (driver
    path, sha256, file name) in ``make_spec`` order; their bytes travel beside the job."""

    index: int
    sequence_indices: tuple
    generate: object
    root_seed: int
    meshes: tuple = field(default=())
    # A node-local folder shared with the build's helper, which may build this shard's last sequences
    # (:func:`steal_sequences`); "" = none. Set only on local builds.
    steal_dir: str = ""
    # build.device: "none" (numpy), "cpu" (torch on the CPU), "cuda" / "auto" (the task's GPU: :func:`task_device`)
    device: str = "none"


# ----------------------------------------------------------------------------------------- planning

def plan_shards(num_sequences: int, sequences_per_shard: int) -> list[tuple[int, ...]]:
    """Sequence indices of every shard: shard j holds [j*S, min((j+1)*S, num_sequences))."""
    return [tuple(range(start, min(start + sequences_per_shard, num_sequences)))
            for start in range(0, num_sequences, sequences_per_shard)]


def mesh_paths(generate_cfg) -> list[str]:
    """The mesh files a build draws from, in the order ``make_spec`` indexes them (``mesh_dir`` sorted by
    name, then ``mesh_files``), as absolute paths of the driver's machine."""
    from synthseq.generator.assets import check_mesh_file, list_mesh_files

    o = generate_cfg.objects
    files = list(list_mesh_files(o.mesh_dir)) if o.mesh_dir else []
    files.extend(check_mesh_file(p, f"generate.objects.mesh_files[{i}]") for i, p in enumerate(o.mesh_files))
    return files


def shard_config(cfg, meshes=()) -> dict:
    """The part of the config that determines a shard's bytes (stored in every shard's attrs).

    Excludes what may differ between equivalent builds (worker count, retries, run name, where the mesh
    files live), so 1-worker and 2-worker builds, and builds from another checkout, write identical files.
    Mesh files are named by file name and sha256 (``meshes``: :class:`~synthseq.pipelines.cluster.InputFile`
    in ``make_spec`` order), so a changed mesh changes the config and resume refuses it.
    """
    from synthseq.config import to_dict

    generate = to_dict(cfg.generate)
    objects = generate.get("objects", {})
    if "mesh_dir" in objects:
        objects["mesh_dir"] = None
    if "mesh_files" in objects:
        objects["mesh_files"] = []
    config = {"generate": generate, "meshes": [{"file": m.name, "sha256": m.sha256} for m in meshes],
              "seed": cfg.build.seed, "num_sequences": cfg.build.num_sequences,
              "sequences_per_shard": cfg.build.sequences_per_shard}
    if cfg.build.device != "none":  # another random stream (generate_sequence's device); absent: the numpy path,
        config["device"] = cfg.build.device  # so builds without the key keep their bytes and resume
    return config


def check_output_dir(out: Path, resume: bool) -> None:
    """Refuse an output path that is a file, or a non-empty directory without ``resume``."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: output path exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not resume:
        raise FileExistsError(
            f"{out}: output directory is not empty; pass --resume to continue that build, or choose another --out")


def check_resumable(out: Path, cfg, meshes=()) -> dict | None:
    """On resume: the existing manifest (or None for a fresh directory), after checking it was made from
    the same generate config and seed.

    Raises:
        ConfigError: the directory holds a build of another config.
    """
    import json

    from synthseq.datasets.shards import MANIFEST, read_manifest

    if not (out / MANIFEST).exists():
        if out.is_dir() and any(p.suffix == ".h5" for p in out.iterdir()):
            raise ConfigError(f"{out}: has shards but no manifest.json; cannot resume (build into a new --out)")
        return None
    manifest = read_manifest(out)
    old = manifest.get("shard_config")
    new = json.loads(json.dumps(shard_config(cfg, meshes)))
    if old != new:
        diff = _first_difference(old, new)
        raise ConfigError(f"{out}: was built with a different config ({diff}); --resume needs the same config "
                          f"and seed (the recorded one: synthseq build {out / 'config.yaml'} --out {out} --resume)")
    return manifest


def _first_difference(a, b, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else k)
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return _first_difference(x, y, f"{path}[{i}]")
    return f"{path or 'config'}: {a!r} -> {b!r}"


@contextmanager
def build_lock(out: Path):
    """Hold ``out/build.lock`` (an exclusive ``flock``) for the duration of a build; removed on exit.

    The kernel drops the lock when the process dies, so a killed build never leaves a stale lock.

    Raises:
        BuildError: another build holds it (naming its pid and host).
    """
    import fcntl

    path = out / LOCK
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            raise BuildError(f"{out}: another build is writing this directory ({holder}); wait for it to "
                             f"finish or choose another --out") from None
        try:  # the holder may have removed the file between our open and flock: lock the current one
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        try:
            os.unlink(path)
        finally:
            os.close(fd)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path.tmp``, fsync, rename to ``path`` and fsync the folder."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# ----------------------------------------------------------------------------------------- the task

def _job_generate(job: "ShardJob", mesh_data):
    """The job's generate config with its mesh files written to this node's cache (``mesh_data``: their bytes, in
    ``job.meshes`` order) and named there, and the {driver path: node-local copy} of those files."""
    from synthseq.pipelines.cluster import materialize

    local = {path: materialize(digest, name, data) for (path, digest, name), data in zip(job.meshes, mesh_data)}
    return _with_local_meshes(job.generate, [local[path] for path, _, _ in job.meshes]), local


def _ray_gpu_ids() -> list:
    """The GPU ids Ray assigned to this task or actor ([] outside Ray, or without a GPU)."""
    import sys

    ray = sys.modules.get("ray")  # not imported here: the local helper is no Ray worker
    try:
        if ray is not None and ray.is_initialized():
            return list(ray.get_gpu_ids())
    except Exception:  # noqa: BLE001 - the driver or a process outside a task
        pass
    return []


def task_device(requested: str, threads: int = 1) -> tuple:
    """The torch device this task passes to ``generate_sequence`` for ``build.device``, and what to record.

    ``none``: None (numpy). ``cpu``: "cpu" (torch with ``threads`` intra-op threads). ``cuda`` / ``auto`` in a
    task Ray gave a GPU: "cuda" (CUDA_VISIBLE_DEVICES, set by Ray, leaves torch only that GPU, as cuda:0);
    ``auto`` without a GPU, or where torch sees no CUDA device: None (numpy).

    Returns:
        (device or None, {"device": "cuda" | "cpu" | "numpy", "gpu": Ray's GPU id or None}).

    Raises:
        BuildError: ``cuda`` where this task has no GPU or torch cannot use it (one line).
    """
    if requested == "none":  # the default path asks Ray nothing (it also runs outside Ray: the helper, the driver)
        return None, {"device": "numpy", "gpu": None}
    gpus = _ray_gpu_ids()
    gpu = str(gpus[0]) if gpus else None
    if requested == "auto" and gpu is None:
        return None, {"device": "numpy", "gpu": None}
    try:
        import torch
    except ImportError:
        torch = None
    if requested == "cpu":
        if torch is None:
            raise BuildError("build.device=cpu needs torch on every node: pip install 'synthseq[torch]'")
        torch.set_num_threads(max(1, int(threads)))
        return "cpu", {"device": "cpu", "gpu": gpu}
    cuda = torch is not None and torch.cuda.is_available()
    if gpu is not None and cuda:
        return "cuda", {"device": "cuda", "gpu": gpu}
    if requested == "auto":
        return None, {"device": "numpy", "gpu": gpu}
    where = f"GPU {gpu} (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')})" if gpu else "no GPU"
    why = ("torch is not installed" if torch is None else
           f"torch {torch.__version__} sees no CUDA device (torch.cuda.is_available() is False)")
    raise BuildError(f"build.device=cuda: this task on {socket.gethostname()} got {where} from Ray but {why}; "
                     f"install a CUDA build of torch on every GPU node, or use --set build.device=auto")


def _egl_cuda_ordinals() -> dict:
    """{EGL device index: CUDA device ordinal} for the EGL devices that answer NVIDIA's EGL_NV_device_cuda query
    ({} without libEGL, the extension or an NVIDIA device). The indices are those of EGL's device list, which
    moderngl's ``device_index`` picks from; EGL lists every GPU of the machine whatever CUDA_VISIBLE_DEVICES
    says, so Ray's GPU id alone is no EGL index."""
    import ctypes
    import ctypes.util

    EGL_CUDA_DEVICE_NV = 0x323A
    found = {}
    try:
        egl = ctypes.CDLL(ctypes.util.find_library("EGL") or "libEGL.so.1")
        egl.eglGetProcAddress.restype = ctypes.c_void_p
        egl.eglGetProcAddress.argtypes = [ctypes.c_char_p]
        query_devices = egl.eglGetProcAddress(b"eglQueryDevicesEXT")
        query_attrib = egl.eglGetProcAddress(b"eglQueryDeviceAttribEXT")
        if not query_devices or not query_attrib:
            return {}
        query_devices = ctypes.CFUNCTYPE(ctypes.c_uint, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p),
                                         ctypes.POINTER(ctypes.c_int))(query_devices)
        query_attrib = ctypes.CFUNCTYPE(ctypes.c_uint, ctypes.c_void_p, ctypes.c_int,
                                        ctypes.POINTER(ctypes.c_ssize_t))(query_attrib)
        devices = (ctypes.c_void_p * 64)()
        count = ctypes.c_int(0)
        if not query_devices(64, devices, ctypes.byref(count)):
            return {}
        for i in range(count.value):
            value = ctypes.c_ssize_t(-1)
            if query_attrib(devices[i], EGL_CUDA_DEVICE_NV, ctypes.byref(value)) and value.value >= 0:
                found[i] = int(value.value)
    except Exception:  # noqa: BLE001 - no libEGL, no extension: the default device
        return {}
    return found


def egl_device_for_gpu(gpu_id) -> int | None:
    """The EGL device index of the GPU Ray gave this task (``gpu_id``), or None (EGL's default device).

    Not measured on a multi-GPU node (no GPU was lent to this work). Where only one EGL device answers the CUDA
    query, the driver honours CUDA_VISIBLE_DEVICES (Ray set it to this task's GPU): that device. Where several
    answer, their ordinals are the machine's: the one equal to Ray's GPU id."""
    ordinals = _egl_cuda_ordinals()
    if len(ordinals) == 1:
        return next(iter(ordinals))
    try:
        wanted = int(gpu_id)
    except (TypeError, ValueError):
        return None
    return next((index for index, ordinal in ordinals.items() if ordinal == wanted), None)


def _renderer_options(name: str, device, gpu_id) -> dict:
    """make_renderer options that put a GL renderer on this task's GPU (``device`` "cuda"); {} otherwise."""
    if device != "cuda":
        return {}
    index = egl_device_for_gpu(gpu_id)
    if index is None:
        return {}
    if name == "moderngl":
        return {"egl_device": index}
    if name == "pyrender":
        os.environ["EGL_DEVICE_ID"] = str(index)  # pyrender's offscreen renderer reads it
    return {}


def build_shard(job: ShardJob, config_json: dict, threads: int = 1, *mesh_data: bytes) -> dict:
    """Draw the spec of every sequence of one shard, render them into a node-local temporary file and
    return its bytes.

    Runs inside a Ray worker, on any node: it opens no path of the driver's machine. The mesh files arrive
    as ``mesh_data`` (bytes, in ``job.meshes`` order) and are written to a node-local cache keyed by sha256,
    under their own file names (``make_spec`` names objects after them); the config is pointed at those
    copies, in the driver's order, so every node draws the same specs.

    Args:
        job: the shard. config_json: :func:`shard_config` (stored in the shard's attrs).
        threads: the CPU count reserved for this task (given to the ray-casting renderer).
        mesh_data: the content of each of ``job.meshes``.

    Returns:
        A small summary: file, sequence_ids, bytes, sha256, num_sequences, view_frames, seconds, pid,
        maxrss_kb, node; and ``data``, the shard file's bytes.

    Raises:
        BuildError: naming the sequence id and seed that failed.
    """
    from synthseq.datasets.shards import ShardWriter, sequence_key, shard_name
    from synthseq.generator.render import make_renderer
    from synthseq.generator.sequence import generate_sequence, make_spec, sequence_seed
    t0 = time.perf_counter()
    mark("task: start", shard=job.index)
    generate, local = _job_generate(job, mesh_data)
    device, placement = task_device(job.device, threads)
    renderer = None
    view_frames = 0
    with tempfile.TemporaryDirectory(prefix="synthseq-shard-") as tmp:
        path = Path(tmp) / shard_name(job.index)
        try:
            with ShardWriter(path, config=config_json) as writer:
                for seq_index in job.sequence_indices:
                    if renderer is None:
                        renderer = make_renderer(generate.renderer, threads=threads, shared=True,
                                                 **_renderer_options(generate.renderer, device, placement["gpu"]))
                        mark("task: renderer ready", shard=job.index)
                    seq = _claim_or_take(job.steal_dir, seq_index) if job.steal_dir else None
                    if seq is not None:
                        mark("task: sequence taken from the helper", shard=job.index, sequence=seq_index)
                    try:
                        if seq is None:
                            spec = make_spec(generate, job.root_seed, seq_index)
                            seq = generate_sequence(spec, renderer=renderer, device=device)
                            mark("task: sequence generated", shard=job.index, sequence=seq_index)
                    except Exception as e:  # any failure of one sequence is reported with its id and seed
                        msg = str(e)
                        for driver_path, copy in local.items():  # name meshes as the user knows them
                            msg = msg.replace(copy, driver_path)
                        raise BuildError(f"sequence {seq_index} (seed {sequence_seed(job.root_seed, seq_index)}) failed: "
                                         f"{type(e).__name__}: {msg}") from e
                    writer.write(sequence_key(seq_index), seq)
                    mark("task: sequence written", shard=job.index, sequence=seq_index)
                    view_frames += seq.num_frames * seq.num_views
        finally:
            if renderer is not None:
                renderer.close()
        data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    mark("task: shard read back and hashed", shard=job.index)
    placed = {} if job.device == "none" else placement  # what built it, where (build.device set only)
    return {
        **placed,
        "file": shard_name(job.index),
        "sequence_ids": [sequence_key(i) for i in job.sequence_indices],
        "sequences": writer.sequence_index,  # per-sequence T/V/N/K: datasets open without reading shards
        "bytes": len(data),
        "sha256": digest,
        "num_sequences": len(job.sequence_indices),
        "view_frames": view_frames,
        "seconds": time.perf_counter() - t0,
        "pid": os.getpid(),
        "node": _node_id(),
        "maxrss_kb": _maxrss_kb(),
        "data": data,
    }


# Sequence stealing (local builds): the shard's owner claims each sequence before generating it, in order; the
# helper, idle at the end of a build, claims the shard's sequences from the last one back (stopping at the
# first one already claimed) and leaves each one it builds as a pickle; the owner writes those into its shard
# as they are (the same arrays: the same bytes). A claim is a file created with O_EXCL holding the claimant's
# pid, so an owner waiting for a stolen sequence builds it itself if the helper died or failed on it.

STEAL_WAIT_S = 300.0  # the longest an owner waits for a sequence the helper claimed before building it itself


def _claim(steal_dir: str, seq_index: int) -> bool:
    try:
        fd = os.open(os.path.join(steal_dir, f"{seq_index}.claim"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def _claim_or_take(steal_dir: str, seq_index: int):
    """For the owner of a shard: None when this process builds sequence ``seq_index`` (claimed now, or the
    claimant died or failed on it), else the PointSequence the helper built."""
    import pickle

    if _claim(steal_dir, seq_index):
        return None
    base = os.path.join(steal_dir, str(seq_index))
    give_up = time.monotonic() + STEAL_WAIT_S
    while time.monotonic() < give_up:  # past it (a claimant alive but stuck), build it here: the same arrays
        try:
            with open(base + ".seq", "rb") as f:
                return pickle.load(f)
        except FileNotFoundError:
            pass
        if os.path.exists(base + ".fail"):
            return None
        try:
            pid = int(Path(base + ".claim").read_text() or "0")
            os.kill(pid, 0)
        except (OSError, ValueError):  # the claimant is gone (a retried task's own earlier claim, a dead helper)
            if not os.path.exists(base + ".seq"):
                return None
        time.sleep(0.005)
    return None


def steal_sequences(job: ShardJob, threads: int = 1, *mesh_data: bytes) -> int:
    """For the helper: build the last sequences of ``job`` (another process's shard) that its owner has not
    claimed yet, from the last one back, each left in ``job.steal_dir`` for the owner. Returns how many."""
    import pickle

    from synthseq.generator.render import make_renderer
    from synthseq.generator.sequence import generate_sequence, make_spec

    generate, _ = _job_generate(job, mesh_data)
    device, _ = task_device(job.device, threads)
    renderer = None
    count = 0
    try:
        for seq_index in reversed(job.sequence_indices[1:]):  # the owner always builds the first itself
            if not _claim(job.steal_dir, seq_index):
                break
            base = os.path.join(job.steal_dir, str(seq_index))
            try:
                if renderer is None:
                    renderer = make_renderer(generate.renderer, threads=threads, shared=True)
                seq = generate_sequence(make_spec(generate, job.root_seed, seq_index), renderer=renderer,
                                        device=device)
                with open(base + ".seq.tmp", "wb") as f:
                    pickle.dump(seq, f, protocol=pickle.HIGHEST_PROTOCOL)
                os.replace(base + ".seq.tmp", base + ".seq")
            except Exception:  # noqa: BLE001 - the owner builds it and reports the failure with its id
                Path(base + ".fail").touch()
                break
            mark("helper: sequence stolen", shard=job.index, sequence=seq_index)
            count += 1
    finally:
        if renderer is not None:
            renderer.close()
    return count


def _with_local_meshes(generate, copies: list):
    """The ``generate`` config drawing from ``copies`` (node-local mesh files, in ``make_spec`` order) instead
    of the driver's ``mesh_dir`` / ``mesh_files``."""
    objects = generate.objects
    if not copies and not objects.mesh_dir and not objects.mesh_files:
        return generate
    return replace(generate, objects=replace(objects, mesh_dir=None, mesh_files=list(copies)))


def check_meshes(meshes, contents: dict) -> None:
    """Load every mesh file once, from the bytes the driver read (through a node-local copy, as a task does:
    the driver's files are not opened again), so that an unreadable mesh or one without faces stops the
    build before its first task rather than in the task of the first sequence drawing it.

    Args:
        meshes: :class:`~synthseq.pipelines.cluster.InputFile` list. contents: their bytes by sha256.

    Raises:
        DataError: naming the driver's file.
    """
    from synthseq.errors import DataError
    from synthseq.generator.assets import unit_mesh
    from synthseq.pipelines.cluster import materialize

    for m in meshes:
        copy = materialize(m.sha256, m.name, contents[m.sha256])
        try:
            unit_mesh(copy)
        except DataError as e:
            raise DataError(str(e).replace(copy, m.path)) from None


def _node_id() -> str:
    """The Ray node this task runs on (hex id), or the host name outside Ray."""
    import sys

    ray = sys.modules.get("ray")  # not imported here: a process without Ray (the local helper) is not on a node
    try:
        if ray is not None and ray.is_initialized():  # get_runtime_context() would start a local Ray
            return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - called outside a Ray worker (tests of the task function)
        pass
    return socket.gethostname()


def _maxrss_kb() -> int:
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


# ----------------------------------------------------------------------------------------- the driver

def check_output_uri(out_dir) -> Path:
    """The output directory as a local path; ``file://`` URIs are accepted.

    Raises:
        UsageError: another scheme (``s3://``, ``gs://``...): shards reach the driver through Ray's object
            store and the driver writes them, so the output is a folder the driver can write; the message
            names the filesystem package and says to build locally and copy.
    """
    from synthseq.errors import UsageError

    text = str(out_dir)
    if "://" not in text:
        return Path(text)
    scheme = text.split("://", 1)[0].lower()
    if scheme == "file":
        return Path(text[len("file://"):])
    package = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs",
               "hdfs": "pyarrow"}.get(scheme, f"an fsspec filesystem for {scheme}://")
    raise UsageError(f"--out {text}: {scheme}:// output is not supported (it would need {package}); "
                     f"build into a local folder or a mounted bucket and copy it (docs/cluster.md)")


def build_dataset(cfg, out_dir, *, resume: bool = False, address: str | None = None,
                  progress: bool = True, on_shard=None, on_planned=None) -> dict:
    """Build (or resume) a dataset with Ray; returns the final manifest.

    Args:
        cfg: a resolved ``synthseq.pipelines.config.Config``.
        out_dir: output directory on the driver's machine (created; must be empty unless ``resume``).
        resume: keep shards already present with a matching checksum, rebuild the rest.
        address: an existing Ray cluster ("auto", "host:port" as ``ray start`` prints it,
            "ray://host:10001"); None starts a local one with ``cfg.build.workers`` CPUs (all when 0).
            An already initialised Ray is used as it is.
        progress: show a tqdm progress bar.
        on_shard: optional callback receiving each finished task's summary (timing, pid, node, peak RSS).
        on_planned: optional callback called once the driver has read every input (meshes, config) and
            before the first task starts (tests use it to prove tasks never read the driver's files).

    Raises:
        FileExistsError / NotADirectoryError: bad output path. ConfigError: bad config or resume mismatch.
        BuildError: a sequence failed (names its id and seed), another build holds the directory, or the
            cluster failed. ClusterError: the cluster cannot be reached.
    """
    import json

    from synthseq import __version__
    from synthseq.datasets.shards import (FORMAT, FORMAT_VERSION, MANIFEST, shard_name, verify_shard_file,
                                          write_json_atomic)
    from synthseq.pipelines.cluster import read_input_files
    from synthseq.pipelines.config import config_to_dict, dump_config

    out = check_output_uri(out_dir)
    check_output_dir(out, resume)

    # Every input is read here, once: the mesh files (hashed; their bytes go to the tasks, which draw the
    # specs). Their content is checked while Ray starts (check_meshes).
    b = cfg.build
    mark("driver: build_dataset")
    meshes, mesh_bytes = read_input_files(mesh_paths(cfg.generate))
    mark("driver: meshes read")
    old_manifest = check_resumable(out, cfg, meshes) if resume else None
    plan = plan_shards(b.num_sequences, b.sequences_per_shard)
    mesh_files = tuple((m.path, m.sha256, m.name) for m in meshes)
    jobs = [ShardJob(j, idx, cfg.generate, b.seed, mesh_files, device=b.device) for j, idx in enumerate(plan)]

    created = [p for p in [out, *out.parents] if not p.exists()]
    was_empty = out.is_dir() and not any(out.iterdir())
    out.mkdir(parents=True, exist_ok=True)
    with _remove_if_nothing_built(out, created, was_empty), build_lock(out):
        for stale in out.glob("*.tmp"):
            stale.unlink()
        done: dict[str, dict] = {}
        if old_manifest is not None:
            for entry in old_manifest["shards"]:
                if verify_shard_file(out, entry) is None:
                    done[entry["file"]] = entry
                else:
                    log.info("resume: %s will be rebuilt (missing or checksum mismatch)", entry["file"])
        (out / "config.yaml.tmp").write_text(dump_config(cfg))
        os.replace(out / "config.yaml.tmp", out / "config.yaml")

        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "synthseq_version": __version__,
            "complete": False,
            "num_sequences": b.num_sequences,
            "sequences_per_shard": b.sequences_per_shard,
            "seed": b.seed,
            "shard_config": shard_config(cfg, meshes),
            "config": config_to_dict(cfg),
            "shards": [],
        }

        def save_manifest(complete: bool) -> None:
            manifest["shards"] = sorted(done.values(), key=lambda e: e["file"])
            manifest["complete"] = complete
            write_json_atomic(out / MANIFEST, manifest)

        save_manifest(False)
        todo = [job for job in jobs if shard_name(job.index) not in done]
        plan_line = ("%d shards planned, %d already built, %d to build", len(jobs), len(jobs) - len(todo), len(todo))
        if on_planned is not None:
            on_planned()
        if todo:
            config_json = json.loads(json.dumps(manifest["shard_config"]))
            _run_ray(todo, out, cfg, address, progress, done, save_manifest, on_shard, mesh_bytes, config_json,
                     plan_line, meshes)
        else:
            log.info(*plan_line)
        save_manifest(True)
    mark("driver: manifest complete")
    return manifest


@contextmanager
def _remove_if_nothing_built(out: Path, created: list[Path], was_empty: bool = False):
    """A build that fails before its first shard leaves no folder behind (config.yaml and an empty manifest
    would only make the same command refuse the folder as 'not empty'), and leaves a folder that was empty
    before empty again; one with shards stays resumable."""
    try:
        yield
    except BaseException:
        if was_empty and not created and not any(out.glob("shard-*.h5")):
            from synthseq.datasets.shards import MANIFEST

            for name in ("config.yaml", MANIFEST):
                (out / name).unlink(missing_ok=True)
        if created and not any(out.glob("shard-*.h5")):
            import shutil

            shutil.rmtree(out, ignore_errors=True)
            for p in created[1:]:
                try:
                    p.rmdir()
                except OSError:
                    break
        raise


def _run_ray(todo, out: Path, cfg, address, progress, done, save_manifest, on_shard, mesh_bytes,
             config_json, plan_line=None, meshes=()) -> None:
    import sys
    import threading

    # Renderers need a headless GL platform; local workers inherit the driver's environment, remote ones
    # get it through the runtime env.
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    pending = list(todo)
    lock = threading.Lock()
    helper = None
    ray_up = sys.modules.get("ray") is not None and sys.modules["ray"].is_initialized()
    device = cfg.build.device
    # cuda / auto: the shards go to GPU builders (_GpuPool) when the cluster has GPUs; the helper, a process
    # without a GPU from Ray, cannot build them (and whether there are GPUs is known only once Ray is up)
    wants_gpu = device in ("cuda", "auto")
    if ((not address or address == "local") and not ray_up and not wants_gpu
            and os.environ.get(HELPER_ENV, "1") != "0"):
        # A local cluster starts here: a forked helper builds shards while it starts (forked before Ray is
        # imported: the child carries no Ray state).
        # With 2 or more workers it is one of them (the local cluster gets one CPU less: one process fewer to
        # start); with one, it builds only until Ray is up.
        try:
            helper = _Helper.start(pending, lock, meshes, mesh_bytes, config_json,
                                   keep_going=(cfg.build.workers or os.cpu_count() or 1) >= 2)
        except OSError as e:  # no fork here (process limits): every shard is a Ray task
            log.info("no build helper (%s)", e)
    try:
        import ray
    except ImportError as e:
        if helper is not None:
            helper.stop()
        raise ImportError("synthseq build needs Ray: pip install 'synthseq[ray]' (ray==2.60.0)") from e

    from synthseq.pipelines.cluster import connect

    # The mesh check runs while Ray starts (seconds in which this process only waits): in the helper when
    # there is one (it loads the meshes anyway), else in a thread here.
    mesh_error = []

    def check():
        try:
            check_meshes(meshes, mesh_bytes)
        except BaseException as e:  # noqa: BLE001 - re-raised below, in the calling thread
            mesh_error.append(e)

    checker = None
    if helper is None:
        checker = threading.Thread(target=check, name="synthseq-check-meshes", daemon=True)
        checker.start()
    started_here = False
    task = None
    shutdown = None  # the thread shutting Ray down early (release below)
    steal_dir = ""
    workers = cfg.build.workers or os.cpu_count() or 1
    ray_cpus = workers - 1 if helper is not None and helper.keep_going else workers
    try:
        try:
            started_here = connect(address, num_cpus=ray_cpus,
                                   runtime_env={"env_vars": {"PYOPENGL_PLATFORM": "egl"}}, lean=True)
        finally:
            if checker is not None:
                checker.join()
        mark("driver: ray connected")
        if helper is not None:
            checked = helper.wait_checked()
            if checked is None:  # the helper died before checking: check here
                check()
            elif checked is not True:
                mesh_error.append(checked)
            with lock:
                helper.ray_ready = True
        if mesh_error:
            raise mesh_error[0]
        resources = ray.cluster_resources()
        cluster_cpus = int(resources.get("CPU", 1))
        cluster_gpus = int(resources.get("GPU", 0))
        if device == "cuda" and cluster_gpus < 1:
            raise BuildError(f"build.device=cuda: the Ray cluster has no GPU ({cluster_cpus} CPUs); start each GPU "
                             f"node with its GPUs (`ray start` finds them; --num-gpus N), or build on the CPUs "
                             f"with --set build.device=auto")
        if plan_line:  # after connecting, so that a connection error is the only line a failed build prints
            log.info(*plan_line)
        gpu_slots = cluster_gpus * cfg.build.tasks_per_gpu if wants_gpu else 0
        window = max(1, min(ray_cpus if helper is not None else (cfg.build.workers or gpu_slots or cluster_cpus),
                            gpu_slots or len(todo), len(todo)))
        # Each task reserves an equal share of the CPUs and renders with that many threads, so one worker
        # on a 2-core machine uses both cores and two workers do not compete for them. On a joined cluster
        # the CPUs are spread over nodes: one CPU per task.
        threads = max(1, cluster_cpus // window) if not address else 1
        if gpu_slots:
            # one builder per GPU (per share: build.tasks_per_gpu), for the whole build; on every node with GPUs
            log.info("build.device=%s: %d GPU shard builders on %d GPUs", device, window, cluster_gpus)
            # each reserves its share of the CPUs: a fraction (Ray's 0.0001 steps) where builders outnumber CPUs
            cpus = threads if threads * window <= cluster_cpus else int(cluster_cpus / window * 10_000) / 10_000
            task = _GpuPool(window, cpus, 1.0 / cfg.build.tasks_per_gpu, cfg.build.max_retries)
        else:
            task = shard_task(cfg.build.max_retries, threads)
        mesh_refs = {digest: ray.put(data) for digest, data in mesh_bytes.items()}
        # On the local cluster started here, tasks reserving `threads` of its CPUs run at most `window` at a
        # time, so a second task per worker can wait queued in Ray: a worker that finishes a shard starts
        # the next at once instead of after the driver has received and written the finished one.
        # With a helper that keeps building, shards stay in the shared queue until an executor is free (the
        # driver submits a worker's next task before it writes the finished shard).
        ahead = window if (started_here and (not address or address == "local")) or gpu_slots else 0
        if helper is not None and helper.keep_going:
            ahead = 0
            # the last shards: the idle helper builds the last sequences of a shard a Ray task is building
            helper.steal_dir = steal_dir = tempfile.mkdtemp(prefix="synthseq-steal-")

        def release() -> None:  # Ray has nothing left to build: shut it down while the helper finishes
            nonlocal shutdown
            shutdown = threading.Thread(target=_shutdown_ray, name="synthseq-ray-shutdown")
            shutdown.start()

        _drive(task, pending, out, config_json, window, threads, progress, done, save_manifest, on_shard,
               mesh_refs, queue_ahead=ahead, helper=helper, lock=lock, total=todo,
               release=release if helper is not None and started_here else None)
    finally:
        if isinstance(task, _GpuPool):
            task.close()
        if helper is not None:
            helper.stop()
        if shutdown is not None:
            shutdown.join()
        elif started_here:
            _shutdown_ray()
        if steal_dir:
            import shutil

            shutil.rmtree(steal_dir, ignore_errors=True)


def _shutdown_ray() -> None:
    import ray

    ray.shutdown()
    mark("driver: ray shut down")


# Shared libraries whose threads or locks do not survive a fork into a child that uses them again: GL drivers
# (loaded when a process creates its first GL context), OpenMP and TBB runtimes (torch, Open3D).
_FORK_UNSAFE = ("_dri.so", "libEGL_mesa", "libEGL_nvidia", "libGLX_nvidia", "libnvidia-", "libgomp", "libiomp",
                "libomp", "libtbb", "libOpen3D")


def _fork_unsafe_libraries() -> list[str]:
    """The fork-unsafe libraries (``_FORK_UNSAFE``) this process has loaded; ["/proc/self/maps unreadable"]
    where that cannot be known (not Linux)."""
    try:
        with open("/proc/self/maps") as f:
            names = {line.rsplit("/", 1)[-1].strip() for line in f if ".so" in line}
    except OSError:
        return ["/proc/self/maps unreadable"]
    return sorted({n for n in names for pat in _FORK_UNSAFE if pat in n})


HELPER_ENV = "SYNTHSEQ_BUILD_HELPER"  # "0": no local helper (every shard is a Ray task)
RAY_WORKER_NICENESS = 15  # Ray 2.60's default worker_niceness (its workers run at nice 15)


class _Helper:
    """A process forked from the driver of a local build, before Ray starts, that builds shards with the same
    :func:`build_shard` (so the same bytes) from the same queue as the Ray tasks.

    Starting the local cluster takes seconds in which the driver only waits (2-4 s on 2 cores, of which the
    Ray processes use part of the CPU): the helper checks every mesh (:func:`check_meshes`, which the driver
    would otherwise do meanwhile), then builds shards, at the niceness of Ray's workers (so during start-up
    it takes only the CPU Ray's own processes leave). With ``keep_going`` (two or more workers) it is one of
    the build's workers and the local cluster gets one CPU less: one process fewer to start (Ray's worker
    start-up and the generator's imports cost ~1.5 CPU-s per process), and when no shard is left it builds
    the last sequences of a shard a Ray task is building (:func:`steal_sequences`: shards are 4 sequences,
    so without it one core idles for up to a shard at the end). Otherwise it finishes the shard it has once
    Ray is up. A shard it was building when it died goes back to the queue, for Ray. Its result (the
    shard's bytes and summary) reaches the driver through a pipe and is written like a Ray task's."""

    def __init__(self, pending, lock, keep_going: bool):
        import queue

        self.pending, self.lock, self.keep_going = pending, lock, keep_going
        self.ray_ready = False
        self.steal_dir = ""  # set by the driver: Ray tasks' shards then share their sequences with the helper
        self.stealable, self.stolen = {}, set()  # shards Ray builds now (index -> job), those stolen from
        self.results = queue.Queue()  # ("shard", job, (ok, summary | error)), ("died", job, None), ("idle", ...)
        self.current = None
        self._stopping = False
        self._checked = None  # True, an exception from check_meshes, or None (the helper died first)
        self.process = self.conn = self.thread = None
        import threading

        self._checked_event = threading.Event()

    @classmethod
    def start(cls, pending, lock, meshes, mesh_bytes, config_json, keep_going: bool):
        """Fork the helper and start the thread that feeds it; None when the platform cannot fork."""
        import multiprocessing
        import threading

        try:
            ctx = multiprocessing.get_context("fork")
        except ValueError:  # pragma: no cover - no fork on this platform
            return None
        unsafe = _fork_unsafe_libraries()
        if unsafe:
            # a fork copies only the calling thread: the worker threads and locks of a GL driver that rendered in
            # this process, or of an OpenMP/TBB runtime, are not there in the child, which then hangs on them
            # (seen: a helper forked by a process that had rendered before waited forever in glReadPixels)
            log.info("no build helper: this process has loaded %s (a forked helper could hang)", ", ".join(unsafe))
            return None
        helper = cls(pending, lock, keep_going)
        helper.mesh_bytes = mesh_bytes
        helper.conn, child = ctx.Pipe()
        helper.process = ctx.Process(target=_helper_main, args=(child, meshes, mesh_bytes, config_json, os.getpid()),
                                     name="synthseq-build-helper", daemon=True)
        helper.process.start()
        child.close()
        helper.thread = threading.Thread(target=helper._feed, name="synthseq-build-helper", daemon=True)
        helper.thread.start()
        return helper

    def _steal_target(self):
        """A shard a Ray task is building whose last sequences the idle helper may build (once per shard)."""
        with self.lock:
            if self._stopping or not self.keep_going or self.pending:
                return None
            for index, job in sorted(self.stealable.items()):
                if index not in self.stolen and len(job.sequence_indices) > 1:
                    self.stolen.add(index)
                    return job
            return None

    def _take(self):
        with self.lock:
            if self._stopping or not self.pending or (self.ray_ready and not self.keep_going):
                return None
            self.current = self.pending.pop(0)
            return self.current

    def _feed(self) -> None:
        job = None
        try:
            kind, error = self.conn.recv()
            self._checked = True if error is None else error
            self._checked_event.set()
            if error is not None:
                return
            while True:
                job = self._take()
                if job is not None:
                    self.conn.send(("build", job))
                    result = self.conn.recv()
                    with self.lock:
                        self.current = None
                    self.results.put(("shard", job, result))
                    continue
                target = self._steal_target()
                if target is None:
                    break
                self.conn.send(("steal", target))
                self.conn.recv()
        except (EOFError, OSError):  # the helper process died (killed, out of memory): Ray takes its shard
            with self.lock:
                if self.current is not None:
                    self.pending.insert(0, self.current)
                    if not self._stopping:  # not the driver stopping it (a failed or interrupted build)
                        log.info("build helper stopped; shard %d goes to a Ray task", self.current.index)
                    self.current = None
            self.results.put(("died", job, None))
        finally:
            self._checked_event.set()
            try:
                self.conn.send(None)  # no more shards: the helper exits
            except (OSError, ValueError):
                pass
            self.results.put(("idle", None, None))

    def wait_checked(self):
        """True when the helper checked every mesh, the exception it raised, or None if it died first."""
        self._checked_event.wait()
        return self._checked

    def stop(self) -> None:
        """Stop taking shards; end the process (at once when a shard is still in progress: the build failed)."""
        with self.lock:
            self._stopping = True
        if self.process is not None and self.process.is_alive():
            self.process.join(timeout=0 if self.current is not None else 2.0)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()
        if self.conn is not None:
            self.conn.close()


def _helper_main(conn, meshes, mesh_bytes, config_json, parent_pid: int) -> None:
    """The helper process: check the meshes, then build each shard the driver sends until it sends None."""
    import pickle
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the driver stops the helper
    try:  # die with the driver (a SIGKILLed driver must not leave a process holding build.lock)
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: the closed pipe ends the helper after its shard
        pass
    if os.getppid() != parent_pid:
        return
    try:  # the niceness of Ray's workers (raylet's worker_niceness, 15 by default): while Ray starts, the helper
        # takes only the CPU that Ray's own processes leave idle, and after it shares the cores as a worker
        os.nice(max(0, int(os.environ.get("RAY_worker_niceness", RAY_WORKER_NICENESS)) - os.nice(0)))
    except (OSError, ValueError):
        pass

    def portable(e: BaseException):
        try:
            pickle.dumps(e)
            return e
        except Exception:  # noqa: BLE001 - an exception that does not pickle travels as its text
            return BuildError(f"{type(e).__name__}: {e}")

    mark("helper: start")
    try:
        try:
            check_meshes(meshes, mesh_bytes)
        except Exception as e:  # noqa: BLE001 - reported to the driver, which raises it
            conn.send(("checked", portable(e)))
            return
        conn.send(("checked", None))
        while (message := conn.recv()) is not None:
            kind, job = message
            data = [mesh_bytes[digest] for _, digest, _ in job.meshes]
            if kind == "steal":
                try:
                    conn.send(steal_sequences(job, 1, *data))
                except Exception:  # noqa: BLE001 - the owner builds what is missing
                    conn.send(0)
                continue
            try:
                summary = build_shard(job, config_json, 1, *data)
            except Exception as e:  # noqa: BLE001 - the driver raises it, as for a Ray task
                conn.send((False, portable(e)))
                continue
            conn.send((True, summary))
    except (EOFError, OSError, KeyboardInterrupt):
        return


def shard_task(max_retries: int, threads: int):
    """``build_shard`` as a Ray remote function reserving ``threads`` CPUs.

    Ray reruns it when its worker or node dies (up to ``max_retries`` times); an exception raised by the
    task itself is a deterministic failure (a bad mesh, a bug) and is not retried.
    """
    import ray

    return ray.remote(num_cpus=threads, max_retries=max_retries, retry_exceptions=False)(build_shard)


class ShardBuilder:
    """A shard builder holding one GPU (or a share of one) for the whole build, as a Ray actor.

    A Ray *task* that reserves a GPU runs in a fresh worker process each time (Ray's default ``max_calls=1``
    for GPU tasks), so every shard would pay the process start, the imports, the CUDA context and the EGL
    context and its shaders again (seconds; a default shard of the GPU path is well under a second of work).
    Reusing a worker for GPU tasks is no fix: a reused process keeps the CUDA context of the GPU it had first
    while Ray may assign its next task another one. An actor keeps its GPU, its CUDA context and its shared
    renderer for its life; the driver sends it shards (:class:`_GpuPool`)."""

    def build(self, job: ShardJob, config_json: dict, threads: int = 1, *mesh_data: bytes) -> dict:
        return build_shard(job, config_json, threads, *mesh_data)


class _GpuPool:
    """``count`` :class:`ShardBuilder` actors, each reserving ``cpus`` CPUs (a fraction where the cluster has
    fewer CPUs than builders) and ``gpus`` of a GPU, with the ``remote(...)`` of a shard task: each shard goes
    to the placed builder with the fewest shards in flight. The first shard waits until every builder is placed
    (their processes start in parallel: a second or two), at most ``PLACE_WAIT_S``; a builder Ray cannot place
    by then (its node lacks a CPU, another job holds its GPU) gets shards only once it is placed, so it cannot
    hold shards back.

    Ray restarts a builder whose process or node died (``max_retries`` times) and reruns its calls, as it
    reruns a task; a shard that raises is not retried."""

    def __init__(self, count: int, cpus: float, gpus: float, max_retries: int):
        import ray

        cls = ray.remote(num_cpus=cpus, num_gpus=gpus, max_restarts=max_retries,
                         max_task_retries=max_retries)(ShardBuilder)
        self.actors = [cls.remote() for _ in range(count)]
        self.load = [0] * count
        self.owner = {}
        self.placing = {actor.__ray_ready__.remote(): i for i, actor in enumerate(self.actors)}
        self.placed: list[int] = []

    PLACE_WAIT_S = 60.0

    def _update_placed(self, block: bool) -> None:
        import ray

        give_up = time.monotonic() + (self.PLACE_WAIT_S if block else 0.0)
        while self.placing:
            wait = max(0.0, give_up - time.monotonic())
            ready, _ = ray.wait(list(self.placing), num_returns=1, timeout=None if not self.placed else wait)
            if not ready:
                return
            i = self.placing.pop(ready[0])
            try:
                ray.get(ready[0])
            except ray.exceptions.RayError as e:  # it could not start at all
                raise BuildError(f"a GPU shard builder could not start: {_ray_error_line(e)}") from None
            self.placed.append(i)

    def remote(self, *args):
        self._update_placed(block=not self.owner and not self.placed)  # blocks only for the first shard
        i = min(self.placed, key=self.load.__getitem__)
        ref = self.actors[i].build.remote(*args)
        self.load[i] += 1
        self.owner[ref] = i
        return ref

    def done(self, ref) -> None:
        i = self.owner.pop(ref, None)
        if i is not None:
            self.load[i] -= 1

    def close(self) -> None:
        import ray

        for actor in self.actors:
            try:
                ray.kill(actor)  # frees its GPU at once (the build may run on a cluster that other jobs share)
            except Exception:  # noqa: BLE001 - already dead, or Ray is going down
                pass
        self.actors = []


def _ray_error_line(e) -> str:
    """One line for a Ray failure of a shard task: the task's own error, or the kind of system failure."""
    import ray

    if isinstance(e, ray.exceptions.RayTaskError):
        cause = getattr(e, "cause", None)
        if isinstance(cause, BuildError):
            return str(cause)
        if cause is not None:
            return f"{type(cause).__name__}: {cause}".strip().splitlines()[0]
    if isinstance(e, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                      ray.exceptions.RayActorError)):
        return "its worker or node died on every attempt (build.max_retries)"
    if isinstance(e, ray.exceptions.OwnerDiedError):
        return ("a worker could not reach this driver (if the cluster runs without token authentication, "
                "set RAY_AUTH_MODE=disabled here too)")
    if isinstance(e, ray.exceptions.OutOfMemoryError):
        return "a node ran out of memory (fewer --workers, or smaller shards: --sequences-per-shard)"
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def _shard_failed(job: ShardJob, why) -> BuildError:
    """The one line a build stops with when a shard failed, however it was built (Ray task, helper, driver)."""
    return BuildError(f"shard {job.index}: {why} (rerun with --resume to keep the finished shards)")


def _drive(task, todo, out: Path, config_json, window, threads, progress, done, save_manifest, on_shard,
           mesh_refs, queue_ahead: int = 0, helper=None, lock=None, total=None, release=None) -> None:
    """Submit at most ``window + queue_ahead`` shard tasks at a time, collect them with ``ray.wait``, write
    their shards (``queue_ahead`` > 0 only where Ray itself runs at most ``window`` at once).

    With a ``helper`` (:class:`_Helper`), ``todo`` is the queue it shares (under ``lock``): shards it builds
    arrive through ``helper.results`` and are written the same way; ``total`` lists every shard of the run.
    ``release()``, when given, is called once no shard is left for Ray while the helper still builds (the
    caller shuts Ray down meanwhile); a shard the helper gives back after that is built in this process."""
    import queue
    import threading

    import ray
    from synthseq.progress import progress as tqdm  # a bar on a terminal, plain lines in a log

    lock = lock or threading.Lock()
    total_sequences = sum(len(j.sequence_indices) for j in (total if total is not None else todo))
    bar = tqdm(total=total_sequences, unit="seq", desc="build", disable=not progress, dynamic_ncols=True)
    t0 = time.perf_counter()
    view_frames = 0
    pending = todo
    in_flight = {}
    helper_active = helper is not None
    fallback_told: list = []  # auto's numpy fallback on a GPU is told once

    def finish(job, summary) -> None:
        nonlocal view_frames
        data = summary.pop("data")
        if hashlib.sha256(data).hexdigest() != summary["sha256"]:
            raise BuildError(f"shard {job.index}: bytes received differ from the task's sha256")
        mark("driver: shard received", shard=job.index)
        write_bytes_atomic(out / summary["file"], data)
        entry = {k: summary[k] for k in ("file", "sequence_ids", "bytes", "sha256", "sequences")}
        if "device" in summary:  # build.device set: what built the shard, on which node's GPU
            entry.update(device=summary["device"], gpu=summary["gpu"], node=summary["node"])
            if summary["device"] == "numpy" and summary["gpu"] is not None and not fallback_told:
                fallback_told.append(True)
                log.warning("build.device=auto: %s was built with numpy on GPU %s of node %s: torch there sees no "
                            "CUDA device", summary["file"], summary["gpu"], summary["node"])
        done[entry["file"]] = entry
        save_manifest(False)
        mark("driver: shard written", shard=job.index)
        if on_shard is not None:
            on_shard(summary)
        view_frames += summary["view_frames"]
        elapsed = time.perf_counter() - t0
        bar.update(summary["num_sequences"])
        bar.set_postfix_str(f"shards {len(done)}, {bar.n / elapsed:.2f} seq/s, "
                            f"{view_frames / elapsed:.0f} view-frames/s")

    def helper_result(item, received: list) -> bool:
        """One message of the helper: a shard goes to ``received``; False once the helper has stopped."""
        kind, job, result = item
        if kind == "shard":
            ok, payload = result
            if not ok:
                line = str(payload) if isinstance(payload, BuildError) else f"{type(payload).__name__}: {payload}"
                raise _shard_failed(job, line)
            received.append((job, payload))
        return kind != "idle"

    received: list = []  # (job, summary) of finished shards, written after the next tasks are submitted
    released = False
    try:
        while True:
            with lock:
                while pending and not released and len(in_flight) < window + queue_ahead:
                    job = pending.pop(0)
                    if helper is not None and helper.steal_dir:
                        job = replace(job, steal_dir=helper.steal_dir)
                        helper.stealable[job.index] = job
                    refs = [mesh_refs[digest] for _, digest, _ in job.meshes]
                    in_flight[task.remote(job, config_json, threads, *refs)] = job
                    mark("driver: task submitted", shard=job.index)
                if release is not None and not released and helper_active and not pending and not in_flight:
                    released = True
                    release()
                job = pending.pop(0) if released and pending else None
            if job is not None:  # the helper died after Ray was shut down: build its shard here
                try:
                    summary = build_shard(job, config_json, threads,
                                          *[helper.mesh_bytes[digest] for _, digest, _ in job.meshes])
                except BuildError as e:
                    raise _shard_failed(job, e) from None
                received.append((job, summary))
            # a worker that finished has its next task before the driver receives and writes the shard
            for job, summary in received:
                finish(job, summary)
            received.clear()
            if not in_flight and not helper_active and not pending:
                break
            if in_flight:
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.05 if helper_active else None)
            else:  # only the helper is building (its shards, or one it may give back)
                ready = []
                helper_active = helper_result(helper.results.get(), received)
            for ref in ready:
                job = in_flight.pop(ref)
                if isinstance(task, _GpuPool):
                    task.done(ref)
                if helper is not None:
                    with lock:
                        helper.stealable.pop(job.index, None)
                try:
                    received.append((job, ray.get(ref)))
                except ray.exceptions.RayError as e:
                    raise _shard_failed(job, _ray_error_line(e)) from None
            while helper_active:
                try:
                    item = helper.results.get_nowait()
                except queue.Empty:
                    break
                helper_active = helper_result(item, received)
    finally:
        bar.close()
        if not isinstance(task, _GpuPool):  # a GPU builder's calls end with the builder (_GpuPool.close)
            for ref in in_flight:
                ray.cancel(ref, force=True)


# ----------------------------------------------------------------------------------------- CLI

def recorded_build_settings(out, overrides: list[str]) -> list:
    """On ``--resume``: the build settings recorded in OUT/manifest.json (num_sequences, sequences_per_shard,
    seed) as overrides, for those the command line does not set, so `build CONFIG --out OUT --resume`
    continues the build as it was started (e.g. with --num-sequences 64). A setting given again is
    compared as usual and a real difference refused."""
    import json

    from synthseq.config import Override
    from synthseq.datasets.shards import MANIFEST

    path = Path(out) / MANIFEST
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError):
        return []  # no (readable) manifest: check_resumable reports it
    given = {str(o).split("=", 1)[0].strip() for o in overrides}
    settings = [Override(f"build.{k}", recorded[k], f"{path} (recorded build.{k}={recorded[k]})")
                for k in ("num_sequences", "sequences_per_shard", "seed")
                if f"build.{k}" not in given and isinstance(recorded.get(k), int)]
    device = (recorded.get("shard_config") or {}).get("device") if isinstance(recorded, dict) else None
    if isinstance(device, str) and "build.device" not in given:  # a build with build.device set
        settings.append(Override("build.device", device, f"{path} (recorded build.device={device})"))
    return settings


def configure_parser(p) -> None:
    p.add_argument("config", help="config YAML (or a bundled name: tiny, default)")
    p.add_argument("--out", required=True, help="output dataset directory")
    p.add_argument("--num-sequences", type=int, help="override build.num_sequences")
    p.add_argument("--sequences-per-shard", type=int, help="override build.sequences_per_shard")
    p.add_argument("--workers", type=int, help="override build.workers (parallel shard tasks; 0 = all CPUs)")
    p.add_argument("--seed", type=int, help="override build.seed (the root seed)")
    p.add_argument("--resume", action="store_true",
                   help="continue a build in --out: keep shards whose checksum matches, rebuild the rest")
    p.add_argument("--address", metavar="ADDR",
                   help="run on an existing Ray cluster: HOST:PORT as `ray start --head` prints it, auto (the "
                        "cluster started on this machine) or ray://HOST:10001; default: RAY_ADDRESS if set, "
                        "else a local cluster (docs/cluster.md)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override any config value, e.g. --set generate.num_frames=10 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    mark("driver: cli run")
    from synthseq.config import Override
    from synthseq.pipelines.config import load_config

    overrides = list(args.overrides)
    for flag, key in (("num_sequences", "build.num_sequences"), ("sequences_per_shard", "build.sequences_per_shard"),
                      ("workers", "build.workers"), ("seed", "build.seed")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(Override(key, value, f"--{flag.replace('_', '-')} {value}"))
    overrides = recorded_build_settings(args.out, overrides) + overrides if args.resume else overrides
    cfg = load_config(args.config, overrides)
    mark("driver: config loaded")
    t0 = time.perf_counter()
    # Under `ray job submit` the job's driver finds its cluster in RAY_ADDRESS.
    address = args.address or os.environ.get("RAY_ADDRESS") or None
    manifest = build_dataset(cfg, args.out, resume=args.resume, address=address,
                             progress=not args.no_progress)
    n = sum(len(e["sequence_ids"]) for e in manifest["shards"])
    size = sum(e["bytes"] for e in manifest["shards"])
    print(f"built {n} sequences in {len(manifest['shards'])} shards ({size / 1e6:.1f} MB) in "
          f"{time.perf_counter() - t0:.1f} s -> {args.out}")
    return 0
