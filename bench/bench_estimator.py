"""Time per pair of the pose estimator ("ours", and its coarse stage alone) against FPFH + RANSAC + ICP and ICP, on the same real pairs,
interleaved pair by pair so both see the same machine load; wall and CPU (process) seconds.

Usage: .venv/bin/python bench/bench_estimator.py --checkpoint training/weights/pose_match_small.pt \\
           --real ../shared/data/real/7scenes_redkitchen@50:100 --gap 10 --pairs 8 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="training/weights/pose_match_small.pt")
    p.add_argument("--real", default="../shared/data/real/7scenes_redkitchen@50:100")
    p.add_argument("--gap", type=int, default=10)
    p.add_argument("--pairs", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from synthseq.training import baselines as B
    from synthseq.training.estimator import load_estimator
    from synthseq.training.evaluation.data import load_real_sequence

    torch.set_num_threads(args.threads)
    est = load_estimator(args.checkpoint)
    seq = load_real_sequence(args.real, 1024, 3.0)
    starts = np.unique(np.linspace(0, seq.num_frames - args.gap - 1, args.pairs).round().astype(int))
    est(seq.dense(0), seq.dense(1))  # warm-up (imports, Open3D initialisation)
    rows = {"ours": [], "icp": [], "fpfh_ransac_icp": []}
    coarse = []  # wall seconds of ours's coarse stage (matches + RANSAC), from the same calls
    for t in starts:
        a, b = seq.dense(int(t)), seq.dense(int(t) + args.gap)
        for name, fn in (("ours", lambda: est(a, b)), ("icp", lambda: B.icp_from_identity(a, b)),
                         ("fpfh_ransac_icp", lambda: B.fpfh_ransac_icp(a, b))):
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            rows[name].append((time.perf_counter() - w0, time.process_time() - c0))
            if name == "ours":
                coarse.append(est.last_coarse[2])
    out = {"capture": args.real, "gap": args.gap, "pairs": len(starts), "threads": args.threads,
           "load_avg_1min": round(os.getloadavg()[0], 1)}
    for name, r in rows.items():
        out[f"{name}_wall_s"] = round(statistics.median(x[0] for x in r), 3)
        out[f"{name}_cpu_s"] = round(statistics.median(x[1] for x in r), 3)
    out["ours_coarse_wall_s"] = round(statistics.median(coarse), 3)
    out["ours_over_fpfh_wall"] = round(out["ours_wall_s"] / out["fpfh_ransac_icp_wall_s"], 3)
    out["ours_over_fpfh_cpu"] = round(out["ours_cpu_s"] / out["fpfh_ransac_icp_cpu_s"], 3)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
