"""Data-parallel training on K processes around the single-process ``Trainer`` (torch.distributed; no Ray here).

Each of the K workers (started by ``synthseq.pipelines.cluster.train_on_cluster``, one Ray actor each) runs
:func:`train_worker`:

- **Same model everywhere.** Every rank builds ``Trainer(cfg)`` from the same seed; on resume rank 0 reads
  the checkpoint and broadcasts it (no shared filesystem needed for checkpoints).
- **Each rank reads its slice of every global batch.** Step s's global batch is ``data.step_batches(n, K*b, ...)``
  (b = ``train.batch_size``, the per-worker batch), and rank r takes items [r*b, (r+1)*b). K=1 is exactly
  the single-process run; K workers at batch b see the same samples per step as one process at batch K*b.
- **Gradients are averaged before every optimiser step** (:func:`sync_gradients` wraps each optimiser's
  ``step``: one all-reduce per optimiser per step), so the parameters stay identical on every rank, like
  DDP. DDP's bucketed overlap is not used: the Trainer runs three updates (D, G, P) per step with
  ``backward(inputs=...)`` on G alone, which DDP's module wrapper does not express; averaging at the
  optimiser step does, without touching the Trainer.
- **Rank 0 writes** metrics.jsonl, TensorBoard, sample figures and checkpoints; the logged losses are the
  mean over ranks. Per-rank state that differs (the GAN's history of refined clouds) is gathered into the
  checkpoint so that a resume with the same K restores every rank exactly.

Batch-norm statistics are per rank (over b samples, not K*b), and per-step random draws have the per-rank
batch's shape: K workers at b follow one process at K*b closely but not bit-for-bit (tests/test_distributed.py
states the tolerance).
"""

from __future__ import annotations

import json
import logging
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from synthseq.config import to_dict
from synthseq.errors import ConfigError, DataError
from synthseq.training.checkpoint import load_checkpoint, save_checkpoint, set_rng_state
from synthseq.training.config import resolve_device
from synthseq.training.data import datasets_from_config, make_loader
from synthseq.training.trainer import Trainer, check_resume_config, log_step

log = logging.getLogger(__name__)

CHECKPOINT = "last.pt"


def sync_gradients(trainer: Trainer, world_size: int) -> None:
    """Make every optimiser of ``trainer`` average its parameters' gradients over the ranks before stepping.

    A parameter without a gradient on this rank takes part with zeros (so all ranks issue the same
    all-reduce); one flattened all-reduce per optimiser step.
    """
    if world_size == 1:
        return
    for opt in trainer.opt.values():
        params = [p for group in opt.param_groups for p in group["params"]]
        original = opt.step

        def step(*args, _original=original, _params=params, **kwargs):
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in _params]
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat /= world_size
            offset = 0
            for p, g in zip(_params, grads):
                n = g.numel()
                p.grad = flat[offset:offset + n].view_as(p).clone()
                offset += n
            return _original(*args, **kwargs)

        opt.step = step


def mean_over_ranks(values: dict, device) -> dict:
    """The mean of each scalar over the ranks (every rank passes the same keys)."""
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def _history_state(trainer: Trainer, world_size: int) -> list:
    """Every rank's GAN history tensor (on rank 0; other ranks get the list too)."""
    mine = trainer.history.detach().cpu() if trainer.history is not None else torch.zeros(0)
    gathered = [None] * world_size
    dist.all_gather_object(gathered, mine)
    return gathered


def train_worker(cfg, run_dir, *, rank: int, world_size: int, init_method: str, resume: bool = False,
                 device: str | None = None, backend: str | None = None, threads: int = 1,
                 timeout_s: float = 600.0) -> dict:
    """One rank of a data-parallel training run (see the module docstring); rank 0 writes ``run_dir``.

    Args:
        cfg: the whole pipelines ``Config`` (its ``.train`` is used; all of it is stored in checkpoints).
        run_dir: the run directory (rank 0 writes it; ``checkpoints/last.pt`` is read from it on resume).
        rank, world_size: this worker and the worker count K.
        init_method: ``tcp://HOST:PORT`` of rank 0 (torch.distributed rendezvous).
        resume: continue from rank 0's ``run_dir/checkpoints/last.pt`` (written with the same K).
        device: "cpu", "cuda" or "auto" (None: ``train.device``). backend: "gloo" (CPU) / "nccl" (CUDA);
            None picks by device.
        threads: torch CPU threads of this worker.

    Returns:
        {"rank", "step", "metrics" (rank 0: the last logged row), "seconds"}.

    Raises:
        ConfigError: a resume with another K or model config. DataError: no pairs.
    """
    tcfg = cfg.train
    config_dict = to_dict(cfg)
    run_dir = Path(run_dir)
    ckpt_path = run_dir / "checkpoints" / CHECKPOINT
    torch.set_num_threads(max(1, int(threads)))
    dev = resolve_device(device or tcfg.device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=timeout_s))
    try:
        return _loop(cfg, tcfg, config_dict, run_dir, ckpt_path, rank, world_size, resume, dev)
    finally:
        dist.destroy_process_group()


