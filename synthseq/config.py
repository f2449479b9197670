"""Typed configs: dataclasses filled from YAML dicts, with errors that name the full key path.

Every stage declares its config as a (frozen or plain) dataclass with annotated fields and defaults;
``from_dict(TrainConfig, data, "train")`` checks unknown keys, types (int, float, bool, str, Literal,
Optional, list/tuple, dict, nested dataclasses) and numeric bounds declared with ``bounded(...)``:

    lr: float = bounded(1e-3, gt=0)     # "train.lr: expected a value > 0, got -1"
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, Literal

import yaml

from synthseq.errors import ConfigError


def bounded(default, *, gt=None, ge=None, le=None, lt=None, **kwargs):
    """A dataclass field with numeric bounds, checked by ``from_dict`` (and ``check_bounds``)."""
    meta = {k: v for k, v in dict(gt=gt, ge=ge, le=le, lt=lt).items() if v is not None}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta, **kwargs)
    return dataclasses.field(default=default, metadata=meta, **kwargs)


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if tp is float:
        return "float"
    if tp is int:
        return "int"
    if tp is bool:
        return "bool"
    if tp is str:
        return "str"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin in (list, tuple):
        return "a list"
    if origin is dict:
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(tp, value, path: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, path)
            except ConfigError as e:
                errors.append(str(e))
        names = " or ".join(_type_name(a) for a in args if a is not type(None))
        if type(None) in args:
            names += " or null"
        raise ConfigError(f"{path}: expected {names}, got {value!r}", key=path)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}", key=path)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected bool, got {value!r}", key=path)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected int, got {value!r}", key=path)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected float, got {value!r}", key=path)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected str, got {value!r}", key=path)
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}", key=path)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if origin is tuple and args:
            if len(value) != len(args):
                raise ConfigError(f"{path}: expected a list of {len(args)} items, got {value!r}", key=path)
            return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        return [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}", key=path)
        kt, vt = args if args else (Any, Any)
        return {_convert(kt, k, path): _convert(vt, v, f"{path}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    raise TypeError(f"{path}: unsupported config type {tp!r}")  # a programming error, not user input


def from_dict(cls, data, path: str = ""):
    """Build dataclass ``cls`` from a mapping, checking keys, types and bounds.

    Args:
        cls: a dataclass type whose fields all have defaults (missing keys keep them).
        data: a mapping (from ``yaml.safe_load``) or None (all defaults).
        path: the key path of ``data`` in the whole config, for error messages (``"train"``).

    Raises:
        ConfigError: naming the full key path, what was expected and what arrived.
    """
    if data is None:
        data = {}
    if dataclasses.is_dataclass(data) and isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{path or '<root>'}: expected a mapping, got {data!r}", key=path or None)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        key_path = f"{path}.{key}" if path else str(key)
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{key_path}: unknown key (known keys: {known})", key=key_path)
        kwargs[key] = _convert(hints[key], value, key_path)
    obj = cls(**kwargs)
    check_bounds(obj, path)
    return obj


def check_bounds(obj, path: str = "") -> None:
    """Check the ``bounded`` metadata of every field of dataclass ``obj`` (not recursive)."""
    for f in dataclasses.fields(obj):
        meta = f.metadata
        if not meta:
            continue
        value = getattr(obj, f.name)
        values = value if isinstance(value, (list, tuple)) else [value]
        key_path = f"{path}.{f.name}" if path else f.name
        for v in values:
            if v is None:
                continue
            for op, bound in meta.items():
                ok = {"gt": v > bound, "ge": v >= bound, "lt": v < bound, "le": v <= bound}.get(op, True)
                if not ok:
                    sym = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}[op]
                    raise ConfigError(f"{key_path}: expected a value {sym} {bound}, got {value!r}", key=key_path)


def to_dict(obj) -> dict:
    """A plain dict (lists, not tuples) of a config dataclass: what gets written as YAML/JSON."""

    def plain(v):
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(obj))


class Override(str):
    """A ``key.path=value`` override that came from a command-line flag rather than ``--set``.

    Behaves as the plain string; ``source`` is what the user typed (``--num-sequences 64``), so an error
    about the value names the flag instead of ``--set build.num_sequences``.
    """

    source: str

    def __new__(cls, key: str, value, source: str):
        obj = super().__new__(cls, f"{key}={value}")
        obj.source = source
        return obj


def _split_override(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key.path=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or not all(key.split(".")):
        raise ConfigError(f"--set {item!r}: empty key")
    return key, raw


def override_source(item: str) -> str:
    """How the user wrote override ``item``: ``--set key=value``, or the flag of an :class:`Override`."""
    return getattr(item, "source", None) or f"--set {item}"


def apply_overrides(data: dict, overrides: list[str], defaults: dict | None = None) -> dict:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to a nested dict, returning a new dict.

    An override never turns a value into a mapping: ``--set generate.sensor.dropout_prob=0.01`` where
    ``generate.sensor`` is ``ideal`` (in ``data``, or in ``defaults`` when ``data`` does not set it) is an
    error, not a silent switch to another sensor model.

    Args:
        data: the config as read from YAML. overrides: ``key.path=value`` strings (or :class:`Override`).
        defaults: the full default config as plain dicts, to check the scalar-to-mapping case where
            ``data`` does not mention the key.

    Raises:
        ConfigError: an override without ``=``, an empty key, a value that is not YAML, or a key below a
            value that is not a mapping; the message names the override.
    """
    import copy

    out = copy.deepcopy(data) if data else {}
    for item in overrides or []:
        key, raw = _split_override(item)
        parts = key.split(".")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"{override_source(item)}: value is not valid YAML "
                              f"({e.__class__.__name__})") from None
        node, dnode = out, defaults if isinstance(defaults, dict) else None
        for depth, p in enumerate(parts[:-1]):
            here = node.get(p) if p in node else (dnode.get(p) if dnode is not None else None)
            if here is not None and not isinstance(here, dict):
                prefix = ".".join(parts[:depth + 1])
                raise ConfigError(
                    f"{override_source(item)}: {prefix} is {here!r}, not a mapping, so it has no key "
                    f"{parts[depth + 1]!r}; set {prefix} itself (e.g. --set {prefix}={{...}})", key=prefix)
            dnode = dnode.get(p) if isinstance(dnode, dict) and isinstance(dnode.get(p), dict) else None
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
    return out


