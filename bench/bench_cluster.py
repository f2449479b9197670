"""Build throughput on a multi-node Ray cluster (head without CPUs + 2 worker nodes x 1 CPU, each with its own
raylet and object store; meshes and shards travel through the object store) vs a single-node cluster with the
same 2 CPUs. Both run the same code path (shards returned as bytes, written by the driver).

    .venv/bin/python bench/bench_cluster.py                          # default config, 8 sequences x 10 frames
    .venv/bin/python bench/bench_cluster.py --repeats 3 --set generate.num_frames=30

Each cluster is started and warmed up (one shard per worker) before the clock starts; runs alternate
single / multi so that load from other processes on a shared machine hits both alike; medians are reported.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")


def timed(cfg, address) -> tuple[float, int, float]:
    """(wall s, view-frames, summed task seconds)."""
    from synthseq.pipelines.build import build_dataset

    summaries = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        build_dataset(cfg, Path(tmp) / "ds", address=address, progress=False, on_shard=summaries.append)
        wall = time.perf_counter() - t0
    return wall, sum(s["view_frames"] for s in summaries), sum(s["seconds"] for s in summaries)


def warm(cfg, address) -> None:
    from synthseq.pipelines.build import build_dataset

    w = copy.deepcopy(cfg)
    w.build.num_sequences, w.build.sequences_per_shard = 2, 1
    with tempfile.TemporaryDirectory() as tmp:
        build_dataset(w, Path(tmp) / "ds", address=address, progress=False)


def run_single(cfg) -> tuple[float, int, float]:
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        warm(cfg, None)
        return timed(cfg, None)
    finally:
        ray.shutdown()


def run_multi(cfg, cluster) -> tuple[float, int, float]:
    import ray

    ray.init(address=cluster.address, logging_level="ERROR")
    try:
        warm(cfg, cluster.address)
        return timed(cfg, cluster.address)
    finally:
        ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="default")
    ap.add_argument("--num-sequences", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--sequences-per-shard", type=int, default=1)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()

    from synthseq.pipelines.config import load_config

    overrides = [f"build.num_sequences={args.num_sequences}", f"build.sequences_per_shard={args.sequences_per_shard}",
                 "build.workers=2",
                 *(args.overrides or ["generate.num_frames=10"])]
    cfg = load_config(args.config, overrides)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"config {args.config} {' '.join(overrides)}")

    tmp = tempfile.mkdtemp(prefix="ssq", dir="/tmp")
    os.environ["RAY_TMPDIR"] = tmp  # private: ray.init() elsewhere on the machine never finds this cluster
    os.environ["RAY_AUTH_MODE"] = "token"
    from ray._raylet import Config
    from ray.cluster_utils import Cluster

    Config.initialize("")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    single, multi = [], []
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        for r in range(args.repeats):
            single.append(run_single(cfg))
            multi.append(run_multi(cfg, cluster))
            print(f"repeat {r}: single-node {single[-1][0]:.1f} s, multi-node {multi[-1][0]:.1f} s", flush=True)
    finally:
        cluster.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)

    vf = single[0][1]
    s, m = statistics.median(r[0] for r in single), statistics.median(r[0] for r in multi)
    busy_s = statistics.median(r[2] for r in single) / (2 * s)
    busy_m = statistics.median(r[2] for r in multi) / (2 * m)
    print("\n| cluster | CPUs | median wall s | view-frames | view-frames/s |")
    print("|---|---|---|---|---|")
    print(f"| single node (ray.init num_cpus=2) | 2 | {s:.1f} | {vf} | {vf / s:.1f} |")
    print(f"| head (0 CPU) + 2 worker nodes x 1 CPU | 2 | {m:.1f} | {vf} | {vf / m:.1f} |")
    print(f"multi-node throughput / single-node: {s / m:.2f} (walls: single {[round(r[0], 1) for r in single]}, "
          f"multi {[round(r[0], 1) for r in multi]})")
    print(f"worker-slot utilisation (summed task seconds / (2 x wall)): single {busy_s:.2f}, multi {busy_m:.2f}")


if __name__ == "__main__":
    main()
