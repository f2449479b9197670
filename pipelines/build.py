"""`synthseq build`: render a dataset of HDF5 shards with Ray — one task per shard, resumable, deterministic.

How a build runs:

1. The driver resolves the config, checks the output directory and makes every sequence's ``SceneSpec``
   up front (names and numbers only; a missing mesh fails here, before anything is written).
2. It writes the resolved ``config.yaml`` and a ``manifest.json`` marked ``"complete": false``.
3. One Ray task per shard renders its sequences and writes ``shard-XXXXX.h5.tmp``, renamed to
   ``shard-XXXXX.h5`` when complete, and returns a small summary (file, sha256, bytes, counts, timing).
   At most ``workers`` tasks are in flight; results arrive through ``ray.wait``. Each finished shard is
   added to the manifest at once, so a killed build loses only the shards that were in flight.
4. ``--resume`` keeps every shard listed in the manifest whose size and sha256 match the file, and
   rebuilds the rest. Sequence i's seed depends only on (root seed, i), and shard j always holds
   sequences [j*S, (j+1)*S), so any mix of workers and resumes gives byte-identical shards.

A task that dies with its worker is retried by Ray (``build.max_retries``); a sequence that raises is
retried too, and after the last attempt the build stops with a line naming the sequence id and seed.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from synthseq.errors import ConfigError, SynthseqError

log = logging.getLogger(__name__)


class BuildError(SynthseqError):
    """A build could not complete (a sequence kept failing, the cluster went away)."""


@dataclass(frozen=True)
class ShardJob:
    """What one Ray task receives: the shard index, its sequence indices and their specs (plain data)."""

    index: int
    sequence_indices: tuple
    specs: tuple


# ----------------------------------------------------------------------------------------- planning

def plan_shards(num_sequences: int, sequences_per_shard: int) -> list[tuple[int, ...]]:
    """Sequence indices of every shard: shard j holds [j*S, min((j+1)*S, num_sequences))."""
    return [tuple(range(start, min(start + sequences_per_shard, num_sequences)))
            for start in range(0, num_sequences, sequences_per_shard)]


def shard_config(cfg) -> dict:
    """The part of the config that determines a shard's bytes (stored in every shard's attrs).

    Excludes what may differ between equivalent builds (worker count, retries, run name), so 1-worker and
    2-worker builds write identical files.
    """
    from synthseq.config import to_dict

    return {"generate": to_dict(cfg.generate), "seed": cfg.build.seed,
            "num_sequences": cfg.build.num_sequences, "sequences_per_shard": cfg.build.sequences_per_shard}


def check_output_dir(out: Path, resume: bool) -> None:
    """Refuse an output path that is a file, or a non-empty directory without ``resume``."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: output path exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not resume:
        raise FileExistsError(
            f"{out}: output directory is not empty; pass --resume to continue that build, or choose another --out")


def check_resumable(out: Path, cfg) -> dict | None:
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
    new = json.loads(json.dumps(shard_config(cfg)))
    if old != new:
        diff = _first_difference(old, new)
        raise ConfigError(f"{out}: was built with a different config ({diff}); "
                          f"--resume needs the same config and seed")
    return manifest


def _first_difference(a, b, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else k)
    return f"{path or 'config'}: {a!r} -> {b!r}"


# ----------------------------------------------------------------------------------------- the task

def build_shard(job: ShardJob, out_dir: str, config_json: dict, threads: int = 1) -> dict:
    """Render every sequence of one shard and write it atomically. Runs inside a Ray worker.

    Returns:
        A small summary: file, sequence_ids, bytes, sha256, num_sequences, view_frames, seconds.
        ``threads`` is the CPU count reserved for this task (given to the ray-casting renderer).

    Raises:
        BuildError: naming the sequence id and seed that failed.
    """
    from synthseq.datasets.shards import ShardWriter, sequence_key, sha256_file, shard_name
    from synthseq.generator.render import make_renderer
    from synthseq.generator.sequence import generate_sequence

    t0 = time.perf_counter()
    path = Path(out_dir) / shard_name(job.index)
    renderer = None
    view_frames = 0
    try:
        with ShardWriter(path, config=config_json) as writer:
            for seq_index, spec in zip(job.sequence_indices, job.specs):
                if renderer is None:
                    options = {"nthreads": threads} if spec.renderer == "raycast" else {}
                    renderer = make_renderer(spec.renderer, **options)
                try:
                    seq = generate_sequence(spec, renderer=renderer)
                except Exception as e:  # any failure of one sequence is reported with its id and seed
                    raise BuildError(f"sequence {seq_index} (seed {spec.seed}) failed: "
                                     f"{type(e).__name__}: {e}") from e
                writer.write(sequence_key(seq_index), seq)
                view_frames += seq.num_frames * seq.num_views
    finally:
        if renderer is not None:
            renderer.close()
    return {
        "file": path.name,
        "sequence_ids": [sequence_key(i) for i in job.sequence_indices],
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
        "num_sequences": len(job.sequence_indices),
        "view_frames": view_frames,
        "seconds": time.perf_counter() - t0,
        "pid": os.getpid(),
        "maxrss_kb": _maxrss_kb(),
    }


