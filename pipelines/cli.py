"""The `synthseq` command line: one sub-command per module, errors as one line on stderr.

Each sub-command lives in its own module exposing ``configure_parser(parser)`` and ``run(args) -> int``;
those modules import nothing heavy at the top (ray, torch and open3d load inside ``run``), so
``synthseq --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback

# name -> (module, one-line help)
COMMANDS = {
    "build": ("synthseq.pipelines.build", "build a synthetic dataset of HDF5 shards with Ray"),
    "info": ("synthseq.pipelines.inspect", "summarise a dataset directory or a shard"),
    "verify": ("synthseq.pipelines.inspect", "check a dataset's schema and checksums"),
    "train": ("synthseq.pipelines.train", "train the pose estimator (correspondence-based; optional point-cloud GAN)"),
    "evaluate": ("synthseq.pipelines.evaluate", "evaluate a checkpoint on held-out real captures vs identity, ICP and FPFH baselines"),
    "register": ("synthseq.pipelines.register", "register two point clouds, or chain a capture into a trajectory, "
                                                "with the trained pose estimator"),
    "view": ("synthseq.pipelines.view", "play a sequence in an Open3D window, or render screenshots/GIFs"),
    "export": ("synthseq.pipelines.export", "export a sequence as PLY/PCD/NPZ clouds + TUM trajectories"),
    "compare": ("synthseq.pipelines.compare", "compare a dataset's depth, normals, density and patches with real captures"),
}

EPILOG = """examples:
  synthseq build tiny --out data/tiny          # a bundled config by name, or a YAML path
  synthseq info data/tiny
  synthseq train tiny --set train.data=data/tiny
  synthseq view data/tiny/shard-00000.h5 --sequence 0 --screenshot frame.png

Bad input is reported as one line naming its source (FILE:LINE, --set KEY or the flag) and exits 1;
add --debug for the traceback. Anything else is a bug: the traceback is printed with a request to
report it."""

BUG_REPORT = ("this is a bug in synthseq, not a problem with your input: please report it with the "
              "command line and the traceback above")

# third-party module -> the pip extra that installs it (None: part of the base install)
EXTRAS = {"open3d": "render", "pyrender": "render", "OpenGL": "render", "ray": "ray", "torch": "torch",
          "tensorboard": "torch", "matplotlib": "torch"}


class OneLineParser(argparse.ArgumentParser):
    """argparse with its usage errors as one line (``synthseq train: error: argument --threads: invalid int value:
    'x' (synthseq train --help)``) instead of the usage block plus a line; exit status 2 as argparse's."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} ({self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from synthseq import __version__

    parser = OneLineParser(
        prog="synthseq",
        description="Synthetic multi-view point-cloud sequences with exact poses, and a pose estimator "
                    "trained on them with unlabeled real captures.",
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
    from synthseq.progress import quiet_open3d_on_import

    quiet_open3d_on_import()  # Open3D's INFO/WARNING banners stay out of stdout and result tables
    if getattr(args, "_missing", None):
        print(f"synthseq {args.command}: not available in this build ({args._missing} missing)", file=sys.stderr)
        return 2
    try:
        code = int(args._run(args) or 0)
        sys.stdout.flush()  # a closed pipe (`synthseq info ... | head`) shows up here, inside the try
        return code
    except KeyboardInterrupt:
        print("synthseq: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except (SynthseqError, OSError) as e:
        # Project errors are bad input; OSError covers missing/unwritable files, full disks, h5py I/O.
        if debug:
            raise
        print(f"synthseq {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except ImportError as e:
        hint = missing_dependency(e)
        if hint is None or debug:
            raise
        print(f"synthseq {args.command}: error: {hint}", file=sys.stderr)
        return 1
    except Exception:
        if debug:
            raise
        traceback.print_exc()
        print(f"synthseq {args.command}: internal error: {BUG_REPORT}", file=sys.stderr)
        return 1


def _one_line(e: BaseException) -> str:
    msg = str(e) if not isinstance(e, KeyError) or not e.args else str(e.args[0])
    lines = [ln.strip() for ln in msg.splitlines() if ln.strip()]
    return " ".join(lines) or type(e).__name__


def missing_dependency(e: ImportError) -> str | None:
    """One line for an ImportError caused by a missing optional dependency (naming the pip extra), or
    None when the ImportError is something else (a bug)."""
    name = (getattr(e, "name", None) or "").split(".")[0]
    if isinstance(e, ModuleNotFoundError) and name and name != "synthseq":
        extra = EXTRAS.get(name)
        install = f"pip install 'synthseq[{extra}]'" if extra else "pip install synthseq (its base dependencies)"
        return f"this command needs the Python package {name!r}, which is not installed: {install}"
    if not name and "pip install" in str(e):  # our own lazy-import errors name the extra already
        return _one_line(e)
    return None


def _silence_stdout() -> None:
    """After the reader of our stdout went away: send the rest to /dev/null so exit does not complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
