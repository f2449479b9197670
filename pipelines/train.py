"""`synthseq train`: train the point-cloud GAN + pose network on built shards and real captures.

    synthseq train CONFIG [--set key.path=value ...] [--device cpu|cuda] [--out runs/] [--threads N]
    synthseq train --resume runs/NAME [--set train.max_steps=2000]

Writes ``OUT/<name>/`` (``name`` from the config): config.yaml, checkpoints/last.pt, tb/ (TensorBoard),
samples/*.png, metrics.jsonl. torch is imported inside ``run`` only.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def configure_parser(p) -> None:
    p.add_argument("config", nargs="?", help="config YAML (or a bundled name: tiny, default); "
                                             "with --resume, defaults to RUN_DIR/config.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override any config value, e.g. --set train.data=data/tiny (repeatable)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override train.device")
    p.add_argument("--out", default="runs", help="parent of the run directory (default: runs/)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch CPU threads (default: torch's choice; on a busy 2-core machine 1 was 4-5x "
                        "faster than 2, see docs/training.md)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from synthseq.pipelines.config import load_config

    if args.resume:
        run_dir = Path(args.resume)
        if not run_dir.is_dir():
            raise FileNotFoundError(f"--resume {run_dir}: run directory not found")
        config_path = args.config or run_dir / "config.yaml"
        cfg = load_config(config_path, args.overrides)
    else:
        if not args.config:
            raise ValueError("synthseq train: a CONFIG (or --resume RUN_DIR) is required")
        cfg = load_config(args.config, args.overrides)
        run_dir = Path(args.out) / cfg.name
        if (run_dir / "checkpoints" / "last.pt").exists():
            raise FileExistsError(f"{run_dir}: holds a trained run; continue it with --resume {run_dir} "
                                  "or choose another --out / name")

    import torch

    from synthseq.training.trainer import train

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads: expected a positive int, got {args.threads}")
        torch.set_num_threads(args.threads)
    result = train(cfg, run_dir, resume=bool(args.resume), device=args.device, progress=not args.no_progress)
    m = result["metrics"]
    summary = ", ".join(f"{k} {m[k]:.4g}" for k in ("loss_P", "P_rot_err_deg", "P_trans_err_m", "loss_D", "loss_G")
                        if k in m)
    log.info("done: %d steps -> %s (%s)", result["step"], result["checkpoint"], summary)
    return 0
