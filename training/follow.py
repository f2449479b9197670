"""Training that follows a running build (``synthseq train --follow``): the synthetic pairs of every shard the
build's manifest lists so far, growing as the build adds shards.

The build writes a shard atomically, then lists it (with its size and sha256) in ``manifest.json``, which it
replaces atomically: a shard in the manifest is finished. :class:`FollowingPairs` re-reads the manifest at
most every ``poll_s`` seconds and re-opens the dataset when the shard count grew; the per-step sampler of
``train`` draws indices from a fixed virtual length (``max_steps * batch_size``) and each index maps onto the
pairs available at that moment (``i mod n``), so ``train`` runs unchanged and new shards are drawn from as
soon as they are listed. A run that follows a build is therefore not bit-reproducible (what it sees depends
on timing); once the build is complete it is an ordinary dataset.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from torch.utils.data import Dataset

from synthseq.errors import ConfigError

log = logging.getLogger(__name__)


def listed_shards(root) -> tuple[list[str], bool]:
    """(shard files the manifest lists, whether the build is complete); ([], False) without a manifest yet."""
    try:
        m = json.loads((Path(root) / "manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return [], False
    return [e["file"] for e in m.get("shards", [])], bool(m.get("complete"))


class FollowingPairs(Dataset):
    """Synthetic pairs of a dataset that a build is still writing (see the module docstring).

    Args:
        tcfg: the ``train`` config (``train.data`` is the build's ``--out``; ``max_steps`` must be set).
        poll_s: re-read the manifest at most this often (seconds).
        wait_s: how long to wait for the first shard.
        open_pairs: ``open_pairs(tcfg) -> Dataset`` over the shards listed now (default: the synthetic
            dataset of ``training.data.datasets_from_config``).

    Attributes:
        seen: {shard file: time.time() when it was first drawn from}.
        history: [(time.time(), number of shards)] each time the dataset grew.
    """

    def __init__(self, tcfg, poll_s: float = 1.0, wait_s: float = 600.0, open_pairs=None):
        if tcfg.max_steps is None:
            raise ConfigError("train.max_steps: --follow needs a step count (the dataset grows while training; "
                              "--set train.max_steps=N)", key="train.max_steps")
        if tcfg.data is None:
            raise ConfigError("train.data: --follow needs the build's output folder (--set train.data=DIR)",
                              key="train.data")
        self.tcfg, self.poll_s = tcfg, float(poll_s)
        self.root = Path(tcfg.data)
        self.open_pairs = open_pairs or _open_synthetic
        self.virtual_len = int(tcfg.max_steps) * int(tcfg.batch_size)
        self.seen: dict[str, float] = {}
        self.history: list[tuple[float, int]] = []
        self._epoch = 0
        self._ds = None
        self._files: list[str] = []
        self._complete = False
        self._checked = 0.0
        t0 = time.time()
        while not self._refresh(force=True):
            if time.time() - t0 > wait_s:
                raise ConfigError(f"train.data: {self.root} lists no shard after {wait_s:.0f} s (is a build "
                                  f"writing it?)", key="train.data")
            time.sleep(self.poll_s)

    def _refresh(self, force: bool = False) -> bool:
        """Re-open the dataset if the manifest lists more shards; True when any shard is available."""
        now = time.time()
        if self._complete or (not force and now - self._checked < self.poll_s):
            return self._ds is not None
        self._checked = now
        files, complete = listed_shards(self.root)
        if len(files) > len(self._files):
            ds = self.open_pairs(self.tcfg)
            if len(ds) > 0:
                self._ds, self._files, self._complete = ds, files, complete
                self._ds_set_epoch()
                self.history.append((now, len(files)))
                log.info("--follow: %d shards (%d pairs)%s", len(files), len(ds),
                         ", the build is complete" if complete else "")
        elif complete:
            self._complete = True
        return self._ds is not None

    def _ds_set_epoch(self) -> None:
        if hasattr(self._ds, "set_epoch"):
            self._ds.set_epoch(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch = int(epoch)
        if self._ds is not None:
            self._ds_set_epoch()

    def __len__(self) -> int:
        return self.virtual_len

    def __getitem__(self, index: int) -> dict:
        self._refresh()
        i = int(index) % len(self._ds)
        sample = self._ds[i]
        shard = self._shard_of(i)
        if shard is not None and shard not in self.seen:
            self.seen[shard] = time.time()
        return sample

    def _shard_of(self, i: int) -> str | None:
        """The shard file that pair ``i`` of the current dataset comes from (None if unknown)."""
        items = getattr(self._ds, "items", None)
        store = getattr(self._ds, "store", None)
        try:
            f = store.seqs[int(items[i][0])]["file"]
            path = f if isinstance(f, (str, Path)) else store.files[f]  # a path, or an index into store.files
            return Path(path).name
        except (AttributeError, IndexError, KeyError, TypeError):
            return None


def _open_synthetic(tcfg):
    from synthseq.training.data import datasets_from_config

    return datasets_from_config(tcfg, synthetic=True, real=False)[0]