_KEY_PREFIX = re.compile(r"^([A-Za-z_][\w.\[\]]*): ")


def error_key(error: ConfigError) -> str | None:
    """The key path a ConfigError is about: its ``key``, else the ``key.path:`` its message starts with."""
    if getattr(error, "key", None):
        return error.key
    m = _KEY_PREFIX.match(str(error))
    return m.group(1) if m else None


def _covers(override_key: str, key: str) -> bool:
    """True when an error about ``key`` is about the value set by ``override_key``."""
    return (key == override_key or key.startswith(override_key + ".") or key.startswith(override_key + "[")
            or override_key.startswith(key + "."))


def locate_error(error: ConfigError, overrides: list[str] | None = None, path=None) -> ConfigError:
    """The same error with its source in front: ``--set KEY=VALUE`` (or the flag) when the offending value
    came from an override, else ``FILE:LINE`` of the key in config file ``path`` (``FILE`` when the line
    is unknown), else unchanged.
    """
    key = error_key(error)
    message = str(error)
    if key:
        for item in reversed(list(overrides or [])):
            try:
                okey, _ = _split_override(item)
            except ConfigError:
                continue
            if _covers(okey, key):
                return ConfigError(f"{override_source(item)}: {message}", key=key)
    if path is None:
        return error
    line = yaml_key_lines(path).get(key) if key else None
    return ConfigError(f"{path}:{line}: {message}" if line else f"{path}: {message}", key=key)


def yaml_key_lines(path) -> dict[str, int]:
    """{key path: 1-based line} of every mapping key and list item in a YAML file ({} if unreadable)."""
    from pathlib import Path

    try:
        root = yaml.compose(Path(path).read_text(), Loader=yaml.SafeLoader)
    except (OSError, yaml.YAMLError):
        return {}
    out: dict[str, int] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                name = f"{prefix}.{k.value}" if prefix else str(k.value)
                out[name] = k.start_mark.line + 1
                walk(v, name)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                name = f"{prefix}[{i}]"
                out[name] = v.start_mark.line + 1
                walk(v, name)

    if root is not None:
        walk(root, "")
    return out


def load_yaml(path) -> dict:
    """Read a YAML mapping with ``yaml.safe_load``; errors name the file (and line and column).

    Raises:
        FileNotFoundError: the file does not exist.
        ConfigError: not YAML (``FILE:LINE:COLUMN: not valid YAML: ...``), or not a mapping at the top.
    """
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(p)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        context = getattr(e, "context", None)
        detail = f"{problem} ({context})" if context else problem
        raise ConfigError(f"{where}: not valid YAML: {detail}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not a text file ({e.reason} at byte {e.start})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    return data
