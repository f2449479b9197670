"""Typed configs: dataclasses filled from YAML dicts, with errors that name the full key path.

Every stage declares its config as a (frozen or plain) dataclass with annotated fields and defaults;
``from_dict(TrainConfig, data, "train")`` checks unknown keys, types (int, float, bool, str, Literal,
Optional, list/tuple, dict, nested dataclasses) and numeric bounds declared with ``bounded(...)``:

    lr: float = bounded(1e-3, gt=0)     # "train.lr: expected a value > 0, got -1"
"""

from __future__ import annotations

import dataclasses
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
        raise ConfigError(f"{path}: expected {names}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected bool, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected int, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected float, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected str, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if origin is tuple and args:
            if len(value) != len(args):
                raise ConfigError(f"{path}: expected a list of {len(args)} items, got {value!r}")
            return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        return [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
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
        raise ConfigError(f"{path or '<root>'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        key_path = f"{path}.{key}" if path else str(key)
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{key_path}: unknown key (known keys: {known})")
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
                    raise ConfigError(f"{key_path}: expected a value {sym} {bound}, got {value!r}")


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


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to a nested dict, returning a new dict.

    Raises:
        ConfigError: on an override without ``=`` or an empty key.
    """
    import copy

    out = copy.deepcopy(data) if data else {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".")]
        if not all(parts):
            raise ConfigError(f"--set {item!r}: empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({e.__class__.__name__})") from None
        node = out
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
    return out


def load_yaml(path) -> dict:
    """Read a YAML mapping with ``yaml.safe_load``; errors name the file.

    Raises:
        FileNotFoundError: the file does not exist.
        ConfigError: not YAML, or not a mapping at the top.
    """
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    return data