def _maxrss_kb() -> int:
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


# ----------------------------------------------------------------------------------------- the driver

def build_dataset(cfg, out_dir, *, resume: bool = False, address: str | None = None,
                  progress: bool = True, on_shard=None) -> dict:
    """Build (or resume) a dataset with Ray; returns the final manifest.

    Args:
        cfg: a resolved ``synthseq.pipelines.config.Config``.
        out_dir: output directory (created; must be empty unless ``resume``).
        resume: keep shards already present with a matching checksum, rebuild the rest.
        address: an existing Ray cluster ("auto", "ray://host:10001"); None starts a local one with
            ``cfg.build.workers`` CPUs (all CPUs when 0).
        progress: show a tqdm progress bar.
        on_shard: optional callback receiving each finished task's summary (timing, pid, peak RSS).

    Raises:
        FileExistsError / NotADirectoryError: bad output path. ConfigError: bad config or resume mismatch.
        BuildError: a sequence kept failing (names its id and seed).
    """
    from synthseq import __version__
    from synthseq.datasets.shards import (FORMAT, FORMAT_VERSION, MANIFEST, verify_shard_file,
                                          write_json_atomic)
    from synthseq.generator.sequence import make_spec
    from synthseq.pipelines.config import config_to_dict, dump_config

    out = Path(out_dir)
    check_output_dir(out, resume)
    old_manifest = check_resumable(out, cfg) if resume else None

    # Every spec is made before anything is written: bad meshes or config values fail here.
    b = cfg.build
    plan = plan_shards(b.num_sequences, b.sequences_per_shard)
    specs = {i: make_spec(cfg.generate, b.seed, i) for i in range(b.num_sequences)}
    jobs = [ShardJob(j, idx, tuple(specs[i] for i in idx)) for j, idx in enumerate(plan)]

    out.mkdir(parents=True, exist_ok=True)
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
        "shard_config": shard_config(cfg),
        "config": config_to_dict(cfg),
        "shards": [],
    }

    def save_manifest(complete: bool) -> None:
        manifest["shards"] = sorted(done.values(), key=lambda e: e["file"])
        manifest["complete"] = complete
        write_json_atomic(out / MANIFEST, manifest)

    save_manifest(False)
    from synthseq.datasets.shards import shard_name

    todo = [job for job in jobs if shard_name(job.index) not in done]
    log.info("%d shards planned, %d already built, %d to build", len(jobs), len(jobs) - len(todo), len(todo))
    if todo:
        _run_ray(todo, out, cfg, address, progress, done, save_manifest, on_shard)
    save_manifest(True)
    return manifest


