"""Connecting to Ray (a new local cluster, or an existing one by address) and moving input files to tasks.

Used by ``synthseq build`` and ``synthseq train --num-workers``. What it owns:

- ``connect``: ``ray.init`` for a local cluster (``address=None``) or an existing one. A Ray 2.60 cluster
  started by ``ray start`` (with a token in ``~/.ray/auth_token``) requires token authentication, and a
  client that connects by explicit address only sends its token when ``RAY_AUTH_MODE=token`` is set.
  ``connect`` asks the cluster (one RPC) whether it wants a token, checks the one available where Ray looks
  (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``) and sets the mode, so the address
  ``ray start`` prints just works. Every failure is one line (:class:`ClusterError`) within seconds: an
  unreachable address, a missing or refused token (naming what to set).
- ``InputFile`` / ``read_input_files`` / ``materialize``: files the driver reads once and ships to tasks
  through the object store, keyed by content hash; a task writes them into a node-local cache (under their
  own file names) and never opens a path of the driver's machine (a multi-node cluster has no shared filesystem).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from synthseq.errors import SynthseqError

log = logging.getLogger(__name__)

# Where Ray 2.60 looks for the cluster token (ray/_private/authentication/authentication_token_setup.py).
AUTH_MODE_ENV = "RAY_AUTH_MODE"
TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
REACH_TIMEOUT_S = 5.0
DEFAULT_CLIENT_PORT = 10001  # ray:// addresses


class ClusterError(SynthseqError):
    """The Ray cluster cannot be reached or used (address, authentication, resources)."""


# ----------------------------------------------------------------------------------------- addresses

def is_explicit(address: str | None) -> bool:
    """True for a ``host:port`` or ``ray://host:port`` address; False for None, ``auto`` and ``local``."""
    return bool(address) and address not in ("auto", "local")


def parse_address(address: str) -> tuple[str, int]:
    """(host, port) of ``host:port`` or ``ray://host[:port]``.

    Raises:
        ClusterError: not of that form.
    """
    rest = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = rest.rpartition(":")
    if not sep and address.startswith("ray://"):
        host, port = rest, str(DEFAULT_CLIENT_PORT)
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise ClusterError(f"--address {address!r}: expected HOST:PORT (as `ray start --head` prints it), "
                           f"ray://HOST:PORT, or auto")
    return host, int(port)


def check_reachable(address: str, timeout_s: float = REACH_TIMEOUT_S) -> None:
    """Fail fast, in one line, when nothing listens at an explicit address (ray.init would retry for long).

    Raises:
        ClusterError: the host does not resolve or the TCP connection is refused or times out.
    """
    host, port = parse_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or type(e).__name__)
        raise ClusterError(f"cannot reach a Ray cluster at {address} ({reason} after <= {timeout_s:.0f} s): "
                           f"is the head node running (`ray start --head`) and the address right?") from None


def token_source(environ) -> str | None:
    """Where a Ray auth token is available to this process (``RAY_AUTH_TOKEN`` or a token file), or None."""
    if environ.get(TOKEN_ENV):
        return TOKEN_ENV
    path = Path(environ.get(TOKEN_PATH_ENV) or Path.home() / ".ray" / "auth_token").expanduser()
    return str(path) if path.is_file() else None


def read_token(environ) -> str | None:
    """The Ray auth token available to this process (``RAY_AUTH_TOKEN``, else the token file), or None."""
    if environ.get(TOKEN_ENV):
        return environ[TOKEN_ENV].strip()
    source = token_source(environ)
    return Path(source).read_text().strip() if source else None


def probe_auth(address: str, token: str | None = None, timeout_s: float = REACH_TIMEOUT_S) -> str:
    """Ask the GCS at ``host:port`` for its cluster id, with ``token`` or without one (one cheap RPC).

    Returns:
        ``"ok"``, ``"unauthenticated"`` (the cluster requires a token, or refused this one) or
        ``"unknown"`` (another answer: not a GCS, a Ray without this RPC; ``ray.init`` decides).
    """
    import grpc

    host, port = parse_address(address)
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        call = channel.unary_unary("/ray.rpc.NodeInfoGcsService/GetClusterId")
        try:
            call(b"", timeout=timeout_s, metadata=metadata)
            return "ok"
        except grpc.RpcError as e:
            return "unauthenticated" if e.code() == grpc.StatusCode.UNAUTHENTICATED else "unknown"


