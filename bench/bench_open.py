"""Benchmark: time to open a dataset for training (``SyntheticPairs(root)``) with 10 vs 1000 shards (issue 11).

Usage::

    .venv/bin/python bench/bench_open.py                     # 10 and 1000 shards of one sequence each
    .venv/bin/python bench/bench_open.py --shards 10 100 1000 --repeats 5 --json out.json

Writes, once per shard count, a dataset under a temporary folder the way ``synthseq build`` does (ShardWriter,
manifest with sizes, sha256 and the per-sequence index), one sequence per shard of T x V x N points (default
16 x 2 x 1024: ~0.4 MB per shard, like a small build), then times, median of ``--repeats`` runs in a fresh
process each (cold Python, warm page cache):

- ``default``: ``SyntheticPairs(root)`` as the trainer and evaluation open it now: sizes from one ``stat``
  per shard, the index from the manifest (no shard opened);
- ``no-index manifest``: the same with a manifest written before the per-sequence index existed (each shard
  opened once to read its shapes);
- ``sha256 (before)``: ``verify="sha256"`` on the no-index manifest: what every open did before issue 11
  (every byte hashed, every shard opened).

h5py and torch are imported before the clock starts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def write_dataset(root: Path, num_shards: int, T: int, V: int, N: int) -> None:
    from synthseq.datasets.shards import (FORMAT, FORMAT_VERSION, ShardWriter, sequence_key, sha256_file,
                                          shard_name, write_json_atomic)
    from synthseq.types import PointSequence

    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    points = rng.normal(size=(T, V, N, 3)).astype(np.float32)
    poses = np.tile(np.eye(4), (T, V, 1, 1))
    shards = []
    for i in range(num_shards):
        seq = PointSequence(points=points, num_valid=np.full((T, V), N, np.int32),
                            intrinsics=np.tile(np.eye(3), (V, 1, 1)), image_size=np.full((V, 2), 64, np.int32),
                            timestamps=np.arange(T, dtype=np.float64), camera_poses=poses,
                            labels=np.full((T, V, N), -1, np.int16), seed=i, name=sequence_key(i))
        path = root / shard_name(i)
        with ShardWriter(path, config={"bench": True}) as w:
            w.write(sequence_key(i), seq)
        shards.append({"file": path.name, "sequence_ids": [sequence_key(i)], "sequences": w.sequence_index,
                       "bytes": path.stat().st_size, "sha256": sha256_file(path)})
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "complete": True, "shards": shards}
    write_json_atomic(root / "manifest.json", manifest)
    legacy = root.parent / (root.name + "-noindex")
    legacy.mkdir()
    for s in shards:
        os.link(root / s["file"], legacy / s["file"])
    write_json_atomic(legacy / "manifest.json",
                      dict(manifest, shards=[{k: v for k, v in s.items() if k != "sequences"} for s in shards]))


_CHILD = """
import sys, time
import h5py  # imported by any training process anyway; not counted
from synthseq.datasets.torch import SyntheticPairs
t1, c1 = time.perf_counter(), time.process_time()
ds = SyntheticPairs(sys.argv[1], gaps=(1,), verify=sys.argv[2])
t2, c2 = time.perf_counter(), time.process_time()
print(t2 - t1, c2 - c1, len(ds))
"""


def time_open(root: Path, verify: str, repeats: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds of ``SyntheticPairs(root, verify=...)`` in fresh processes (imports
    excluded). CPU time is the steadier number on a shared machine; wall time includes the file reads."""
    wall, cpu = [], []
    for _ in range(repeats):
        r = subprocess.run([sys.executable, "-c", _CHILD, str(root), verify], capture_output=True, text=True,
                           check=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
        w, c, _ = r.stdout.split()
        wall.append(float(w))
        cpu.append(float(c))
    return statistics.median(wall), statistics.median(cpu)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", type=int, nargs="+", default=[10, 1000])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--views", type=int, default=2)
    p.add_argument("--points", type=int, default=1024)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-open-"))
    results = []
    try:
        for n in args.shards:
            root = tmp / f"ds{n}"
            t0 = time.perf_counter()
            write_dataset(root, n, args.frames, args.views, args.points)
            size_mb = sum(f.stat().st_size for f in root.glob("*.h5")) / 1e6
            row = {"shards": n, "dataset_mb": round(size_mb, 1), "write_s": round(time.perf_counter() - t0, 1)}
            for key, folder, verify in (("default", root, "size"), ("no_index_manifest", tmp / f"ds{n}-noindex", "size"),
                                        ("sha256_before", tmp / f"ds{n}-noindex", "sha256")):
                row[f"{key}_wall_s"], row[f"{key}_cpu_s"] = time_open(folder, verify, args.repeats)
            results.append(row)
            print(f"{n:5d} shards ({row['dataset_mb']:.0f} MB), wall / CPU ms: "
                  + ", ".join(f"{k.replace('_', ' ')} {1000 * row[k + '_wall_s']:.1f} / {1000 * row[k + '_cpu_s']:.1f}"
                              for k in ("default", "no_index_manifest", "sha256_before")), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if len(results) >= 2:
        a, b = results[0], results[-1]
        print(f"ratio {b['shards']} / {a['shards']} shards (CPU): "
              + ", ".join(f"{k.replace('_', ' ')} {b[k + '_cpu_s'] / max(a[k + '_cpu_s'], 1e-9):.1f}x"
                          for k in ("default", "no_index_manifest", "sha256_before")))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
