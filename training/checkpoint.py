"""Training checkpoints: atomic save, ``weights_only`` load, and loaders of the trained networks.

A checkpoint (``RUN_DIR/checkpoints/last.pt``) is a dict of tensors and plain Python values only, so it
loads with ``torch.load(weights_only=True)`` (no pickled objects)::

    format      "synthseq-train"          version   1 (CHECKPOINT_VERSION)
    step        int: optimisation steps done
    config      dict: the resolved config ({"name": ..., "train": {...}, ...}; at least "train")
    models      {"G": state_dict, "D": state_dict, "P": state_dict, "P_ema": state_dict}
    optimizers  {"G": state_dict, "D": state_dict, "P": state_dict}  (Adam)
    rng         {"python": tuple, "numpy": dict, "torch": uint8 tensor, "cuda": list of tensors}
    metrics     dict[str, float]: the last logged row
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from synthseq.errors import DataError

CHECKPOINT_FORMAT = "synthseq-train"
CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "last.pt"


def checkpoint_path(path_or_run_dir) -> Path:
    """The checkpoint file of a run directory (``RUN/checkpoints/last.pt``), or ``path`` if it is a file."""
    p = Path(path_or_run_dir)
    if p.is_dir():
        for candidate in (p / "checkpoints" / CHECKPOINT_NAME, p / CHECKPOINT_NAME):
            if candidate.is_file():
                return candidate
        return p / "checkpoints" / CHECKPOINT_NAME
    return p


def save_checkpoint(state: dict, path) -> Path:
    """Write ``state`` with ``torch.save`` to ``path`` atomically (``path.tmp``, fsync, rename).

    A crash (kill -9) during the write leaves the previous checkpoint intact under ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path_or_run_dir, map_location="cpu") -> dict:
    """Load a training checkpoint with ``torch.load(weights_only=True)``.

    Args:
        path_or_run_dir: a ``.pt`` file or a run directory (``runs/<name>``).
        map_location: passed to ``torch.load``.

    Returns:
        The checkpoint dict (see the module docstring).

    Raises:
        FileNotFoundError: no checkpoint there.
        DataError: not a synthseq training checkpoint, or of an unknown version.
    """
    path = checkpoint_path(path_or_run_dir)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training checkpoint (expected RUN_DIR/checkpoints/{CHECKPOINT_NAME})")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch's own text misleads here (see describe_load_error): say what it means
        raise DataError(f"{path}: {describe_load_error(e, path)}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"{path}: not a synthseq training checkpoint (format {state.get('format')!r})"
                        if isinstance(state, dict) else f"{path}: not a synthseq training checkpoint")
    if state.get("version") != CHECKPOINT_VERSION:
        raise DataError(f"{path}: checkpoint version {state.get('version')} but this synthseq reads "
                        f"version {CHECKPOINT_VERSION}")
    return state


def describe_load_error(error: Exception, path) -> str:
    """What a failed ``torch.load(weights_only=True)`` means, in words that do not mislead.

    torch's messages are not passed on: a file holding pickled objects comes with advice to retry with
    ``weights_only=False`` (unsafe: it runs code from the file), and a truncated file gives
    ``[Errno 22] Invalid argument`` or a zip-reader error depending on where it was cut.
    """
    import pickle

    size = Path(path).stat().st_size if Path(path).is_file() else 0
    if isinstance(error, pickle.UnpicklingError) or "weights only" in str(error).lower():
        return ("holds Python objects other than tensors and plain values, so it is not a synthseq checkpoint; "
                "refusing to unpickle it (that would run code from the file)")
    if size == 0:
        return "is empty (0 bytes): the checkpoint was not written completely"
    if isinstance(error, (OSError, EOFError)) or "zip archive" in str(error) or "central directory" in str(error):
        return (f"is truncated or corrupt ({size} bytes, not a complete torch checkpoint); it was not written "
                "completely or was damaged in a copy")
    return f"is not a torch checkpoint ({size} bytes; {type(error).__name__})"


def train_config_of(state: dict):
    """The ``TrainConfig`` a checkpoint was trained with."""
    from synthseq.config import from_dict
    from synthseq.training.config import TrainConfig

    return from_dict(TrainConfig, state["config"]["train"], "train")


def _load_model(path_or_run_dir, name: str, device):
    """Network ``name`` of a checkpoint, in eval mode on ``device``, and the run's TrainConfig.

    Raises:
        FileNotFoundError / DataError: no checkpoint, not one (``load_checkpoint``), or weights this synthseq's
            models cannot take (another architecture, a network the run did not train).
    """
    from synthseq.training.models import build_models

    state = load_checkpoint(path_or_run_dir, map_location="cpu")
    try:
        cfg = train_config_of(state)
        model = build_models(cfg.model)[name.split("_")[0]]
        model.load_state_dict(state["models"][name])
    except (RuntimeError, KeyError) as e:  # a state_dict of another architecture, or a missing network
        first = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        raise DataError(f"{checkpoint_path(path_or_run_dir)}: cannot load the networks with this synthseq's "
                        f"models ({first})") from None
    return model.to(device).eval(), cfg


def load_pose_model(path_or_run_dir, device="cpu", ema: bool = False):
    """The trained pose network, in eval mode: ``P(points_a, points_b) -> (B, 4, 4) a_from_b``.

    ``a_from_b`` = cam_t_from_cam_{t+d} for ``points_a`` from frame t and ``points_b`` from frame t+d
    (both (B, N, 3) float32, their own camera frames, OpenCV axes, metres).

    Args:
        path_or_run_dir: checkpoint file or run directory.
        device: torch device for the model.
        ema: return the EMA teacher instead of the trained student.

    Returns:
        (P, cfg): the ``PoseNet`` and the run's ``TrainConfig``.
    """
    return _load_model(path_or_run_dir, "P_ema" if ema else "P", device)


def load_refiner(path_or_run_dir, device="cpu"):
    """The trained refiner G, in eval mode: ``G(x_s).points`` is the refined (B, N, 3) cloud.

    Returns:
        (G, cfg): the ``Refiner`` and the run's ``TrainConfig``.
    """
    return _load_model(path_or_run_dir, "G", device)


def rng_state() -> dict:
    """The global RNG states (python, numpy, torch, cuda) as plain values and tensors."""
    import random

    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict) -> None:
    """Restore the global RNG states saved by ``rng_state``."""
    import random

    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
