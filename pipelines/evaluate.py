"""`synthseq evaluate`: pose error vs the identity and ICP baselines on held-out real captures (and a synthetic
test set), GAN realism.

    synthseq evaluate --checkpoint RUN_DIR|FILE --real PATH[@START:STOP] [--real ...] [--synthetic DATA_DIR]
                      [--gaps 1 5 10 20 30] [--max-pairs K] --out REPORT_DIR [--overwrite] [--allow-train-data]
    synthseq evaluate --checkpoint none --real ../shared/data/real/tum_fr1_rpy --out report   # baselines only

Refuses captures (or frame ranges) and synthetic sequences the checkpoint trained on, naming them, unless
--allow-train-data (then those rows are marked "seen in training"). Writes REPORT_DIR/report.md,
metrics.json, pairs.csv, config.yaml, plots/*.png and trajectories/<sequence>/*.tum (into a temporary folder,
renamed at the end; an existing REPORT_DIR is refused unless --overwrite), then prints the headline table. Options not given on the command line come from ``--config``'s ``evaluate:``
section (or the defaults of ``EvaluateConfig``); ``synthseq.training.evaluation.evaluate`` checks them
(paths first, before torch or open3d is imported) and resolves ``--device``.
"""

from __future__ import annotations

import dataclasses

from synthseq.training.evaluation import METHODS, evaluate, format_headline


def configure_parser(p) -> None:
    p.add_argument("--checkpoint", metavar="RUN_DIR|FILE",
                   help="run directory or checkpoint of `synthseq train`; 'none' or omitted: baselines only")
    p.add_argument("--real", action="append", default=None, metavar="PATH[@START:STOP]",
                   help="real capture folder (TUM RGB-D, 7-Scenes, point clouds), optionally a frame range "
                        "(STOP exclusive, e.g. tum_fr1_rpy@50:100); repeatable")
    p.add_argument("--synthetic", metavar="DATA_DIR", help="a dataset built by `synthseq build` (synthetic test set)")
    p.add_argument("--gaps", type=int, nargs="+", metavar="D",
                   help="frame gaps (default: 1 5 10 20 30; gaps longer than a sequence are skipped with a note)")
    p.add_argument("--max-pairs", type=int, metavar="K",
                   help="pairs per (sequence, gap) at most, spread over the whole sequence (default 60; 0 = all)")
    p.add_argument("--methods", nargs="+", choices=METHODS,
                   help="methods to run (default: all that apply; the identity row is always included)")
    p.add_argument("--allow-train-data", action="store_true",
                   help="evaluate captures/frame ranges/synthetic sequences the checkpoint trained on (refused "
                        "otherwise); their rows are marked 'seen in training'")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out report directory")
    p.add_argument("--max-depth", type=float, metavar="M", help="depth limit (m) of the baselines' dense clouds")
    p.add_argument("--config", metavar="YAML", help="a synthseq config whose evaluate: section gives the defaults")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config value, e.g. --set evaluate.voxel_m=0.03 (repeatable)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="device for P and G")
    p.add_argument("--out", required=True, metavar="REPORT_DIR",
                   help="report directory (created; an existing one is refused unless --overwrite)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def resolve_config(args):
    """The EvaluateConfig from --config/--set, then the explicit flags on top (checked by ``evaluate``)."""
    from synthseq.pipelines.config import load_config

    changes = {key: value for key, value in (("real", args.real), ("synthetic", args.synthetic),
                                              ("gaps", args.gaps), ("methods", args.methods),
                                              ("max_depth_m", args.max_depth)) if value is not None}
    if args.checkpoint is not None:
        changes["checkpoint"] = None if args.checkpoint.lower() == "none" else args.checkpoint
    if args.max_pairs is not None:
        changes["max_pairs"] = None if args.max_pairs == 0 else args.max_pairs
    return dataclasses.replace(load_config(args.config, args.overrides).evaluate, **changes)


def run(args) -> int:
    from synthseq.progress import progress as tqdm  # a bar on a terminal, plain lines in a log

    progress = None if args.no_progress else (  # one tick per method on a pair (trajectory pairs included)
        lambda total: tqdm(total=total, unit="estimate", desc="evaluate (pairs x methods)"))
    metrics = evaluate(resolve_config(args), args.out, device=args.device, progress=progress,
                       allow_train_data=args.allow_train_data, overwrite=args.overwrite)
    print(format_headline(metrics))
    for note in metrics.get("notes", []):
        print(f"note: {note}")
    print(f"report: {metrics['report']}")
    return 0
