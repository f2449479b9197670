"""Typed config loading: unknown keys, wrong types and bounds name the full key path."""

from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from synthseq.config import apply_overrides, bounded, from_dict, load_yaml, to_dict
from synthseq.errors import ConfigError


@dataclass
class Inner:
    mode: Literal["a", "b"] = "a"
    sigma: float = bounded(1.0, gt=0)


@dataclass
class Outer:
    count: int = bounded(3, gt=0)
    name: str = "x"
    gaps: list[int] = field(default_factory=lambda: [1, 5])
    path: Optional[str] = None
    inner: Inner = field(default_factory=Inner)


def test_defaults_and_values():
    cfg = from_dict(Outer, {"count": 5, "inner": {"sigma": 2}}, "train")
    assert cfg.count == 5 and cfg.inner.sigma == 2.0 and isinstance(cfg.inner.sigma, float)
    assert to_dict(cfg)["gaps"] == [1, 5]


@pytest.mark.parametrize("data, message", [
    ({"cont": 1}, r"train\.cont: unknown key \(known keys: count, gaps, inner, name, path\)"),
    ({"inner": {"sigma": "abc"}}, r"train\.inner\.sigma: expected float, got 'abc'"),
    ({"inner": {"sigma": -1}}, r"train\.inner\.sigma: expected a value > 0, got -1"),
    ({"count": 0}, r"train\.count: expected a value > 0, got 0"),
    ({"count": 2.5}, r"train\.count: expected int, got 2\.5"),
    ({"count": True}, r"train\.count: expected int, got True"),
    ({"inner": {"mode": "c"}}, r"train\.inner\.mode: expected one of 'a', 'b', got 'c'"),
    ({"gaps": [1, "x"]}, r"train\.gaps\[1\]: expected int, got 'x'"),
    ({"inner": 3}, r"train\.inner: expected a mapping, got 3"),
])
def test_errors_name_key_path(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Outer, data, "train")


def test_overrides_parse_yaml_values():
    d = apply_overrides({"train": {"lr": 1}}, ["train.lr=0.5", "train.gaps=[1, 2]", "generate.x.y=abc"])
    assert d == {"train": {"lr": 0.5, "gaps": [1, 2]}, "generate": {"x": {"y": "abc"}}}
    with pytest.raises(ConfigError, match="expected key.path=value"):
        apply_overrides({}, ["train.lr"])


def test_load_yaml_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.yaml: config file not found"):
        load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_yaml(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml: expected a mapping at the top level"):
        load_yaml(lst)
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("a: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(unsafe)
