"""The project's error types: what the CLI turns into one line on stderr and a non-zero exit.

Anything else that escapes a command is a bug: the CLI prints its traceback and asks for a report.
Each type also derives from ``ValueError`` so library callers that catch ``ValueError`` keep working.
"""


class SynthseqError(Exception):
    """Base of every error synthseq raises on bad input (config, meshes, shards, capture folders)."""


class ConfigError(SynthseqError, ValueError):
    """A config value is unknown, of the wrong type or out of range; the message names the key path.

    Args:
        message: the one-line message, starting with the key path (``train.lr: expected ...``).
        key: the full key path of the offending value (``train.lr``), when known; the CLI uses it to say
            whether the value came from ``--set KEY``, a flag or the config file.
    """

    def __init__(self, message: str = "", key: str | None = None):
        super().__init__(message)
        self.key = key


class UsageError(SynthseqError, ValueError):
    """A command-line argument is invalid (a value out of its stated limits, a bad combination of flags)."""


class DataError(SynthseqError, ValueError):
    """A data file (mesh, shard, capture, point cloud) is missing, malformed or inconsistent; names the file."""


class FormatVersionError(DataError):
    """A shard was written with a format_version this reader does not understand."""


class Interrupted(SynthseqError):
    """A long command stopped at a safe point on Ctrl-C / SIGTERM after saving its state (a checkpoint)."""
