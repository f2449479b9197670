"""Progress of long loops: a tqdm bar on a terminal, one plain line every few seconds in a log file.

A tqdm bar redraws itself with carriage returns; written to a file or a pipe (``make demo > log``, a CI
job, ``nohup``) that becomes one endless line. :func:`progress` takes tqdm's arguments and returns a tqdm
bar when the stream is a terminal, else a :class:`LineProgress` that prints complete lines::

    build: 12/64 sequences (19%), 0.41 sequences/s, 29 s elapsed, ~127 s left | shards 6

at most every ``interval_s`` seconds (default 10, ``SYNTHSEQ_PROGRESS_INTERVAL`` overrides it) and once
at the end. ``disable=True`` prints nothing at all (``--no-progress``; the command still prints its
own summary).
"""

from __future__ import annotations

import os
import sys
import time

DEFAULT_INTERVAL_S = 10.0


def _interval() -> float:
    try:
        return max(float(os.environ.get("SYNTHSEQ_PROGRESS_INTERVAL", DEFAULT_INTERVAL_S)), 0.0)
    except ValueError:
        return DEFAULT_INTERVAL_S


def is_terminal(stream) -> bool:
    """True when ``stream`` is an interactive terminal (where a redrawing bar makes sense)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress(iterable=None, *, total=None, desc: str = "", unit: str = "it", disable: bool | None = False,
             initial: int = 0, file=None, interval_s: float | None = None, **tqdm_kwargs):
    """A progress reporter with tqdm's interface (``update``, ``set_postfix``, ``close``, iteration).

    Args:
        iterable: optional iterable to wrap. total: expected count (``len(iterable)`` when it has one).
        desc, unit, initial: as tqdm. disable: True prints nothing; None disables off a terminal too
            (tqdm's meaning). file: the stream (default stderr).
        interval_s: seconds between plain lines when ``file`` is not a terminal.
        tqdm_kwargs: passed to tqdm on a terminal (``dynamic_ncols``, ``leave``, ...).

    Returns:
        A ``tqdm`` bar (terminal) or a :class:`LineProgress` (anything else).
    """
    stream = file if file is not None else sys.stderr
    if total is None and iterable is not None:
        try:
            total = len(iterable)
        except TypeError:
            total = None
    if is_terminal(stream):
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=bool(disable), initial=initial,
                    file=stream, **tqdm_kwargs)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, disable=disable is None or bool(disable),
                        initial=initial, file=stream, interval_s=_interval() if interval_s is None else interval_s)


class LineProgress:
    """Progress as complete lines, at most one every ``interval_s`` seconds plus one at the end."""

    def __init__(self, iterable=None, *, total=None, desc: str = "", unit: str = "it", disable: bool = False,
                 initial: int = 0, file=None, interval_s: float = DEFAULT_INTERVAL_S, clock=time.monotonic):
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.disable, self.file, self.interval_s, self._clock = disable, file or sys.stderr, interval_s, clock
        self.n = self.initial = int(initial)
        self.postfix = ""
        self._t0 = self._last = clock()
        self._printed_n = None
        self._closed = False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __len__(self) -> int:
        return int(self.total or 0)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self._clock()
        if not self.disable and now - self._last >= self.interval_s:
            self._last = now
            self._emit(now)

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        items = dict(ordered_dict or {}, **kwargs)
        self.postfix = ", ".join(f"{k} {v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)

    def set_description(self, desc: str = "", refresh: bool = True) -> None:
        self.desc = desc

    def refresh(self) -> None:
        pass

    def write(self, s: str) -> None:
        print(s, file=self.file, flush=True)

    def line(self, now: float | None = None) -> str:
        """The progress line as it would be printed now."""
        now = self._clock() if now is None else now
        elapsed = max(now - self._t0, 1e-9)
        done = self.n - self.initial
        rate = done / elapsed
        head = f"{self.desc}: " if self.desc else ""
        count = f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"
        if self.total:
            count += f" ({100.0 * self.n / self.total:.0f}%)"
        parts = [head + count, f"{rate:.3g} {self.unit}/s", f"{elapsed:.0f} s elapsed"]
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"~{(self.total - self.n) / rate:.0f} s left")
        text = ", ".join(parts)
        return f"{text} | {self.postfix}" if self.postfix else text

    def _emit(self, now: float) -> None:
        self._printed_n = self.n
        try:
            print(self.line(now), file=self.file, flush=True)
        except (OSError, ValueError):  # a closed log stream must not stop the work
            self.disable = True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.disable and self._printed_n != self.n and self.n > self.initial:
            self._emit(self._clock())


def quiet_open3d():
    """Import open3d with its console output limited to errors, and return the module.

    Open3D prints colour-coded ``[Open3D INFO]``/``[Open3D WARNING]`` banners to stdout, where they end up
    in the middle of result tables and piped output; synthseq reports what matters itself.
    """
    import open3d as o3d

    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)
    return o3d


class stdout_to_stderr:
    """Context manager: file descriptor 1 goes to stderr (or, with ``discard``, to /dev/null) inside the
    block, for C++ libraries such as Filament that print banners with ``std::cout``, which
    ``contextlib.redirect_stdout`` cannot catch. A no-op where stdout has no file descriptor."""

    def __init__(self, discard: bool = False):
        self.discard = discard

    def __enter__(self):
        self._saved = None
        try:
            sys.stdout.flush()
            fd = sys.stdout.fileno()
            target = os.open(os.devnull, os.O_WRONLY) if self.discard else os.dup(sys.stderr.fileno())
        except (AttributeError, OSError, ValueError):
            return self
        self._fd = fd
        self._saved = os.dup(fd)
        os.dup2(target, fd)
        os.close(target)
        return self

    def __exit__(self, *exc) -> None:
        if self._saved is not None:
            try:
                sys.stdout.flush()
            except (OSError, ValueError):
                pass
            os.dup2(self._saved, self._fd)
            os.close(self._saved)


class _QuietOpen3DFinder:
    """A meta-path finder that lowers Open3D's verbosity right after ``import open3d`` runs (anywhere)."""

    def find_spec(self, name, path=None, target=None):
        if name != "open3d":
            return None
        import importlib.machinery

        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_quiet(module):
            exec_module(module)
            try:
                module.utility.set_verbosity_level(module.utility.VerbosityLevel.Error)
            except AttributeError:  # a partial or unusual build: leave it as it is
                pass

        loader.exec_module = exec_and_quiet
        return spec


def quiet_open3d_on_import() -> None:
    """From now on, ``import open3d`` (by any module) sets Open3D's console output to errors only.

    The CLI calls this once, so Open3D's colour-coded INFO/WARNING lines never reach stdout (result tables,
    piped output) without every module that uses Open3D having to remember it.
    """
    if "open3d" in sys.modules:
        quiet_open3d()
    elif not any(isinstance(f, _QuietOpen3DFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietOpen3DFinder())
