"""The `synthseq` command line: one sub-command per module, errors as one line on stderr.

Each sub-command lives in its own module exposing ``configure_parser(parser)`` and ``run(args) -> int``;
those modules import nothing heavy at the top (ray, torch and open3d load inside ``run``), so
``synthseq --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# name -> (module, one-line help)
COMMANDS = {
    "build": ("synthseq.pipelines.build", "build a synthetic dataset of HDF5 shards with Ray"),
    "info": ("synthseq.pipelines.inspect", "summarise a dataset directory or a shard"),
    "verify": ("synthseq.pipelines.inspect", "check a dataset's schema and checksums"),
    "train": ("synthseq.pipelines.train", "train the point-cloud GAN + pose network"),
    "evaluate": ("synthseq.pipelines.evaluate", "evaluate a checkpoint on real captures vs ICP baselines"),
    "view": ("synthseq.pipelines.view", "play a sequence in an Open3D window, or render screenshots/GIFs"),
    "export": ("synthseq.pipelines.export", "export a sequence as PLY/PCD/NPZ clouds + TUM trajectories"),
}

EPILOG = """examples:
  synthseq build synthseq/pipelines/configs/tiny.yaml --out data/tiny
  synthseq info data/tiny
  synthseq train pipelines/configs/default.yaml --set train.data=data/tiny
  synthseq view data/tiny/shard-00000.h5 --sequence 0 --screenshot frame.png

Errors are printed as one line; add --debug for the traceback."""


def build_parser() -> argparse.ArgumentParser:
    from synthseq import __version__

    parser = argparse.ArgumentParser(
        prog="synthseq",
        description="Synthetic multi-view point-cloud sequences with exact poses, and a self-supervised "
                    "point-cloud GAN + pose trainer.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"synthseq {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks and debug logging")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise
            p.set_defaults(_missing=module_name)
            continue
        configure = getattr(module, f"configure_{name}_parser", None) or module.configure_parser
        runner = getattr(module, f"run_{name}", None) or module.run
        configure(p)
        p.set_defaults(_run=runner)
    return parser


def main(argv: list[str] | None = None) -> int:
    from synthseq.errors import SynthseqError

    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 2
    if getattr(args, "_missing", None):
        print(f"synthseq {args.command}: not available in this build ({args._missing} missing)", file=sys.stderr)
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("synthseq: interrupted", file=sys.stderr)
        return 130
    except (SynthseqError, ValueError, OSError, KeyError, ImportError) as e:
        # OSError covers missing/unwritable files, full disks and h5py's I/O errors.
        if debug:
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"synthseq {args.command}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
