"""Benchmark: pairs/s from SyntheticPairs (num_workers 0 and 2) beside raw h5py reads, and data wait in a step.

Usage::

    .venv/bin/python bench/bench_dataset.py                    # writes a temporary dataset, N = 1024
    .venv/bin/python bench/bench_dataset.py --root data/       # an existing built dataset
    .venv/bin/python bench/bench_dataset.py --json out.json
    .venv/bin/python bench/bench_dataset.py --cpu              # CPU time per pair at the trainer's batch sizes

Measures, on the same (shuffled, seeded) list of pairs:
- raw: h5py reads of exactly the bytes a pair needs (points + labels of frames t and t+d of one view, one
  integer-indexed read per frame and array, files opened once), no Dataset, no sampling, no collate;
- dataset: ``DataLoader(SyntheticPairs(..., num_points=N), batch_size=B, collate_fn=collate_pairs)`` with
  num_workers 0 and 2 (fork), pairs/s after the first batch;
- cpu (``--cpu``, instead of the above): CPU time per pair of the same DataLoader at the trainer's batch
  sizes (4 on CPU, 32 on CUDA) with 0 and 1 (fork) workers, this process plus its reaped workers
  (``process_time`` + ``RUSAGE_CHILDREN``), so the number is steady on a shared machine;
- step: a small PointNet pose regressor (about the size of the trainer's CPU default) trained on those
  batches with 2 workers; reports the fraction of wall time spent waiting for the next batch.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("bench_dataset")


def write_random_dataset(root: Path, num_sequences: int, T: int, V: int, N: int, K: int = 3, per_shard: int = 4) -> None:
    """Shards with the layout of a real build (points chunked per frame, labels, poses), random contents."""
    from synthseq.datasets.shards import FORMAT_VERSION, ShardWriter, sequence_key, sha256_file, shard_name, write_json_atomic
    from synthseq.types import PointSequence

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    shards = []
    for s in range(0, num_sequences, per_shard):
        path = root / shard_name(s // per_shard)
        ids = []
        with ShardWriter(path) as w:
            for i in range(s, min(s + per_shard, num_sequences)):
                poses = np.tile(np.eye(4), (T, V, 1, 1))
                poses[..., :3, 3] = rng.normal(size=(T, V, 3))
                obj = np.tile(np.eye(4), (T, K, 1, 1))
                names = tuple(f"o{k}" for k in range(K))
                seq = PointSequence(
                    points=rng.normal(size=(T, V, N, 3)).astype(np.float32),
                    num_valid=np.full((T, V), N, np.int32),
                    intrinsics=np.tile(np.eye(3), (V, 1, 1)), image_size=np.tile(np.array([640, 480], np.int32), (V, 1)),
                    timestamps=np.arange(T) / 30.0, camera_poses=poses,
                    labels=rng.integers(-1, K, size=(T, V, N)).astype(np.int16), object_poses=obj,
                    object_names=names, meshes={n: (np.zeros((3, 3)), np.array([[0, 1, 2]])) for n in names})
                w.write(sequence_key(i), seq)
                ids.append(sequence_key(i))
        shards.append({"file": path.name, "sequence_ids": ids, "bytes": path.stat().st_size, "sha256": sha256_file(path)})
    write_json_atomic(root / "manifest.json", {"format": "synthseq", "format_version": FORMAT_VERSION, "complete": True,
                                               "shards": shards})


def bench_raw(ds, order: np.ndarray) -> dict:
    import h5py

    files = {i: h5py.File(f, "r") for i, f in enumerate(ds.store.files)}
    handles = {}  # (points, labels) h5py Datasets per sequence, looked up once as the Dataset does
    nbytes = 0
    t0 = time.perf_counter()
    for i in order:
        si, v, t, d, _ = (int(x) for x in ds.items[i])
        if si not in handles:
            s = ds.store.seqs[si]
            g = files[s["file"]]["sequences"][s["key"]]
            handles[si] = (g["points"], g["labels"])
        points, labels = handles[si]
        for f in (t, t + d):
            p = points[f, v]
            lab = labels[f, v]
            nbytes += p.nbytes + lab.nbytes
    dt = time.perf_counter() - t0
    for f in files.values():
        f.close()
    return {"pairs_per_s": len(order) / dt, "MB_per_s": nbytes / dt / 1e6, "pairs": len(order)}


def bench_loader(ds, order: np.ndarray, workers: int, batch_size: int) -> dict:
    from torch.utils.data import DataLoader, Subset

    from synthseq.datasets.torch import collate_pairs

    loader = DataLoader(Subset(ds, order.tolist()), batch_size=batch_size, num_workers=workers,
                        collate_fn=collate_pairs, multiprocessing_context="fork" if workers else None,
                        prefetch_factor=4 if workers else None)
    it = iter(loader)
    next(it)  # worker start-up and first batch excluded
    n = 0
    t0 = time.perf_counter()
    c0 = time.process_time()
    for batch in it:
        n += batch["points_a"].shape[0]
    dt = time.perf_counter() - t0
    cpu = time.process_time() - c0
    del it
    out = {"pairs_per_s": n / dt, "pairs": n, "workers": workers, "batch_size": batch_size}
    if workers == 0:  # CPU time of this process per pair: what one free core would sustain
        out["cpu_us_per_pair"] = 1e6 * cpu / n
    return out


def bench_cpu(ds, order: np.ndarray, workers: int, batch_size: int) -> dict:
    """CPU microseconds per pair of the loader (parent + workers, the workers' start-up included)."""
    import resource

    from torch.utils.data import DataLoader, Subset

    from synthseq.datasets.torch import collate_pairs

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    c0 = time.process_time() + children.ru_utime + children.ru_stime
    loader = DataLoader(Subset(ds, order.tolist()), batch_size=batch_size, num_workers=workers,
                        collate_fn=collate_pairs, multiprocessing_context="fork" if workers else None)
    n = sum(batch["points_a"].shape[0] for batch in loader)  # workers exit (and are reaped) at the end
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = time.process_time() + children.ru_utime + children.ru_stime - c0
    return {"cpu_us_per_pair": 1e6 * cpu / n, "pairs": n, "workers": workers, "batch_size": batch_size}


def _median_of(runs: list[dict]) -> dict:
    rates = sorted(r["pairs_per_s"] for r in runs)
    out = dict(runs[0])
    out.update(pairs_per_s=float(np.median(rates)), min=rates[0], max=rates[-1], repeats=len(runs))
    if "cpu_us_per_pair" in runs[0]:
        out["cpu_us_per_pair"] = float(np.median([r["cpu_us_per_pair"] for r in runs]))
    return out


def _median_of_cpu(runs: list[dict]) -> dict:
    cpu = sorted(r["cpu_us_per_pair"] for r in runs)
    return dict(runs[0], cpu_us_per_pair=float(np.median(cpu)), min=cpu[0], max=cpu[-1], repeats=len(runs))


def bench_step(ds, order: np.ndarray, workers: int, batch_size: int, steps: int) -> dict:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, Subset

    from synthseq.datasets.torch import collate_pairs

    class PosePointNet(nn.Module):
        def __init__(self, width=64):
            super().__init__()
            self.enc = nn.Sequential(nn.Conv1d(3, width, 1), nn.ReLU(), nn.Conv1d(width, 2 * width, 1), nn.ReLU(),
                                     nn.Conv1d(2 * width, 4 * width, 1))
            self.head = nn.Sequential(nn.Linear(8 * width, 2 * width), nn.ReLU(), nn.Linear(2 * width, 9))

        def forward(self, a, b):
            fa = self.enc(a.transpose(1, 2)).max(dim=2).values
            fb = self.enc(b.transpose(1, 2)).max(dim=2).values
            return self.head(torch.cat([fa, fb], dim=1))

    model = PosePointNet()
    opt = torch.optim.Adam(model.parameters(), 1e-3, betas=(0.5, 0.999))
    loader = DataLoader(Subset(ds, order.tolist()), batch_size=batch_size, num_workers=workers,
                        collate_fn=collate_pairs, multiprocessing_context="fork" if workers else None,
                        persistent_workers=False, prefetch_factor=4 if workers else None)
    it = iter(loader)
    next(it)
    wait = compute = 0.0
    done = 0
    t_start = time.perf_counter()
    while done < steps:
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            break
        t1 = time.perf_counter()
        target = torch.cat([batch["a_from_b"][:, :3, :2].reshape(-1, 6), batch["a_from_b"][:, :3, 3]], dim=1)
        loss = (model(batch["points_a"], batch["points_b"]) - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        t2 = time.perf_counter()
        wait += t1 - t0
        compute += t2 - t1
        done += 1
    total = time.perf_counter() - t_start
    return {"steps": done, "batch_size": batch_size, "workers": workers, "wait_fraction": wait / total,
            "step_ms": 1000 * total / max(done, 1), "compute_ms": 1000 * compute / max(done, 1)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, help="built dataset (default: write a random one to a temp dir)")
    ap.add_argument("--num-points", type=int, default=1024)
    ap.add_argument("--pairs", type=int, default=6000, help="pairs per measurement")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--step-batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3, help="runs per measurement (the median is reported)")
    ap.add_argument("--cpu", action="store_true", help="only CPU time per pair at batch 4 and 32, 0 and 1 workers")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import torch

    torch.set_num_threads(1)
    from synthseq.datasets.torch import SyntheticPairs

    tmp = None
    root = args.root
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_dataset_")
        root = Path(tmp.name)
        t0 = time.perf_counter()
        # --cpu: stored N = 2 * num_points, resampled to num_points as the trainer does (build 2048, train 1024)
        stored = 2 * args.num_points if args.cpu else args.num_points
        shape = (8, 60, 2) if args.cpu else (16, 50, 4)
        write_random_dataset(root, num_sequences=shape[0], T=shape[1], V=shape[2], N=stored)
        log.info("wrote %d sequences x %d frames x %d views x N=%d to %s in %.1f s", *shape, stored, root,
                 time.perf_counter() - t0)
    ds = SyntheticPairs(root, gaps=(1, 5, 10), num_points=args.num_points, seed=0)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(ds))[: args.pairs]
    if args.cpu:
        results = {}
        bench_cpu(ds, order[:500], 0, 4)  # warm the page cache
        for b in (4, 32):
            for w in (0, 1):
                r = _median_of_cpu([bench_cpu(ds, order, w, b) for _ in range(args.repeats)])
                results[f"batch{b}_workers{w}"] = r
                log.info("batch %2d, %d workers: %6.1f CPU-us/pair (min %.1f, max %.1f; %d pairs)", b, w,
                         r["cpu_us_per_pair"], r["min"], r["max"], r["pairs"])
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
        if tmp is not None:
            tmp.cleanup()
        return
    results = {"num_points": args.num_points, "dataset_pairs": len(ds), "cpu_count": os.cpu_count(),
               "loadavg_1min": os.getloadavg()[0]}
    bench_raw(ds, order[:500])  # warm the page cache
    results["raw_h5py"] = _median_of([bench_raw(ds, order) for _ in range(args.repeats)])
    log.info("raw h5py:      %8.0f pairs/s  (%.0f MB/s; min %.0f, max %.0f over %d runs)",
             results["raw_h5py"]["pairs_per_s"], results["raw_h5py"]["MB_per_s"], results["raw_h5py"]["min"],
             results["raw_h5py"]["max"], args.repeats)
    for w in (0, 2):
        r = _median_of([bench_loader(ds, order, w, args.batch_size) for _ in range(args.repeats)])
        results[f"dataset_workers{w}"] = r
        extra = f", {r['cpu_us_per_pair']:.0f} CPU-us/pair" if "cpu_us_per_pair" in r else ""
        log.info("dataset w=%d:   %8.0f pairs/s  (batch %d; min %.0f, max %.0f%s)", w, r["pairs_per_s"],
                 args.batch_size, r["min"], r["max"], extra)
    r = bench_step(ds, np.resize(order, args.step_batch_size * (args.steps + 2)), 2, args.step_batch_size, args.steps)
    results["train_step"] = r
    log.info("train step:    %.1f ms/step (compute %.1f ms), waiting on data %.1f%% of the time (B=%d, 2 workers)",
             r["step_ms"], r["compute_ms"], 100 * r["wait_fraction"], args.step_batch_size)
    results["loadavg_1min_end"] = os.getloadavg()[0]
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
