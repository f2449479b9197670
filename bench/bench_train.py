"""Benchmark one training step of the default model: data wait, D step, G step, P step, samples/s, peak RSS.

    .venv/bin/python bench/bench_train.py                      # B=16, N=1024, in-memory toy pairs, CPU
    .venv/bin/python bench/bench_train.py --data data/tiny --real ../shared/data/real/tum_fr1_rpy
    .venv/bin/python bench/bench_train.py --distill gradients --steps 10 --device cuda

Without --data the pairs are in-memory toy clouds (tests/toy_pairs.py), so "data wait" is collate only.
Prints a table and one JSON line (median over the measured steps, after warm-up).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--num-points", type=int, default=1024)
    p.add_argument("--steps", type=int, default=20, help="measured steps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--distill", default="features", choices=["features", "gradients"])
    p.add_argument("--no-gan", action="store_true", help="use_gan: false (P step only)")
    p.add_argument("--pose", default="match", choices=["match", "regress"], help="train.model.pose")
    p.add_argument("--p-hidden", type=int, default=32, help="train.model.p_hidden (default.yaml: 32)")
    p.add_argument("--data", help="a built dataset directory (SyntheticPairs) instead of toy pairs")
    p.add_argument("--real", action="append", default=[], help="real capture(s) instead of toy pairs")
    p.add_argument("--num-workers", type=int, default=0)
    args = p.parse_args(argv)

    import torch

    from synthseq.config import from_dict
    from synthseq.training.config import TrainConfig
    from synthseq.training.data import datasets_from_config, make_loader
    from synthseq.training.trainer import Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = from_dict(TrainConfig, dict(batch_size=args.batch_size, num_points=args.num_points,
                                      distill=dict(mode=args.distill), use_gan=not args.no_gan,
                                      model=dict(pose=args.pose, p_hidden=args.p_hidden),
                                      num_workers=args.num_workers, data=args.data, real=args.real), "train")
    n_steps = args.warmup + args.steps
    if args.data:
        synthetic, real = datasets_from_config(cfg)
    else:
        sys.path.insert(0, str(REPO / "tests"))
        from toy_pairs import ToyPairs

        synthetic = ToyPairs(4 * args.batch_size, args.num_points, seed=0)
        real = None
    if real is None:
        if args.real:
            raise SystemExit("--real needs --data")
        sys.path.insert(0, str(REPO / "tests"))
        from toy_pairs import ToyPairs

        real = ToyPairs(4 * args.batch_size, args.num_points, seed=1, offset=(0.0, 0.0, 0.02), noise=0.003)
    trainer = Trainer(cfg, args.device)
    s_iter = iter(make_loader(synthetic, cfg, 0, 0, n_steps))
    r_iter = iter(make_loader(real, cfg, 1, 0, n_steps))
    rows = []
    for i in range(n_steps):
        t0, c0 = time.perf_counter(), time.process_time()
        s, r = next(s_iter), next(r_iter)
        t_data = time.perf_counter() - t0
        _, times = trainer.train_step(s, r)
        # process CPU time (all threads) beside wall time: on a shared machine wall time includes waiting
        # for other people's processes, CPU time does not
        times.update(time_data=t_data, time_step=time.perf_counter() - t0, time_cpu_step=time.process_time() - c0)
        if i >= args.warmup:
            rows.append(times)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    result = {
        "device": args.device, "threads": torch.get_num_threads(), "batch_size": args.batch_size,
        "num_points": args.num_points, "distill": args.distill, "use_gan": not args.no_gan, "pose": args.pose,
        "data": "shards" if args.data else "toy (in memory)", "steps": args.steps,
        **{k.replace("time_", "") + "_ms": round(v * 1000, 1) for k, v in med.items()},
        "samples_per_s": round(args.batch_size / med["time_step"], 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "params": {k: sum(p.numel() for p in m.parameters()) for k, m in
                   (("G", trainer.G), ("D", trainer.D), ("P", trainer.P))},
    }
    result["load_avg_1min"] = round(os.getloadavg()[0], 2)
    for k in ("data_ms", "D_ms", "G_ms", "P_ms", "step_ms", "cpu_step_ms", "samples_per_s", "peak_rss_mb",
              "load_avg_1min"):
        if k in result:
            print(f"{k:>14}: {result[k]}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
