"""Full build rate (view-frames/s incl. noise, sampling, HDF5, manifest) with 1 and 2 workers, and the peak
RSS of a Ray worker after 100 vs 1000 sequences.

    .venv/bin/python bench/bench_build.py                      # rates, default config, 1 and 2 workers
    .venv/bin/python bench/bench_build.py --rss                # + worker RSS after 100 vs 1000 sequences

Ray is started before the clock starts (its start-up is not part of the build rate).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")


def timed_build(cfg, workers: int) -> dict:
    import ray

    from synthseq.pipelines.build import build_dataset

    cfg.build.workers = workers
    ray.init(num_cpus=workers, include_dashboard=False, logging_level="ERROR")
    summaries = []
    try:
        # warm-up: one sequence per worker so imports and renderer start-up are not counted
        with tempfile.TemporaryDirectory() as warm:
            import copy

            wcfg = copy.deepcopy(cfg)
            wcfg.build.num_sequences = workers
            wcfg.build.sequences_per_shard = 1
            build_dataset(wcfg, Path(warm) / "ds", progress=False)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            build_dataset(cfg, Path(tmp) / "ds", progress=False, on_shard=summaries.append)
            wall = time.perf_counter() - t0
    finally:
        ray.shutdown()
    vf = sum(s["view_frames"] for s in summaries)
    return {"workers": workers, "wall_s": wall, "view_frames": vf, "vf_per_s": vf / wall,
            "seq_per_s": cfg.build.num_sequences / wall}


def rss_run(cfg, total: int, per_shard: int) -> list[tuple[int, int]]:
    """Build ``total`` sequences on one worker; returns (sequences done, worker peak RSS kB) per shard."""
    import ray

    from synthseq.pipelines.build import build_dataset

    cfg.build.workers = 1
    cfg.build.num_sequences = total
    cfg.build.sequences_per_shard = per_shard
    ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")
    points = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            def record(s):
                points.append((len(points) + 1) * per_shard)
                points[-1] = (points[-1], s["maxrss_kb"], s["pid"])

            build_dataset(cfg, Path(tmp) / "ds", progress=True, on_shard=record)
    finally:
        ray.shutdown()
    return points


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="default")
    ap.add_argument("--num-sequences", type=int, default=8)
    ap.add_argument("--sequences-per-shard", type=int, default=1)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--rss", action="store_true", help="also measure worker RSS after 100 vs 1000 sequences")
    ap.add_argument("--rss-frames", type=int, default=2, help="frames per sequence in the RSS run")
    args = ap.parse_args()

    from synthseq.pipelines.config import load_config

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
    base = [f"build.num_sequences={args.num_sequences}", f"build.sequences_per_shard={args.sequences_per_shard}",
            *args.overrides]
    rows = [timed_build(load_config(args.config, base), w) for w in args.workers]
    print(f"\nconfig {args.config} {' '.join(args.overrides)}: {args.num_sequences} sequences")
    print("| workers | wall s | view-frames | view-frames/s | sequences/s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workers']} | {r['wall_s']:.1f} | {r['view_frames']} | {r['vf_per_s']:.1f} | "
              f"{r['seq_per_s']:.2f} |")
    if len(rows) >= 2:
        print(f"scaling {rows[1]['workers']} vs {rows[0]['workers']} workers: "
              f"{rows[1]['vf_per_s'] / rows[0]['vf_per_s']:.2f}x")
    if args.rss:
        cfg = load_config(args.config, [f"generate.num_frames={args.rss_frames}", *args.overrides])
        points = rss_run(cfg, 1000, 10)
        pids = {p for _, _, p in points}
        at100 = next(r for n, r, _ in points if n >= 100)
        at1000 = points[-1][1]
        print(f"\nworker peak RSS ({len(pids)} worker process(es)): after 100 sequences {at100 / 1024:.0f} MiB, "
              f"after 1000 sequences {at1000 / 1024:.0f} MiB ({100 * (at1000 / at100 - 1):+.1f}%)")


if __name__ == "__main__":
    main()
