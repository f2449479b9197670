"""Synthetic scene generation: assets, trajectories, cameras, scene specs, renderers, sensor noise, sequences.

Import-light on purpose: nothing here imports torch, ray, open3d, pyrender or trimesh at import time. The main
API is re-exported lazily::

    from synthseq.generator import GenerateConfig, make_spec, generate_sequence, sequence_seed
"""

from __future__ import annotations

_LAZY = {
    "GenerateConfig": "synthseq.generator.config",
    "load_generate_config": "synthseq.generator.config",
    "resolve_paths": "synthseq.generator.config",
    "SceneSpec": "synthseq.generator.scene",
    "make_spec": "synthseq.generator.scene",
    "sequence_seed": "synthseq.generator.scene",
    "generate_sequence": "synthseq.generator.sequence",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'synthseq.generator' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
