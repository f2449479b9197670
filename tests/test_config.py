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
    with pytest.raises(ConfigError, match=r"bad.yaml:2:1: not valid YAML"):
        load_yaml(bad)
    tab = tmp_path / "tab.yaml"
    tab.write_text("train:\n  lr: 1\n\tgaps: [1]\n")
    with pytest.raises(ConfigError, match=r"tab.yaml:3:1: not valid YAML"):
        load_yaml(tab)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml: expected a mapping at the top level"):
        load_yaml(lst)
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("a: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(unsafe)


# ------------------------------------------------------------------ where a bad value came from (issue 14)

def _load(path, overrides):
    from synthseq.pipelines.config import load_config

    return load_config(path, overrides)


@pytest.mark.parametrize("overrides, message", [
    (["train.batch_size=abc"], r"^--set train\.batch_size=abc: train\.batch_size: expected int"),
    (["generate.cameras.width=-5"], r"^--set generate\.cameras\.width=-5: generate\.cameras\.width: expected"),
    (["train.nope=1"], r"^--set train\.nope=1: train\.nope: unknown key"),
])
def test_override_errors_name_the_override_not_the_file(overrides, message):
    with pytest.raises(ConfigError, match=message):
        _load("tiny", overrides)


def test_flag_errors_name_the_flag():
    from synthseq.config import Override

    with pytest.raises(ConfigError, match=r"^--num-sequences -3: build\.num_sequences"):
        _load("tiny", [Override("build.num_sequences", -3, "--num-sequences -3")])


def test_file_errors_name_file_and_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("generate:\n  num_frames: 4\n  fps: abc\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:3: generate\.fps: expected float, got 'abc'"):
        _load(cfg, [])
    # a value fixed by --set is not blamed on the file, and a later error in the file still is
    cfg.write_text("generate:\n  fps: abc\ntrain:\n  batch_size: 0\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:4: train\.batch_size: expected a value > 0"):
        _load(cfg, ["generate.fps=3"])


def test_override_never_turns_a_scalar_into_a_mapping(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("generate:\n  sensor: ideal\n")
    with pytest.raises(ConfigError, match=r"--set generate\.sensor\.dropout_prob=0\.01: generate\.sensor is "
                                          r"'ideal', not a mapping"):
        _load(cfg, ["generate.sensor.dropout_prob=0.01"])
    with pytest.raises(ConfigError, match=r"train\.lr is 1, not a mapping"):
        apply_overrides({"train": {"lr": 1}}, ["train.lr.x=2"])
    # the defaults count too when the file does not set the key: train.num_points is an int
    with pytest.raises(ConfigError, match=r"train\.num_points is \d+, not a mapping"):
        _load(None, ["train.num_points.x=2"])
    # setting the value itself, or a key of a mapping, is fine
    assert _load(cfg, ["generate.sensor=kinect"]).generate.sensor is not None
    assert _load(cfg, ["generate.cameras.width=100"]).generate.cameras.width == 100