def _set_auth_mode(environ, mode: str) -> None:
    environ[AUTH_MODE_ENV] = mode
    if environ is os.environ:
        try:  # refresh Ray's cached config when ray was already imported (what Ray does when it switches)
            from ray._raylet import Config

            Config.initialize("")
        except Exception:  # noqa: BLE001 - a Ray without it reads the env var at init anyway
            pass


def configure_auth(address: str | None, environ) -> str | None:
    """Make this process's Ray client authenticate the way the cluster at an explicit address expects.

    Ray's client only sends its token in token mode, and only ``ray.init()`` / ``address="auto"`` switch the
    mode on by themselves: ``ray.init(address="host:port")`` to a cluster with token authentication (what
    ``ray start`` gives when a token exists) fails after ~20 s with InvalidAuthToken, and a client in token
    mode joined to a cluster without authentication has its tasks fail (the workers cannot call back).
    So: one RPC without a token; if refused, one with the available token; then set ``RAY_AUTH_MODE``.
    An explicitly set ``RAY_AUTH_MODE=disabled`` is respected.

    Returns:
        Where the token came from, or None (no token needed, or ``ray://`` / ``auto`` addresses).

    Raises:
        ClusterError: the cluster requires a token and none is available, or it refused the token.
    """
    if not is_explicit(address) or address.startswith("ray://"):
        return None
    answer = probe_auth(address)
    if answer == "ok":
        if environ.get(AUTH_MODE_ENV, "").lower() == "token":
            log.info("the Ray cluster at %s has no token authentication: using RAY_AUTH_MODE=disabled", address)
            _set_auth_mode(environ, "disabled")
        return None
    if answer != "unauthenticated":
        return None
    source = TOKEN_ENV if environ.get(TOKEN_ENV) else token_source(environ)
    if source is None:
        raise ClusterError(
            f"the Ray cluster at {address} requires its auth token and none was found here: copy "
            f"~/.ray/auth_token from the head node to this machine's ~/.ray/auth_token, or set "
            f"{TOKEN_ENV}=<token> (`ray get-auth-token` on the head node prints it)")
    if probe_auth(address, read_token(environ)) == "unauthenticated":
        raise ClusterError(
            f"the Ray cluster at {address} refused the auth token from {source}: set {TOKEN_ENV}=<token> to "
            f"the head node's token (`ray get-auth-token` on the head node prints it)")
    if environ.get(AUTH_MODE_ENV, "").lower() != "disabled":
        _set_auth_mode(environ, "token")
    return source


