"""The project's error types: what the CLI turns into one line on stderr and a non-zero exit."""


class SynthseqError(Exception):
    """Base of every error synthseq raises on bad input (config, meshes, shards, capture folders)."""


class ConfigError(SynthseqError, ValueError):
    """A config value is unknown, of the wrong type or out of range; the message names the key path."""


class DataError(SynthseqError, ValueError):
    """A data file (mesh, shard, capture, point cloud) is missing, malformed or inconsistent; names the file."""


class FormatVersionError(DataError):
    """A shard was written with a format_version this reader does not understand."""
