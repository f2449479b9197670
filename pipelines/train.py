"""`synthseq train`: train the pose estimator (and the optional point-cloud GAN) on built shards and real captures.

    synthseq train CONFIG [--name NAME] [--set key.path=value ...] [--device cpu|cuda] [--out runs/] [--threads N]
    synthseq train --resume runs/NAME [--set train.max_steps=2000]

Writes ``OUT/<name>/`` (``--name``, else the config's ``name``): config.yaml, checkpoints/last.pt, tb/
(TensorBoard), samples/*.png, metrics.jsonl. An existing run directory is refused unless ``--resume``
(continue it) or ``--overwrite`` (replace it). Ctrl-C or SIGTERM stops after the current step and saves a
checkpoint first (a second Ctrl-C quits at once), so ``--resume`` continues an interrupted first run.
torch is imported inside ``run`` only.
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


def configure_parser(p) -> None:
    p.add_argument("config", nargs="?", help="config YAML (or a bundled name: tiny, default); "
                                             "with --resume, defaults to RUN_DIR/config.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override any config value, e.g. --set train.data=data/tiny (repeatable)")
    p.add_argument("--name", help="run name: the run directory is OUT/NAME (default: the config's `name`)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory OUT/NAME")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override train.device")
    p.add_argument("--out", default="runs", help="parent of the run directory (default: runs/)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch CPU threads (default: torch's choice; measured on a 2-core machine shared with "
                        "other jobs, 1 thread was 4-5x faster than 2; see docs/training.md)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--num-workers", type=int, metavar="K",
                   help="train data-parallel on K Ray workers (1 CPU each; train.batch_size per worker; rank 0 "
                        "writes the run; docs/cluster.md)")
    p.add_argument("--address", metavar="ADDR",
                   help="with --num-workers: the Ray cluster (HOST:PORT as `ray start --head` prints it, or auto); "
                        "default: a local one")
    p.add_argument("--gpus-per-worker", type=float, default=0, metavar="G",
                   help="with --num-workers: GPUs per worker (NCCL); default 0 (CPU, gloo)")
    p.add_argument("--follow", action="store_true",
                   help="train.data is a build still running: start on its first shards and take in new ones "
                        "as its manifest lists them, until train.max_steps (docs/cluster.md)")


def run(args) -> int:
    from synthseq.config import Override
    from synthseq.errors import UsageError
    from synthseq.pipelines.config import load_config

    overrides = list(args.overrides)
    if args.name is not None:
        if not args.name or args.name in (".", "..") or "/" in args.name or "\\" in args.name:
            raise UsageError(f"--name {args.name!r}: expected a plain folder name (no '/')")
        overrides.append(Override("name", args.name, f"--name {args.name}"))
    if args.resume:
        if args.overwrite:
            raise UsageError("--resume continues a run and --overwrite replaces one: give only one")
        run_dir = Path(args.resume)
        if not run_dir.is_dir():
            raise FileNotFoundError(f"--resume {run_dir}: run directory not found")
        if not args.config and not (run_dir / "config.yaml").is_file():
            raise FileNotFoundError(f"--resume {run_dir}: not a run directory of `synthseq train` (no config.yaml)")
        config_path = args.config or run_dir / "config.yaml"
        cfg = load_config(config_path, overrides)
    else:
        if not args.config:
            raise UsageError("synthseq train: a CONFIG (or --resume RUN_DIR) is required")
        cfg = load_config(args.config, overrides)
        run_dir = Path(args.out) / cfg.name
        if run_dir.exists() and not run_dir.is_dir():
            raise NotADirectoryError(f"{run_dir}: exists and is not a directory")
        if run_dir.is_dir() and any(run_dir.iterdir()) and not args.overwrite:
            what = "a trained run" if (run_dir / "checkpoints" / "last.pt").exists() else "files of an earlier run"
            raise FileExistsError(f"{run_dir}: holds {what}; continue it with --resume {run_dir}, replace it with "
                                  "--overwrite, or choose another --name")

    if args.follow and (args.num_workers is not None or args.address):
        raise UsageError("--follow trains in one process: drop --num-workers/--address")
    if args.num_workers is not None or args.address:
        return _run_distributed(args, cfg, run_dir)
    synthetic = None
    if args.follow:
        from synthseq.training.follow import FollowingPairs

        synthetic = FollowingPairs(cfg.train)

    import torch

    from synthseq.errors import Interrupted
    from synthseq.training.trainer import train

    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads: expected a positive int, got {args.threads}")
        torch.set_num_threads(args.threads)
    created = not run_dir.exists()
    if args.overwrite and run_dir.is_dir():
        import shutil

        log.info("--overwrite: removing the earlier run in %s", run_dir)
        shutil.rmtree(run_dir)
        created = True
    stop = StopRequest()
    try:
        with stop.installed():
            result = train(cfg, run_dir, resume=bool(args.resume), device=args.device,
                           progress=not args.no_progress, stop=stop, synthetic=synthetic)
    except Interrupted as e:
        print(f"synthseq train: {e}; continue with: synthseq train --resume {run_dir}", file=sys.stderr)
        return 130
    except BaseException:
        # a run that failed before its first checkpoint leaves no folder behind (nothing to resume)
        if created and run_dir.is_dir() and not (run_dir / "checkpoints" / "last.pt").exists():
            import shutil

            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    m = result["metrics"]
    summary = ", ".join(f"{k} {m[k]:.4g}" for k in ("loss_P", "P_rot_err_deg", "P_trans_err_m", "loss_D", "loss_G")
                        if k in m)
    log.info("done: %d steps -> %s (%s)", result["step"], result["checkpoint"], summary)
    return 0


def _run_distributed(args, cfg, run_dir) -> int:
    """--num-workers / --address: data-parallel training on Ray workers (synthseq.pipelines.cluster)."""
    import os
    import shutil

    from synthseq.pipelines.cluster import train_on_cluster

    if args.overwrite and run_dir.is_dir():
        log.info("--overwrite: removing the earlier run in %s", run_dir)
        shutil.rmtree(run_dir)
    result = train_on_cluster(cfg, run_dir, num_workers=args.num_workers or 1,
                              address=args.address or os.environ.get("RAY_ADDRESS") or None,
                              gpus_per_worker=args.gpus_per_worker, resume=bool(args.resume), device=args.device)
    log.info("done: %d steps on %d workers -> %s", result["step"], result["workers"], result["checkpoint"])
    return 0


class StopRequest:
    """Ctrl-C / SIGTERM during training: the first one asks the trainer to stop after the current step (it
    saves a checkpoint, then raises ``Interrupted``); a second one, or one before the training loop has
    started, interrupts at once as usual. Calling the object (the trainer does, after each step) says
    whether a stop was asked for."""

    def __init__(self):
        self.requested = False
        self.armed = False  # True once the trainer has called us: the loop runs, a stop can be honoured

    def __call__(self) -> bool:
        self.armed = True
        return self.requested

    def handle(self, signum, frame) -> None:
        if self.requested or not self.armed:
            raise KeyboardInterrupt
        self.requested = True
        print("\nsynthseq train: stopping after this step and saving a checkpoint (Ctrl-C again to quit at once)",
              file=sys.stderr, flush=True)

    @contextmanager
    def installed(self):
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        old = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)