@contextmanager
def _stderr_captured():
    """Capture file descriptor 2 (Ray's C++ client logs its retries there) into a temporary file.

    Yields a function returning the captured text; the text is written back to stderr on exit unless the
    caller has taken it (``take()``), so nothing is lost on success.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    buf = tempfile.TemporaryFile(mode="w+b")
    os.dup2(buf.fileno(), 2)
    taken = []

    def take() -> str:
        sys.stderr.flush()
        buf.seek(0)
        taken.append(True)
        return buf.read().decode("utf-8", "replace")

    try:
        yield take
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        if not taken:
            buf.seek(0)
            text = buf.read().decode("utf-8", "replace")
            if text:
                sys.stderr.write(text)
        buf.close()


@contextmanager
def _lean_local_start():
    """While active, ``ray.init`` of a new local cluster skips two head processes a local build never uses:
    the dashboard server (started even with ``include_dashboard=False``, for usage statistics; Ray waits for
    it before starting the raylet) and the autoscaler monitor (which ignores SIGTERM, so ``ray.shutdown``
    waits 1 s for it before SIGKILL). Measured on the 2-core machine: ~2-3 CPU-s of Python start-up and
    1.2 s of shutdown per build. GCS, raylet, its agents, the log monitor (task output on the console) and
    the workers start as usual. Ray has no public option for this: the two ``Node`` methods are replaced
    for the duration of the call (Ray 2.60; a Ray without them starts as usual)."""
    try:
        from ray._private.node import Node
    except ImportError:  # pragma: no cover - another Ray layout
        yield
        return
    saved = {name: Node.__dict__[name] for name in ("start_api_server", "start_monitor") if name in Node.__dict__}

    def skip(self, *args, **kwargs):
        return None

    for name in saved:
        setattr(Node, name, skip)
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(Node, name, method)


def connect(address: str | None, *, num_cpus: int | None = None, runtime_env: dict | None = None,
            environ=None, lean: bool = False) -> bool:
    """Initialise Ray for this process: a new local cluster, or an existing one.

    Args:
        address: None (or ``local``) starts a local cluster with ``num_cpus`` CPUs; ``auto`` joins the
            cluster started on this machine; ``host:port`` / ``ray://host:port`` joins that cluster.
        num_cpus: CPUs of the local cluster (ignored when joining one).
        runtime_env: Ray runtime environment for tasks of this job (joined clusters only).
        environ: the environment to read and update for token authentication (default ``os.environ``).
        lean: a new local cluster starts without the dashboard server and the autoscaler monitor
            (:func:`_lean_local_start`; what ``synthseq build`` uses).

    Returns:
        True when this call initialised Ray (the caller shuts it down), False when it was already up.

    Raises:
        ClusterError: one line: unreachable address, missing or refused token, other connection failure.
    """
    import ray

    if ray.is_initialized():
        return False
    environ = os.environ if environ is None else environ
    kwargs = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
    if not address or address == "local":
        # "local": never join a cluster that `ray start` left registered in /tmp/ray on this machine.
        if lean:
            with _lean_local_start():
                ray.init(address="local", num_cpus=num_cpus, **kwargs)
        else:
            ray.init(address="local", num_cpus=num_cpus, **kwargs)
        return True
    if is_explicit(address):
        check_reachable(address)
    source = configure_auth(address, environ)
    with _stderr_captured() as take:
        try:
            ray.init(address=address, runtime_env=runtime_env, **kwargs)
            return True
        except Exception as e:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, AuthenticationError...
            text = take() + "\n" + str(e)
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    if "InvalidAuthToken" in text or "Unauthenticated" in text or "AuthenticationError" in text:
        if source is None:
            raise ClusterError(
                f"the Ray cluster at {address} requires its auth token and none was found here: copy "
                f"~/.ray/auth_token from the head node to this machine's ~/.ray/auth_token, or set "
                f"{TOKEN_ENV}=<token> (`ray get-auth-token` on the head node prints it)") from None
        raise ClusterError(
            f"the Ray cluster at {address} refused the auth token from {source}: set {TOKEN_ENV}=<token> to "
            f"the head node's token (`ray get-auth-token` on the head node prints it)") from None
    raise ClusterError(f"cannot connect to the Ray cluster at {address}: {first}") from None


def cluster_resources() -> dict:
    """Total resources of the connected cluster (``CPU``, ``GPU``...), as floats."""
    import ray

    return {k: float(v) for k, v in ray.cluster_resources().items()}


# ----------------------------------------------------------------------------------------- input files

@dataclass(frozen=True)
class InputFile:
    """A file the driver read, identified by content (what travels to tasks instead of its path).

    Args:
        path: the driver's path (a name for messages; tasks never open it).
        name: the file name without its folder (what the build config records).
        sha256: hex digest of the content.
    """

    path: str
    name: str
    sha256: str

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix


def read_input_files(paths) -> tuple[list[InputFile], dict[str, bytes]]:
    """Read files once on the driver.

    Returns:
        The files in the given order, and their contents keyed by sha256.
    """
    files, contents = [], {}
    for p in paths:
        data = Path(p).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        files.append(InputFile(path=str(p), name=Path(p).name, sha256=digest))
        contents[digest] = data
    return files, contents


def cache_dir() -> Path:
    """The node-local folder where tasks keep input files by content hash."""
    return Path(tempfile.gettempdir()) / "synthseq-input-cache"


def materialize(sha256: str, name: str, data: bytes) -> str:
    """Write ``data`` as ``<cache>/<sha256>/<name>`` on this node (once; atomic) and return that path.

    The file keeps its own name (``make_spec`` names objects, and indoor scenes find furniture meshes, by the
    file name); the folder named by the content hash keeps different files of one name apart.

    Raises:
        ValueError: ``data`` does not hash to ``sha256`` (corrupted in transit), or ``name`` is not a file name.
    """
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(f"input file {name} ({sha256[:12]}): content does not match its sha256")
    if not name or Path(name).name != name or name in (".", ".."):
        raise ValueError(f"input file {name!r}: expected a file name without folders")
    folder = cache_dir().resolve() / sha256
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if not path.is_file() or path.stat().st_size != len(data):
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    return str(path)


# ----------------------------------------------------------------------------------------- training workers

class _TrainWorker:
    """One rank of a data-parallel training run, as a Ray actor (synthseq.training.distributed does the work)."""

    def endpoint(self) -> tuple[str, int]:
        """(IP, free TCP port) of this worker's node: the torch.distributed rendezvous when it is rank 0."""
        import ray

        ip = ray.util.get_node_ip_address()
        with socket.socket() as s:
            s.bind((ip, 0))
            return ip, s.getsockname()[1]

    def run(self, cfg, run_dir: str, **kwargs) -> dict:
        from synthseq.training.distributed import train_worker

        return train_worker(cfg, run_dir, **kwargs)