def _loop(cfg, tcfg, config_dict, run_dir, ckpt_path, rank, world_size, resume, dev) -> dict:
    t_begin = time.perf_counter()
    synthetic, real = datasets_from_config(tcfg)
    if len(synthetic) == 0:
        raise DataError(f"{tcfg.data}: no frame pairs (gaps {tcfg.gaps})")
    if real is not None and len(real) == 0:
        real = None
    trainer = Trainer(tcfg, dev)

    if resume:
        box = [load_checkpoint(ckpt_path, map_location="cpu") if rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        state = box[0]
        saved_k = state.get("distributed", {}).get("world_size", 1)
        if saved_k != world_size:
            raise ConfigError(f"--num-workers {world_size}: the checkpoint {ckpt_path} was written by "
                              f"{saved_k} worker(s); an exact resume needs the same count")
        check_resume_config(state["config"]["train"], config_dict["train"], ckpt_path)
        trainer.load_state_dict(state)
        histories = state.get("distributed", {}).get("histories")
        if histories:
            h = histories[rank]
            trainer.history = h.to(dev) if h is not None and h.numel() else None
        set_rng_state(state["rng"])
    sync_gradients(trainer, world_size)

    steps_per_epoch = max(len(synthetic) // (tcfg.batch_size * world_size), 1)
    total_steps = tcfg.epochs * steps_per_epoch
    if tcfg.max_steps is not None:
        total_steps = min(total_steps, tcfg.max_steps)
    start = trainer.step

    writer = metrics_file = None
    if rank == 0:
        import yaml
        from torch.utils.tensorboard import SummaryWriter

        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config_dict, sort_keys=False))
        metrics_path = run_dir / "metrics.jsonl"
        if resume and metrics_path.exists():
            keep = [ln for ln in metrics_path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= start]
            metrics_path.write_text("".join(ln + "\n" for ln in keep))
        elif metrics_path.exists():
            metrics_path.unlink()
        metrics_file = open(metrics_path, "a")
        writer = SummaryWriter(str(run_dir / "tb"), purge_step=start if resume else None)
        log.info("training steps %d..%d on %d workers x batch %d (%s), %d synthetic pairs -> %s", start,
                 total_steps, world_size, tcfg.batch_size, dev, len(synthetic), run_dir)

    def checkpoint(metrics):
        histories = _history_state(trainer, world_size)  # collective: every rank calls it
        if rank == 0:
            state = trainer.state_dict(config_dict, metrics)
            state["distributed"] = {"world_size": world_size, "histories": histories}
            save_checkpoint(state, ckpt_path)

    synth_iter = iter(make_loader(synthetic, tcfg, 0, start, total_steps, world_size, rank))
    real_iter = iter(make_loader(real, tcfg, 1, start, total_steps, world_size, rank)) if real is not None else None
    row: dict = {}
    try:
        while trainer.step < total_steps:
            t0 = time.perf_counter()
            synth_batch = next(synth_iter)
            real_batch = next(real_iter) if real_iter is not None else None
            t_data = time.perf_counter() - t0
            scalars, times = trainer.train_step(synth_batch, real_batch)
            step = trainer.step
            times.update(time_data=t_data, time_step=time.perf_counter() - t0)
            logged = step % tcfg.log_interval == 0 or step == total_steps
            if logged:
                scalars = mean_over_ranks(scalars, dev if dev.type == "cuda" else "cpu")
            if rank == 0:
                row = {"step": step, **scalars, **times, "lr": trainer.opt["P"].param_groups[0]["lr"],
                       "workers": world_size}
                log_step(trainer, writer, metrics_file, run_dir, row, scalars, times, logged=logged,
                         sample_interval=tcfg.sample_interval)
            if step % tcfg.checkpoint_interval == 0 or step == total_steps:
                checkpoint(row)
        if trainer.step == start and not resume:  # nothing to train: still leave a checkpoint
            checkpoint(row)
    finally:
        if rank == 0:
            metrics_file.close()
            writer.close()
    return {"rank": rank, "step": trainer.step, "metrics": row, "seconds": time.perf_counter() - t_begin,
            "checkpoint": str(ckpt_path) if rank == 0 else None}
