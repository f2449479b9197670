"""Data-parallel training step throughput: K=1 vs K=2 Ray workers (1 CPU, 1 torch thread each, gloo) at the
same per-worker batch, on a local Ray cluster with 2 CPUs.

    .venv/bin/python bench/bench_train_distributed.py                  # tiny config, builds its own dataset
    .venv/bin/python bench/bench_train_distributed.py --config default --steps 30 --set train.batch_size=8

Throughput = K x batch / median step time of rank 0 (steps after the first 3; a step includes the gradient
all-reduce and waiting for the slower rank). Ray start-up and dataset opening are not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()

    import ray

    from synthseq.pipelines.build import build_dataset
    from synthseq.pipelines.cluster import train_on_cluster
    from synthseq.pipelines.config import load_config

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "ds"
            build_dataset(load_config("tiny", ["build.num_sequences=8", "build.sequences_per_shard=2",
                                               "generate.num_frames=12"]), data, progress=False)
            for k in (1, 2):
                cfg = load_config(args.config, [f"train.data={data}", "train.real=[]", f"train.max_steps={args.steps}",
                                                "train.log_interval=1", "train.checkpoint_interval=100000",
                                                *args.overrides])
                run = Path(tmp) / f"k{k}"
                train_on_cluster(cfg, run, num_workers=k)
                times = [json.loads(ln)["time_step"] for ln in (run / "metrics.jsonl").read_text().splitlines()][3:]
                med = statistics.median(times)
                rows.append((k, cfg.train.batch_size, med, k * cfg.train.batch_size / med))
    finally:
        ray.shutdown()
    print(f"\nconfig {args.config} {' '.join(args.overrides)}: {args.steps} steps, synthetic pairs only")
    print("| workers | batch per worker | median step s | samples/s |")
    print("|---|---|---|---|")
    for k, b, med, sps in rows:
        print(f"| {k} | {b} | {med:.3f} | {sps:.1f} |")
    print(f"2 workers / 1 worker throughput: {rows[1][3] / rows[0][3]:.2f}x")


if __name__ == "__main__":
    main()
