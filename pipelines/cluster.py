"""Connecting to Ray (a new local cluster, or an existing one by address) and moving input files to tasks.

Used by ``synthseq build`` and ``synthseq train --num-workers``. What it owns:

- ``connect``: ``ray.init`` for a local cluster (``address=None``) or an existing one. Ray 2.60 clusters
  started by ``ray start`` require token authentication, and a client that connects by explicit address
  only sends its token when ``RAY_AUTH_MODE=token`` is set; ``connect`` sets it when a token is available
  where Ray looks for one (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``), so the
  address ``ray start`` prints just works. Every failure is one line (:class:`ClusterError`): an
  unreachable address within a few seconds, a missing or refused token naming what to set.
- ``InputFile`` / ``read_input_files`` / ``materialize``: files the driver reads once and ships to tasks
  through the object store, keyed by content hash; a task writes them into a node-local cache and never
  opens a path of the driver's machine (a multi-node cluster has no shared filesystem).
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


def enable_token_auth(address: str | None, environ) -> str | None:
    """For an explicit address with ``RAY_AUTH_MODE`` unset: set it to ``token`` when a token is available.

    Ray's client only sends its token in token mode, and only ``ray.init()`` / ``address="auto"`` switch the
    mode on by themselves; ``ray.init(address="host:port")`` otherwise fails with InvalidAuthToken.

    Returns:
        Where the token comes from (for error messages), or None when none was found or the mode was set.
    """
    if not is_explicit(address):
        return None
    source = token_source(environ)
    if environ.get(AUTH_MODE_ENV) is None and source is not None:
        environ[AUTH_MODE_ENV] = "token"
        try:  # refresh Ray's cached config when ray was already imported (same call as Ray's own switch)
            from ray._raylet import Config

            Config.initialize("")
        except Exception:  # noqa: BLE001 - an older/newer Ray without it reads the env var at init anyway
            pass
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


def connect(address: str | None, *, num_cpus: int | None = None, runtime_env: dict | None = None,
            environ=None) -> bool:
    """Initialise Ray for this process: a new local cluster, or an existing one.

    Args:
        address: None (or ``local``) starts a local cluster with ``num_cpus`` CPUs; ``auto`` joins the
            cluster started on this machine; ``host:port`` / ``ray://host:port`` joins that cluster.
        num_cpus: CPUs of the local cluster (ignored when joining one).
        runtime_env: Ray runtime environment for tasks of this job (joined clusters only).
        environ: the environment to read and update for token authentication (default ``os.environ``).

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
        ray.init(address="local", num_cpus=num_cpus, **kwargs)
        return True
    if is_explicit(address):
        check_reachable(address)
    source = enable_token_auth(address, environ)
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


def materialize(sha256: str, suffix: str, data: bytes) -> str:
    """Write ``data`` as ``<cache>/<sha256><suffix>`` on this node (once; atomic) and return that path.

    Raises:
        ValueError: ``data`` does not hash to ``sha256`` (corrupted in transit).
    """
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(f"input file {sha256[:12]}{suffix}: content does not match its sha256")
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{sha256}{suffix}"
    if not path.is_file() or path.stat().st_size != len(data):
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{sha256[:12]}", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    return str(path)
