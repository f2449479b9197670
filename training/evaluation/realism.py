"""GAN realism: the refiner G applied to synthetic clouds, and 1-NNA / MMD / COV of raw and refined synthetic
frames against held-out real ones."""

from __future__ import annotations

import numpy as np

from synthseq.training import metrics as M
from synthseq.training.evaluation.data import EvalSequence


def refine_clouds(refiner, clouds: np.ndarray, device, seed: int = 0, batch_size: int = 16) -> np.ndarray:
    """Apply the refiner G to (S, N, 3) clouds (z sampled from q(z | x) with a seeded generator)."""
    import torch

    gen = torch.Generator(device=device).manual_seed(int(seed))
    out = []
    with torch.no_grad():
        for i in range(0, len(clouds), batch_size):
            x = torch.as_tensor(clouds[i:i + batch_size], dtype=torch.float32, device=device)
            out.append(refiner(x, generator=gen).points.float().cpu().numpy())
    return np.concatenate(out) if out else clouds


def realism(cfg, seqs: list[EvalSequence], synth: list[EvalSequence], refiner, device, notes: list[str]) -> dict | None:
    """metrics.json's "realism": raw (and refined) synthetic vs real frames; None with a note when a set is
    missing or too small."""
    if not synth:
        notes.append("GAN realism skipped: no synthetic dataset (--synthetic).")
        return None
    if not seqs:
        notes.append("GAN realism skipped: no real captures.")
        return None
    real = _frames(seqs, cfg.realism_clouds)
    raw_synth = _frames(synth, cfg.realism_clouds)
    if len(real) < 2 or len(raw_synth) < 2:
        notes.append("GAN realism skipped: fewer than 2 frames in a set.")
        return None
    out = {"protocol": f"PointFlow 1-NNA / MMD / COV under the Chamfer distance (scipy cKDTree), "
                       f"{cfg.realism_points} points per cloud, camera frame, metres (MMD in m^2)"}
    rng = np.random.default_rng(cfg.seed)
    out["raw_vs_real"] = M.realism_metrics(raw_synth, real, cfg.realism_points, cfg.realism_clouds, rng)
    if refiner is not None:
        refined = refine_clouds(refiner, raw_synth, device, cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        out["refined_vs_real"] = M.realism_metrics(refined, real, cfg.realism_points, cfg.realism_clouds, rng)
    else:
        notes.append("GAN realism: no refiner G (no checkpoint, or trained with use_gan false); raw synthetic "
                     "vs real only.")
    return out


def sample_clouds(seqs: list[EvalSequence], synth: list[EvalSequence], refiner, device,
                  seed: int) -> list[tuple[str, np.ndarray]]:
    """(title, (N, 3) cloud) of the sample-clouds plot: the middle frame of the first synthetic sequence, G of
    it, and of the first two real captures."""
    clouds = []
    if synth:
        s, t = synth[0], synth[0].num_frames // 2
        clouds.append((f"synthetic: {s.name} frame {t}", s.points[t]))
        if refiner is not None:
            clouds.append(("refined G(synthetic)", refine_clouds(refiner, s.points[t][None], device, seed)[0]))
    for s in seqs[:2]:
        t = s.num_frames // 2
        clouds.append((f"real: {s.name} frame {t}", s.points[t]))
    return clouds


def _frames(seqs: list[EvalSequence], max_clouds: int) -> np.ndarray:
    """Up to ``max_clouds`` model-input frames spread evenly over ``seqs`` (frames with points only)."""
    frames = [(i, t) for i, s in enumerate(seqs) for t in range(s.num_frames) if s.num_valid[t] > 0]
    if not frames:
        return np.zeros((0, 1, 3), np.float32)
    pick = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), max_clouds)).round().astype(int))
    return np.stack([seqs[frames[j][0]].points[frames[j][1]] for j in pick])
