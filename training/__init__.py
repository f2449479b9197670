"""Stage 2: the refiner G, discriminator D and pose network P, their losses, the trainer and checkpoints.

Importing this package does not import torch (``synthseq.pipelines.config`` reads ``training.config``);
``train``, ``load_checkpoint``, ``load_pose_model`` and ``load_refiner`` load it on first use.
"""

_LAZY = {
    "train": "synthseq.training.trainer",
    "Trainer": "synthseq.training.trainer",
    "load_checkpoint": "synthseq.training.checkpoint",
    "load_pose_model": "synthseq.training.checkpoint",
    "load_refiner": "synthseq.training.checkpoint",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'synthseq.training' has no attribute {name!r}")