def check_worker_count(num_workers: int, gpus_per_worker: float, cpus: int, gpus: int, where: str) -> None:
    """Refuse more workers than the cluster can hold (1 CPU and ``gpus_per_worker`` GPUs each).

    Raises:
        ClusterError: naming what is available.
    """
    from synthseq.errors import UsageError

    if num_workers < 1:
        raise UsageError(f"--num-workers: expected a positive int, got {num_workers}")
    if gpus_per_worker < 0:
        raise UsageError(f"--gpus-per-worker: expected a number >= 0, got {gpus_per_worker}")
    if num_workers > cpus:
        raise ClusterError(f"--num-workers {num_workers}: {where} has {cpus} CPUs and {gpus} GPUs; each worker "
                           f"takes 1 CPU, so at most {cpus} workers")
    if gpus_per_worker and num_workers * gpus_per_worker > gpus:
        raise ClusterError(f"--num-workers {num_workers} --gpus-per-worker {gpus_per_worker:g}: {where} has {gpus} "
                           f"GPUs and {cpus} CPUs; at most {int(gpus // gpus_per_worker)} workers with "
                           f"{gpus_per_worker:g} GPUs each")


def train_on_cluster(cfg, run_dir, *, num_workers: int, address: str | None = None, gpus_per_worker: float = 0,
                     resume: bool = False, device: str | None = None, environ=None) -> dict:
    """Train data-parallel on ``num_workers`` Ray actors (torch.distributed: gloo on CPU, NCCL on GPU).

    Rank 0 runs on the driver's node when that node is part of the cluster (so ``run_dir`` is written on
    this machine) and writes every output. Each worker reads ``train.data`` / ``train.real`` at the same
    path on its node.

    Returns:
        Rank 0's result ({"step", "metrics", "checkpoint", "seconds"}) with ``"workers"``.

    Raises:
        ClusterError: not enough CPUs/GPUs (naming what is available), unreachable cluster, a worker died.
        SynthseqError: a worker's own error (bad config, bad data), re-raised as it is.
    """
    import ray

    local = not address or address == "local"
    if local:
        check_worker_count(num_workers, gpus_per_worker, os.cpu_count() or 1, 0 if not gpus_per_worker else
                           _local_gpus(), "this machine (a local Ray cluster)")
    started = connect(address, num_cpus=os.cpu_count(), environ=environ)
    actors = []
    try:
        res = cluster_resources()
        check_worker_count(num_workers, gpus_per_worker, int(res.get("CPU", 0)), int(res.get("GPU", 0)),
                           "the local Ray cluster" if local else f"the Ray cluster at {address}")
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        worker = ray.remote(num_cpus=1, num_gpus=gpus_per_worker or 0, max_restarts=0)(_TrainWorker)
        here = ray.get_runtime_context().get_node_id()
        actors.append(worker.options(scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=True)).remote())
        actors.extend(worker.remote() for _ in range(num_workers - 1))
        host, port = ray.get(actors[0].endpoint.remote())
        dev = device or ("cuda" if gpus_per_worker else None)
        refs = [a.run.remote(cfg, str(Path(run_dir).resolve()), rank=r, world_size=num_workers,
                             init_method=f"tcp://{host}:{port}", resume=resume, device=dev)
                for r, a in enumerate(actors)]
        rank_of = {ref: r for r, ref in enumerate(refs)}
        results, pending = {}, list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            ref = ready[0]
            try:
                results[rank_of[ref]] = ray.get(ref)
            except ray.exceptions.RayTaskError as e:
                cause = getattr(e, "cause", None)
                if isinstance(cause, SynthseqError):
                    raise cause from None
                first = (str(cause or e).strip().splitlines() or [""])[0]
                raise ClusterError(f"training worker {rank_of[ref]}: {type(cause or e).__name__}: {first}") from None
            except ray.exceptions.RayError as e:
                raise ClusterError(f"training worker {rank_of[ref]} died ({type(e).__name__}); resume with "
                                   f"--resume and the same --num-workers") from None
        out = dict(results[0])
        out["workers"] = num_workers
        out["seconds_per_rank"] = [results[r]["seconds"] for r in range(num_workers)]
        return out
    finally:
        for a in actors:
            ray.kill(a)
        if started:
            ray.shutdown()


def _local_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0
