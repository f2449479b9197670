"""The whole synthseq config: one YAML file, one section per stage (generate, build, train, evaluate).

Each section's dataclass lives with its stage; this module composes them, reads YAML with
``yaml.safe_load``, applies ``--set key.path=value`` overrides and writes the resolved config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from synthseq.config import apply_overrides, from_dict, load_yaml, to_dict
from synthseq.generator.config import GenerateConfig
from synthseq.training.config import TrainConfig
from synthseq.training.evaluation.config import EvaluateConfig

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


MAX_SEQUENCES = 10_000_000  # every spec is made up front: more is a typo, not a dataset
MAX_WORKERS = 100_000
DEVICES = ("none", "cpu", "cuda", "auto")
MAX_TASKS_PER_GPU = 64


@dataclass
class BuildConfig:
    """How a dataset is built: how many sequences, how they are grouped into shards, the root seed."""

    num_sequences: int = 8
    sequences_per_shard: int = 4
    seed: int = 0
    workers: int = 0  # 0 = one per CPU of the Ray cluster
    max_retries: int = 2
    # Where each task runs the sensor model, sampling and normals (generate_sequence's ``device``): none =
    # numpy (the reference path; byte-identical to builds before this key), cpu = the torch code on the CPU,
    # cuda = on the task's GPU (one Ray actor per GPU: build.tasks_per_gpu), auto = cuda where Ray gives a
    # task a GPU and torch sees it, else numpy. Recorded in the shards (it changes the random stream).
    device: str = "none"
    tasks_per_gpu: int = 1  # shard builders sharing one GPU (each reserves 1 / tasks_per_gpu of it)

    def __post_init__(self):
        from synthseq.errors import ConfigError

        for name, limit in (("num_sequences", MAX_SEQUENCES), ("sequences_per_shard", MAX_SEQUENCES)):
            value = getattr(self, name)
            if not 0 < value <= limit:
                raise ConfigError(f"build.{name}: expected a positive int up to {limit:,}, got {value}",
                                  key=f"build.{name}")
        if not 0 <= self.workers <= MAX_WORKERS:
            raise ConfigError(f"build.workers: expected an int from 0 to {MAX_WORKERS:,}, got {self.workers}",
                              key="build.workers")
        if self.max_retries < 0:
            raise ConfigError(f"build.max_retries: expected an int >= 0, got {self.max_retries}")
        if self.device not in DEVICES:
            raise ConfigError(f"build.device: expected one of {', '.join(DEVICES)}, got {self.device!r}",
                              key="build.device")
        if not 1 <= self.tasks_per_gpu <= MAX_TASKS_PER_GPU:
            raise ConfigError(f"build.tasks_per_gpu: expected an int from 1 to {MAX_TASKS_PER_GPU}, got "
                              f"{self.tasks_per_gpu}", key="build.tasks_per_gpu")


@dataclass
class Config:
    """The resolved config of a synthseq run."""

    name: str = "synthseq"
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    build: BuildConfig = field(default_factory=BuildConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)


def resolve_config_path(path) -> Path:
    """A config path as given, or the name of a bundled config (``tiny``, ``default``)."""
    p = Path(path)
    if p.is_file():
        return p
    bundled = CONFIG_DIR / (p.name if p.suffix else f"{p.name}.yaml")
    if not p.exists() and bundled.is_file() and len(p.parts) == 1:
        return bundled
    return p


def load_config(path=None, overrides: list[str] | None = None) -> Config:
    """Load a config file (or the defaults when ``path`` is None) and apply ``key.path=value`` overrides.

    Raises:
        FileNotFoundError: the file does not exist.
        ConfigError: unknown key, wrong type or value out of range, naming the full key path
            (and the file).
    """
    from synthseq.config import locate_error
    from synthseq.errors import ConfigError

    file = None if path is None else resolve_config_path(path)
    data = {} if file is None else _resolve_mesh_paths(load_yaml(file), file.resolve().parent)
    data = apply_overrides(data, overrides or [], defaults=to_dict(Config()))  # its errors name the override
    try:
        return from_dict(Config, data)
    except ConfigError as e:
        # Name where the bad value came from: `--set KEY=VALUE` / the flag, else FILE:LINE.
        raise locate_error(e, overrides, file) from None


def _resolve_mesh_paths(data: dict, base: Path) -> dict:
    """Make the relative mesh paths written in a config file (generate.objects.mesh_dir / mesh_files)
    absolute against the file's folder, as users of a config file expect. Paths given with ``--set`` are
    applied afterwards and stay relative to the current directory."""
    objects = (data.get("generate") or {}).get("objects") if isinstance(data.get("generate"), dict) else None
    if not isinstance(objects, dict):
        return data

    def fix(p):
        if not isinstance(p, str):
            return p
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else (base / q).resolve())

    objects = dict(objects)
    if "mesh_dir" in objects:
        objects["mesh_dir"] = fix(objects["mesh_dir"])
    if isinstance(objects.get("mesh_files"), list):
        objects["mesh_files"] = [fix(p) for p in objects["mesh_files"]]
    return {**data, "generate": {**data["generate"], "objects": objects}}


def config_to_dict(cfg: Config) -> dict:
    return to_dict(cfg)


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML text (readable by ``load_config``)."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