def _run_ray(todo, out: Path, cfg, address, progress, done, save_manifest, on_shard) -> None:
    import json

    try:
        import ray
    except ImportError as e:
        raise ImportError("synthseq build needs Ray: pip install 'synthseq[ray]' (ray==2.60.0)") from e

    started_here = False
    if not ray.is_initialized():
        # Renderers need a headless GL platform; local workers inherit the driver's environment,
        # remote ones get it through the runtime env.
        os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
        kwargs = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
        if address:
            kwargs["runtime_env"] = {"env_vars": {"PYOPENGL_PLATFORM": "egl"}}
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=cfg.build.workers or os.cpu_count(), **kwargs)
        started_here = True
    try:
        cluster_cpus = int(ray.cluster_resources().get("CPU", 1))
        window = min(cfg.build.workers or cluster_cpus, len(todo))
        # Each task reserves an equal share of the CPUs and renders with that many threads, so one worker
        # on a 2-core machine uses both cores and two workers do not compete for them.
        threads = max(1, cluster_cpus // window) if not address else 1
        task = ray.remote(num_cpus=threads, max_retries=cfg.build.max_retries,
                          retry_exceptions=[BuildError])(build_shard)
        config_json = json.loads(json.dumps(shard_config(cfg)))
        _drive(task, todo, str(out.resolve()), config_json, window, threads, progress, done, save_manifest,
               on_shard)
    finally:
        if started_here:
            ray.shutdown()


def _drive(task, todo, out_dir, config_json, window, threads, progress, done, save_manifest, on_shard) -> None:
    """Submit at most ``window`` shard tasks at a time and collect them with ``ray.wait``."""
    import ray
    from tqdm import tqdm

    total_sequences = sum(len(j.sequence_indices) for j in todo)
    bar = tqdm(total=total_sequences, unit="seq", desc="build", disable=not progress, dynamic_ncols=True)
    t0 = time.perf_counter()
    view_frames = 0
    pending = list(todo)
    in_flight = {}
    try:
        while pending or in_flight:
            while pending and len(in_flight) < window:
                job = pending.pop(0)
                in_flight[task.remote(job, out_dir, config_json, threads)] = job
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                job = in_flight.pop(ref)
                try:
                    summary = ray.get(ref)
                except ray.exceptions.RayTaskError as e:
                    cause = e.cause if isinstance(getattr(e, "cause", None), BuildError) else None
                    msg = str(cause) if cause else str(e).strip().splitlines()[-1]
                    raise BuildError(f"shard {job.index}: {msg} (after retries; rerun with --resume)") from None
                except ray.exceptions.WorkerCrashedError:
                    raise BuildError(f"shard {job.index}: worker crashed repeatedly (after retries; "
                                     f"rerun with --resume)") from None
                entry = {k: summary[k] for k in ("file", "sequence_ids", "bytes", "sha256")}
                done[entry["file"]] = entry
                save_manifest(False)
                if on_shard is not None:
                    on_shard(summary)
                view_frames += summary["view_frames"]
                elapsed = time.perf_counter() - t0
                bar.update(summary["num_sequences"])
                bar.set_postfix_str(f"shards {len(done)}, {bar.n / elapsed:.2f} seq/s, "
                                    f"{view_frames / elapsed:.0f} view-frames/s")
    finally:
        bar.close()
        for ref in in_flight:
            ray.cancel(ref, force=True)


# ----------------------------------------------------------------------------------------- CLI

def configure_parser(p) -> None:
    p.add_argument("config", help="config YAML (or a bundled name: tiny, default)")
    p.add_argument("--out", required=True, help="output dataset directory")
    p.add_argument("--num-sequences", type=int, help="override build.num_sequences")
    p.add_argument("--sequences-per-shard", type=int, help="override build.sequences_per_shard")
    p.add_argument("--workers", type=int, help="override build.workers (parallel shard tasks; 0 = all CPUs)")
    p.add_argument("--seed", type=int, help="override build.seed (the root seed)")
    p.add_argument("--resume", action="store_true",
                   help="continue a build in --out: keep shards whose checksum matches, rebuild the rest")
    p.add_argument("--address", help="connect to an existing Ray cluster (e.g. auto) instead of a local one")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override any config value, e.g. --set generate.num_frames=10 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from synthseq.pipelines.config import load_config

    overrides = list(args.overrides)
    for flag, key in (("num_sequences", "build.num_sequences"), ("sequences_per_shard", "build.sequences_per_shard"),
                      ("workers", "build.workers"), ("seed", "build.seed")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    cfg = load_config(args.config, overrides)
    t0 = time.perf_counter()
    manifest = build_dataset(cfg, args.out, resume=args.resume, address=args.address,
                             progress=not args.no_progress)
    n = sum(len(e["sequence_ids"]) for e in manifest["shards"])
    size = sum(e["bytes"] for e in manifest["shards"])
    print(f"built {n} sequences in {len(manifest['shards'])} shards ({size / 1e6:.1f} MB) in "
          f"{time.perf_counter() - t0:.1f} s -> {args.out}")
    return 0
