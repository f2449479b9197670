"""The trainer's data: the pair datasets a config names, and step-keyed batch loading.

Determinism: the batch of step s is a pure function of (seed, stream, s) (``step_batches``), and item i of
epoch e is ``ds[i]`` after ``ds.set_epoch(e)`` in whichever process reads it (``EpochKeyed``), so N steps +
resume + M steps read the same samples as N + M steps, with any number of workers or ranks.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from synthseq.datasets.torch import RealPairs, SyntheticPairs, collate_pairs
from synthseq.errors import ConfigError
from synthseq.training.config import TrainConfig

log = logging.getLogger(__name__)


def step_batches(n: int, batch_size: int, seed: int, stream: int, step: int) -> tuple[np.ndarray, int]:
    """The dataset indices of step ``step``'s batch, and its epoch; a pure function of its arguments.

    Epoch e visits ``permutation(n)`` drawn from (seed, stream, e) in consecutive slices of ``batch_size``
    (the last incomplete slice is dropped); a dataset smaller than a batch is repeated to fill it.
    """
    per_epoch = max(n // batch_size, 1)
    epoch, k = divmod(int(step), per_epoch)
    perm = np.random.default_rng([int(seed), int(stream), epoch]).permutation(n)
    if n < batch_size:
        perm = np.resize(perm, batch_size)
    return perm[k * batch_size:(k + 1) * batch_size], epoch


class StepBatchSampler(Sampler):
    """Yields rank ``rank``'s batches of steps [start, stop) as lists of (index, epoch) keys: step s's global
    batch is ``step_batches(n, world_size * batch_size, ...)`` and rank r takes its items [r*b, (r+1)*b)
    (one process: the whole batch)."""

    def __init__(self, n: int, batch_size: int, seed: int, stream: int, start: int, stop: int,
                 world_size: int = 1, rank: int = 0):
        self.n, self.batch_size, self.seed, self.stream = n, batch_size, seed, stream
        self.start, self.stop, self.world_size, self.rank = start, stop, world_size, rank

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)

    def __iter__(self):
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        for step in range(self.start, self.stop):
            idx, epoch = step_batches(self.n, self.world_size * self.batch_size, self.seed, self.stream, step)
            yield [(int(i), epoch) for i in idx[lo:hi]]


class EpochKeyed(Dataset):
    """Wraps a Dataset so that item (i, epoch) is ``ds[i]`` after ``ds.set_epoch(epoch)`` (if it has one),
    in whichever process reads it: the sample does not depend on the worker or on what was read before."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, key):
        i, epoch = key
        if hasattr(self.ds, "set_epoch"):
            self.ds.set_epoch(epoch)
        return self.ds[i]


class Subset(Dataset):
    """The items ``indices`` of a Dataset (``set_epoch`` passed through)."""

    def __init__(self, ds, indices):
        self.ds, self.indices = ds, [int(i) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.ds, "set_epoch"):
            self.ds.set_epoch(epoch)

    def __getitem__(self, i):
        return self.ds[self.indices[i]]


def make_loader(ds, cfg: TrainConfig, stream: int, start: int, stop: int, world_size: int = 1,
                rank: int = 0) -> DataLoader:
    """A DataLoader over (rank ``rank``'s slice of) the batches of steps [start, stop) of dataset ``ds``
    (stream 0 synthetic, 1 real)."""
    sampler = StepBatchSampler(len(ds), cfg.batch_size, cfg.seed, stream, start, stop, world_size, rank)
    return DataLoader(EpochKeyed(ds), batch_sampler=sampler, collate_fn=collate_pairs, num_workers=cfg.num_workers,
                      pin_memory=torch.cuda.is_available() and cfg.device != "cpu")


def check_data_paths(cfg: TrainConfig, data: bool = True) -> None:
    """Check that ``train.data`` (if ``data``) and every ``train.real[i]`` exist.

    Raises:
        ConfigError: naming the key (``train.data``, ``train.real[1]``) and the path.
    """
    if not data:
        pass
    elif cfg.data is None:
        raise ConfigError("train.data: not set (a dataset directory written by `synthseq build`; "
                          "--set train.data=DIR)")
    elif not Path(cfg.data).is_dir():
        raise ConfigError(f"train.data: dataset directory not found: {cfg.data}")
    from synthseq.datasets.real import parse_capture_spec  # PATH@START:STOP frame ranges

    for i, p in enumerate(cfg.real):
        try:
            path = parse_capture_spec(p).path
        except ValueError as e:
            raise ConfigError(f"train.real[{i}]: {e}", key=f"train.real[{i}]") from None
        if not path.exists():
            raise ConfigError(f"train.real[{i}]: capture not found: {p}")


def synthetic_transform(cfg: TrainConfig):
    """The augmentation of synthetic pairs (``augment_rotation_deg`` / ``augment_translation_m``), or None."""
    if cfg.augment_rotation_deg <= 0 and cfg.augment_translation_m <= 0:
        return None
    from synthseq.datasets.transforms import RandomRigid

    return RandomRigid(cfg.augment_rotation_deg, cfg.augment_translation_m, independent=True)


def datasets_from_config(cfg: TrainConfig, synthetic: bool = True, real: bool = True):
    """The pair datasets named by the config: (``SyntheticPairs(train.data)`` or None,
    ``RealPairs(train.real)`` or None when ``train.real`` is empty); paths are checked first."""
    check_data_paths(cfg, data=synthetic)
    syn_ds = None
    if synthetic:
        # train.views unset: the views whose camera moves (a static rig view gives only identity pairs)
        views = cfg.views if cfg.views is not None else "moving"
        syn_ds = SyntheticPairs(cfg.data, gaps=cfg.gaps, num_points=cfg.num_points, seed=cfg.seed,
                                views=views, transform=synthetic_transform(cfg))
        if len(syn_ds) == 0 and cfg.views is None:
            log.warning("%s: no view has a moving camera: pairs from every view (identity camera motion only)",
                        cfg.data)
            syn_ds = SyntheticPairs(cfg.data, gaps=cfg.gaps, num_points=cfg.num_points, seed=cfg.seed,
                                    transform=synthetic_transform(cfg))
        if len(syn_ds) == 0:
            which = cfg.views if cfg.views is not None else "all"
            raise ConfigError(f"train.views: no synthetic pairs in {cfg.data} for views {which} and gaps {cfg.gaps}")
    real_ds = None
    if real and cfg.real:
        real_ds = RealPairs(list(cfg.real), gaps=cfg.real_gaps or cfg.gaps,
                            num_points=cfg.real_num_points or cfg.num_points, seed=cfg.seed,
                            sampling=cfg.real_sampling, max_depth_m=cfg.pseudo_labels.max_depth_m,
                            voxel_draws=cfg.real_voxel_draws)
    return syn_ds, real_ds
