"""The trainer: one step = D step, G step, P step; ``train(cfg, run_dir)`` runs, logs and checkpoints them.

One training step, with x_s the synthetic pair's two clouds and x_real the real pair's two clouds:

1. refine   x~ = G(x_s) (one forward, kept with its graph)
2. D step   L_D = BCE(D(x_real), 1) + BCE(D(x~.detach()), 0); only D's optimiser steps
3. G step   L_G = gan_weight * BCE(D(x~), 1) + distill.weight * L_distill + reg_param * mean|offsets|
            + beta * KL(q(z|x_s) || N(0, I)) + gamma * MMD(z, N(0, I)); the gradient flows through D
            into G (``backward(inputs=G's parameters)``: D's parameters get no gradient, D is not stepped)
4. P step   L_P = pose_weight * (geodesic + translation_weight * |t - t_gt|) on the refined (detached)
            synthetic pair, + alignment_weight * truncated Chamfer(P(a, b) b, a) + consistency_weight *
            |P(a, b) vs EMA teacher| on the real pair; then the EMA teacher update.

D always sees real and refined clouds in one batch, so that its BatchNorm statistics are shared: with
separate batches a global offset between real and refined clouds (a depth bias) would be normalised away.

Determinism: the batch indices of step s derive from (seed, s) (``data.step_batches``), and every random draw of
step s (z, the MMD prior sample, the consistency jitter) from a torch.Generator seeded with (seed, s), so
N steps + resume + M steps equals N + M steps on a CPU.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from synthseq.config import to_dict
from synthseq.errors import ConfigError, DataError, Interrupted, SynthseqError
from synthseq.training import losses as L
from synthseq.training.checkpoint import (load_checkpoint, rng_state, save_checkpoint, set_rng_state,
                                          CHECKPOINT_FORMAT, CHECKPOINT_VERSION, CHECKPOINT_NAME)
from synthseq.training.config import TrainConfig, resolve_device
from synthseq.training.data import Subset, datasets_from_config, make_loader
from synthseq.training.models import build_models

log = logging.getLogger(__name__)


class NonFiniteLossError(SynthseqError, RuntimeError):
    """A loss became NaN or infinite; the message names the loss and the step."""


# ----------------------------------------------------------------------------------------------- setup

def step_seed(seed: int, stream: int, step: int) -> int:
    """A 63-bit seed derived from (seed, stream, step): independent streams, reproducible per step."""
    return int(np.random.SeedSequence([int(seed), int(stream), int(step)]).generate_state(2, np.uint64)[0] >> 1)


# ----------------------------------------------------------------------------------------------- steps

def random_subset(batch: int, n: int, k: int, gen: torch.Generator, device) -> torch.Tensor:
    """(batch, k) indices of k distinct points out of n per cloud, uniformly at random (drawn from ``gen``)."""
    return torch.rand(batch, n, generator=gen, device=device).argsort(dim=1)[:, :k]


def take_points(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, N, C), idx (B, k) -> (B, k, C)."""
    return torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))


class Trainer:
    """The networks, their optimisers and the three update steps; ``train`` drives it.

    Args:
        cfg: the ``train`` config.
        device: torch device.
    """

    def __init__(self, cfg: TrainConfig, device="cpu"):
        self.cfg = cfg
        self.device = torch.device(device)
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
            torch.manual_seed(cfg.seed)
            models = build_models(cfg.model)
        self.G, self.D, self.P = (models[k].to(self.device) for k in ("G", "D", "P"))
        self.P_ema = copy.deepcopy(self.P).requires_grad_(False).eval()
        adam = dict(lr=cfg.learning_rate, betas=tuple(cfg.adam_betas))
        d_adam = dict(adam, lr=cfg.d_learning_rate or cfg.learning_rate)
        self.opt = {"G": torch.optim.Adam(self.G.parameters(), **adam),
                    "D": torch.optim.Adam(self.D.parameters(), **d_adam),
                    "P": torch.optim.Adam(self.P.parameters(), **adam)}
        self.step = 0
        self.history: torch.Tensor | None = None  # earlier refined clouds shown to D (train.history_size)
        self.pseudo_labels: dict = {}  # (sequence, view, frame, gap) -> (4, 4) accepted pseudo-label
        self.amp = self.device.type == "cuda" and cfg.amp
        self._last_refined = None  # (synthetic, refined, real) clouds (N, 3) of the last GAN step, for figures

    # -- helpers
    def autocast(self):
        """bfloat16 autocast on CUDA (no loss scaling needed); a no-op on CPU."""
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else nullcontext()

    def generator(self, step: int) -> torch.Generator:
        """The torch.Generator of every random draw of step ``step`` (z, MMD prior, jitter)."""
        return torch.Generator(device=self.device).manual_seed(step_seed(self.cfg.seed, 2, step))

    def _check(self, values: dict, step: int) -> dict:
        out = {}
        for name, v in values.items():
            x = float(v.detach()) if torch.is_tensor(v) else float(v)
            if not math.isfinite(x):
                raise NonFiniteLossError(f"loss {name} is not finite ({x}) at step {step}")
            out[name] = x
        return out

    # -- the three updates
    def refine(self, x_s: torch.Tensor, gen: torch.Generator):
        """G(x_s) with z sampled from q(z | x_s); x_s (B, N, 3) -> ``Refined``."""
        with self.autocast():
            return self.G(x_s, generator=gen)

    def d_step(self, x_real: torch.Tensor, x_ref: torch.Tensor, step: int, gen: torch.Generator | None = None) -> dict:
        """One discriminator update on real (B, N, 3) and refined (B', N, 3) clouds (detached here).

        With ``history_size`` > 0, half of the refined clouds D sees are drawn from a buffer of earlier
        refined clouds (Shrivastava et al. 2017), so that D does not forget old artefacts and G cannot
        oscillate between them. With ``r1_weight`` > 0, the R1 penalty r1_weight / 2 * E|grad_x D(x_real)|^2
        (Mescheder et al. 2018) keeps D smooth on the real data, which stops it from saturating.
        """
        cfg = self.cfg
        self.D.train()
        self.opt["D"].zero_grad(set_to_none=True)
        fake = self._with_history(x_ref.detach(), gen)
        real_in = x_real.detach().requires_grad_(cfg.r1_weight > 0)
        with self.autocast():
            logits = self.D(torch.cat([real_in, fake]), generator=gen)
        lr, lf = logits[: len(x_real)], logits[len(x_real):]
        loss = L.discriminator_loss(lr, lf)
        terms = {}
        if cfg.r1_weight > 0:
            (g,) = torch.autograd.grad(lr.float().sum(), real_in, create_graph=True)
            r1 = g.float().pow(2).sum(dim=(1, 2)).mean()
            loss = loss + 0.5 * cfg.r1_weight * r1
            terms["D_r1"] = r1
        out = self._check({"loss_D": loss, **terms}, step)
        loss.backward()
        self.opt["D"].step()
        out["D_real"] = float(torch.sigmoid(lr.detach().float()).mean())
        out["D_fake"] = float(torch.sigmoid(lf.detach().float()).mean())
        return out

    def _with_history(self, fake: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        """Half of ``fake`` replaced by clouds from the history buffer (once it holds enough), and the buffer
        updated with random ones of ``fake``; ``fake`` itself when ``history_size`` is 0."""
        H = self.cfg.history_size
        if H <= 0:
            return fake
        n = fake.shape[0]
        if self.history is None or self.history.shape[1:] != fake.shape[1:]:
            self.history = fake[:0].clone()
        half = n // 2
        out = fake
        if len(self.history) >= half and half > 0:
            pick = torch.randint(len(self.history), (half,), generator=gen, device=self.device)
            out = torch.cat([fake[half:], self.history[pick]])
        new = fake[torch.randperm(n, generator=gen, device=self.device)[:max(half, 1)]]
        if len(self.history) < H:
            self.history = torch.cat([self.history, new])[:H]
        else:
            slots = torch.randint(H, (len(new),), generator=gen, device=self.device)
            self.history[slots] = new
        return out

    def g_step(self, x_real: torch.Tensor, refined, gen: torch.Generator, step: int) -> dict:
        """One refiner update; ``refined`` = ``self.refine(x_s)`` with its graph. Gradients flow through D."""
        cfg = self.cfg
        self.opt["G"].zero_grad(set_to_none=True)
        with self.autocast():
            logits, feats = self.D(torch.cat([x_real, refined.points]), return_features=True, generator=gen)
        n = len(x_real)
        lr, lf, fr, ff = logits[:n], logits[n:], feats[:n], feats[n:]
        gan = L.generator_gan_loss(lf)
        if cfg.distill.mode == "gradients":
            distill = L.gradient_distillation(lr, lf, [p for p in self.D.parameters()], cfg.distill.alpha)
        else:
            distill = L.feature_distillation(lr, lf, fr, ff, cfg.distill.alpha)
        off = refined.offsets.float()
        reg = off.abs().mean()
        cap = self.G.max_offset or float("inf")
        over = F.relu(off.abs() - cap)
        cap_pen = (over / cap).pow(2).mean() if math.isfinite(cap) else off.new_zeros(())
        kl = L.kl_standard_normal(refined.mu, refined.logvar)
        prior = torch.randn(refined.z.shape, generator=gen, device=self.device)
        mmd = L.gaussian_mmd(refined.z, prior, cfg.mmd_sigma)
        z_hat = self.G.recover_z(refined.points.float(), off)
        latent = F.mse_loss(z_hat.float(), refined.z.detach().float())
        loss = (cfg.gan_weight * gan + cfg.distill.weight * distill + cfg.reg_param * reg
                + cfg.offset_cap_weight * cap_pen + cfg.beta * kl + cfg.gamma * mmd + cfg.latent_weight * latent)
        out = self._check({"loss_G": loss, "G_gan": gan, "G_distill": distill, "G_offset": reg,
                           "G_cap": cap_pen, "G_kl": kl, "G_mmd": mmd, "G_latent": latent}, step)
        out["G_over_cap"] = float((over > 0).float().mean())
        # Only G's parameters receive gradients: D's .grad stay None and D's optimiser is not stepped,
        # but the gradient does flow *through* D into G (the original sketch detached x~ here).
        loss.backward(inputs=list(self.G.parameters()))
        self.opt["G"].step()
        return out

    def p_step(self, synth: dict, real: dict | None, refined_a, refined_b, gen: torch.Generator, step: int) -> dict:
        """One pose-network update (and the EMA teacher update).

        ``model.pose: match``: descriptor loss (InfoNCE over ground-truth correspondences, moving-object
        points excluded) + pose loss of the soft-assignment weighted-SVD pose, on the synthetic pair; on
        real pairs the same two losses where an accepted pseudo-label exists (``train.pseudo_labels``).
        ``model.pose: regress``: the pose loss only. Both: on real pairs the truncated-Chamfer alignment on
        spatially random subsets and the EMA-teacher consistency (weights 0 switch them off).

        Args:
            synth: batch with ``points_a``/``points_b`` (B, N, 3) and ``a_from_b`` (B, 4, 4) ground truth
                (and ``labels_b``/``object_a_from_b``/``object_valid`` when present: moving objects).
            real: batch with ``points_a``/``points_b`` (their ``a_from_b`` is never used), or None.
            refined_a, refined_b: (B, N, 3) refined synthetic clouds, or None to use the raw ones.
        """
        cfg = self.cfg
        match = cfg.model.pose == "match"
        self.opt["P"].zero_grad(set_to_none=True)
        pa = synth["points_a"] if refined_a is None else refined_a.detach()
        pb = synth["points_b"] if refined_b is None else refined_b.detach()
        gt = synth["a_from_b"]
        terms = {}
        out_extra = {}
        loss = 0.0
        # synthetic_weight applies only when pseudo-labelled real pairs exist (without them the synthetic pairs are
        # P's only signal); 0 then means the labelled real pairs only, and the synthetic forward pass is skipped
        w_syn = cfg.synthetic_weight if (real is not None and self.pseudo_labels) else 1.0
        synthetic = w_syn > 0
        with self.autocast():
            if synthetic and match:
                f_a, f_b = self.P.features(pa), self.P.features(pb)
                pred = self.P.soft_pose(pa, pb, f_a, f_b)
            elif synthetic:
                pred = self.P(pa, pb)
        if synthetic and match:
            valid_b = None
            if "labels_b" in synth:
                valid_b = L.static_points(synth["labels_b"], synth.get("object_a_from_b"),
                                          synth.get("object_valid"), gt)
            desc, hit = L.correspondence_loss(f_a, f_b, pa, pb, gt, valid_b, cfg.model.p_temperature,
                                              num_anchors=cfg.descriptor_anchors, generator=gen)
            terms["P_desc"] = desc
            loss = loss + w_syn * cfg.descriptor_weight * desc
        if synthetic:
            sup = L.pose_loss(pred, gt, cfg.translation_weight)
            rot_err, trans_err = L.pose_errors(pred.detach(), gt)
            terms["P_pose"] = sup
            loss = loss + w_syn * cfg.pose_weight * sup
        if real is not None:
            ra, rb = real["points_a"], real["points_b"]
            pseudo = self.pseudo_batch(real)
            if pseudo is not None and match:
                mask, T = pseudo
                if bool(mask.any()):
                    with self.autocast():
                        fr_a, fr_b = self.P.features(ra[mask]), self.P.features(rb[mask])
                    pdesc, phit = L.correspondence_loss(fr_a, fr_b, ra[mask], rb[mask], T[mask], None,
                                                        cfg.model.p_temperature, num_anchors=cfg.descriptor_anchors,
                                                        generator=gen)
                    ppose = torch.zeros((), device=self.device)
                    if cfg.pose_weight > 0:  # (the N x N soft assignment is the costly part: skipped when unused)
                        pred_p = self.P.soft_pose(ra[mask], rb[mask], fr_a, fr_b)
                        ppose = L.pose_loss(pred_p, T[mask], cfg.translation_weight)
                    frac = mask.float().mean()
                    terms.update(P_pseudo=pdesc + ppose)
                    out_extra["P_pseudo_hit"] = float(phit)
                    loss = loss + cfg.pseudo_labels.weight * frac * (cfg.descriptor_weight * pdesc
                                                                     + cfg.pose_weight * ppose)
            if cfg.alignment_weight > 0 or cfg.consistency_weight > 0:
                jit = cfg.consistency_jitter
                sa = ra + jit * torch.randn(ra.shape, generator=gen, device=self.device)
                sb = rb + jit * torch.randn(rb.shape, generator=gen, device=self.device)
                with self.autocast():
                    pred_r = self.P(sa, sb)
                    with torch.no_grad():
                        teacher = self.P_ema(ra, rb)
                # spatially random subsets: stored clouds may be in raster order (sample_fixed sorts its
                # indices), so "the first k points" would be the top rows of the image
                k = min(cfg.alignment_points or ra.shape[1], ra.shape[1])
                ia = random_subset(ra.shape[0], ra.shape[1], k, gen, self.device)
                ib = random_subset(rb.shape[0], rb.shape[1], k, gen, self.device)
                align = L.alignment_loss(pred_r, take_points(ra, ia), take_points(rb, ib), cfg.alignment_trunc)
                cons = L.consistency_loss(pred_r, teacher, cfg.translation_weight)
                loss = loss + cfg.alignment_weight * align + cfg.consistency_weight * cons
                terms.update(P_align=align, P_consistency=cons)
        out = self._check({"loss_P": loss, **terms}, step)
        out.update(out_extra)
        if torch.is_tensor(loss):  # (no term at all only when a real-only step found no labelled pair)
            loss.backward()
            self.opt["P"].step()
        self.update_ema(step)
        if synthetic:
            out["P_rot_err_deg"] = float(rot_err.mean()) * 180.0 / math.pi
            out["P_trans_err_m"] = float(trans_err.mean())
            if match:
                out["P_match_hit"] = float(hit)
        return out

    def pseudo_batch(self, real: dict):
        """(mask (B,) bool, a_from_b (B, 4, 4)) of the real batch's pairs with an accepted pseudo-label, or
        None without pseudo-labels. Pairs are looked up by (sequence, view, frame, gap)."""
        if not self.pseudo_labels:
            return None
        B = real["points_a"].shape[0]
        mask = torch.zeros(B, dtype=torch.bool)
        T = torch.eye(4).repeat(B, 1, 1)
        for i in range(B):
            key = (str(real["sequence"][i]), int(real["view"][i]), int(real["frame"][i]), int(real["gap"][i]))
            pose = self.pseudo_labels.get(key)
            if pose is not None:
                mask[i] = True
                T[i] = torch.as_tensor(pose, dtype=torch.float32)
        return mask.to(self.device), T.to(self.device)

    @torch.no_grad()
    def update_ema(self, step: int) -> None:
        """teacher <- d * teacher + (1 - d) * student, d = min(ema_decay, (1 + step) / (10 + step)) (warm-up,
        so that the teacher leaves its random initialisation quickly; Tarvainen & Valpola 2017)."""
        d = min(self.cfg.ema_decay, (1.0 + step) / (10.0 + step))
        for pt, ps in zip(self.P_ema.parameters(), self.P.parameters()):
            pt.lerp_(ps.detach(), 1.0 - d)
        for bt, bs in zip(self.P_ema.buffers(), self.P.buffers()):
            bt.copy_(bs)

    def train_step(self, synth: dict, real: dict | None) -> tuple[dict, dict]:
        """One full step on a synthetic batch and a real batch (or None); returns (scalars, timings in s).

        Without real data (or with ``use_gan: false``) only the P step runs, on the raw synthetic pairs.
        """
        step = self.step
        gen = self.generator(step)
        synth = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in synth.items()}
        if real is not None:
            real = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in real.items()}
        scalars, times = {}, {}
        refined_a = refined_b = None
        if self.cfg.use_gan and real is not None:
            B = synth["points_a"].shape[0]
            x_s = torch.cat([synth["points_a"], synth["points_b"]])          # (2B, N, 3)
            x_real = torch.cat([real["points_a"], real["points_b"]])         # (2B', N, 3)
            t0 = time.perf_counter()
            refined = self.refine(x_s, gen)
            scalars.update(self.d_step(x_real, refined.points, step, gen))
            times["time_D"] = self._sync_time(t0)
            t0 = time.perf_counter()
            scalars.update(self.g_step(x_real, refined, gen, step))
            times["time_G"] = self._sync_time(t0)
            refined_a, refined_b = refined.points[:B].detach().float(), refined.points[B:].detach().float()
        self._last_refined = (synth["points_a"][0], synth["points_a"][0] if refined_a is None else refined_a[0],
                              None if real is None else real["points_a"][0])
        t0 = time.perf_counter()
        scalars.update(self.p_step(synth, real, refined_a, refined_b, gen, step))
        times["time_P"] = self._sync_time(t0)
        self.step = step + 1
        return scalars, times

    def _sync_time(self, t0: float) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - t0

    # -- checkpoints
    def state_dict(self, config: dict, metrics: dict | None = None) -> dict:
        """The checkpoint dict (format in training/checkpoint.py)."""
        return {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "step": self.step, "config": config,
            "models": {"G": self.G.state_dict(), "D": self.D.state_dict(), "P": self.P.state_dict(),
                       "P_ema": self.P_ema.state_dict()},
            "optimizers": {k: o.state_dict() for k, o in self.opt.items()},
            "rng": rng_state(),
            "metrics": dict(metrics or {}),
            "buffers": {"history": self.history.detach().cpu() if self.history is not None else torch.zeros(0)},
        }

    def load_state_dict(self, state: dict) -> None:
        for name, module in (("G", self.G), ("D", self.D), ("P", self.P), ("P_ema", self.P_ema)):
            module.load_state_dict(state["models"][name])
        for k, o in self.opt.items():
            o.load_state_dict(state["optimizers"][k])
        self.step = int(state["step"])
        hist = state.get("buffers", {}).get("history")
        self.history = hist.to(self.device) if hist is not None and hist.numel() else None
        set_rng_state(state["rng"])


# ----------------------------------------------------------------------------------------------- logging

def save_sample_figure(path, synthetic, refined, real, step: int):
    """Three 3D scatter plots (synthetic, refined, real), each (N, 3) camera frame (real may be None: no
    real data); writes a PNG, returns the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(12, 4))
    for i, (title, pts) in enumerate((("synthetic", synthetic), ("refined", refined), ("real", real))):
        ax = fig.add_subplot(1, 3, i + 1, projection="3d")
        if pts is None:
            ax.set_title(f"{title}: none")
            continue
        p = pts.detach().float().cpu().numpy()
        # camera frame (x right, y down, z forward) shown with z as depth and -y up
        ax.scatter(p[:, 0], p[:, 2], -p[:, 1], s=1, c=p[:, 2], cmap="viridis")
        ax.set_title(f"{title} (step {step})")
        ax.set_xlabel("x")
        ax.set_ylabel("z")
        ax.set_zlabel("-y")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    return fig


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metrics.jsonl rows logged after ``step`` (a run killed after its last checkpoint)."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
    path.write_text("".join(ln + "\n" for ln in keep))


# ----------------------------------------------------------------------------------------------- train

def init_pose_network(trainer: Trainer, path) -> None:
    """Load P and its EMA teacher from the checkpoint ``path`` (``train.init``): the same P architecture is
    required (``train.model.pose``/``p_*`` as there); optimiser state and step start fresh."""
    from synthseq.training.checkpoint import train_config_of

    state = load_checkpoint(path, map_location="cpu")
    theirs = train_config_of(state).model
    mine = trainer.cfg.model
    keys = ("pose", "p_hidden", "p_global", "p_out_dim", "p_k")
    if any(getattr(theirs, k) != getattr(mine, k) for k in keys):
        raise ConfigError(f"train.init: {path} has a pose network of another shape "
                          f"({ {k: getattr(theirs, k) for k in keys} } vs { {k: getattr(mine, k) for k in keys} })")
    trainer.P.load_state_dict(state["models"]["P"])
    trainer.P_ema.load_state_dict(state["models"].get("P_ema", state["models"]["P"]))
    log.info("train.init: P from %s (step %s)", path, state.get("step"))


def _with_pseudo_labels(trainer: Trainer, tcfg: TrainConfig, real, run_dir: Path):
    """Compute (or read ``run_dir/pseudo_labels.json``) the pseudo-labels of the real training captures, give
    them to the trainer, and return the real dataset restricted to the labelled pairs."""
    from synthseq.training.pseudo_labels import pseudo_labels_for

    if not (hasattr(real, "sequences") and hasattr(real, "items")) or len(real.sequences) != len(tcfg.real):
        raise ConfigError("train.pseudo_labels: needs the real captures of train.real (RealPairs)")
    run_dir.mkdir(parents=True, exist_ok=True)
    names = [s.name for s in real.sequences]
    cache = Path(tcfg.pseudo_labels.cache) if tcfg.pseudo_labels.cache else run_dir / "pseudo_labels.json"
    estimator = None
    if tcfg.pseudo_labels.method == "model" and not cache.is_file():
        from synthseq.training.estimator import Estimator, EstimatorOptions

        if not tcfg.init and trainer.step == 0:
            raise ConfigError("train.pseudo_labels.method: model labels with a trained P: set train.init "
                              "(e.g. training/weights/pose_match_small.pt)")
        if not hasattr(trainer.P, "features"):
            raise ConfigError("train.pseudo_labels.method: model needs the correspondence P (train.model.pose: match)")
        estimator = Estimator(trainer.P.eval(), EstimatorOptions(seed=tcfg.seed), trainer.device)
    try:
        labels = pseudo_labels_for(list(tcfg.real), names, tcfg.real_gaps or tcfg.gaps, tcfg.pseudo_labels,
                                   cache, seed=tcfg.seed, estimator=estimator)
    finally:
        trainer.P.train()
    trainer.pseudo_labels = labels
    keep = [i for i, (si, v, t, d) in enumerate(real.items) if (names[si], int(v), int(t), int(d)) in labels]
    log.info("pseudo-labels: %d real pairs labelled of %d", len(keep), len(real))
    if not keep:
        log.warning("train.pseudo_labels: no real pair passed the checks; real pairs are used unlabelled")
        return real
    return Subset(real, keep)


# train keys a resumed run may change: how long it runs, where, and how often it logs; any other change would
# make "N steps + resume + M steps" differ from N + M steps, so a resume refuses it (issue 13).
RESUME_MAY_CHANGE = frozenset({"max_steps", "epochs", "device", "num_workers", "log_interval", "sample_interval",
                               "checkpoint_interval"})


def check_resume_config(saved_train: dict, train: dict, checkpoint) -> None:
    """Refuse a resume whose ``train`` section differs from the checkpoint's outside ``RESUME_MAY_CHANGE``.

    Args:
        saved_train: the checkpoint's ``config["train"]``; train: the resumed run's, both as plain dicts.
        checkpoint: the checkpoint path (named in the message).

    Raises:
        ConfigError: naming the first differing key with both values.
    """
    def first_difference(a, b, path):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in list(a) + [k for k in b if k not in a]:
                if path == "train" and k in RESUME_MAY_CHANGE:
                    continue
                found = first_difference(a.get(k), b.get(k), f"{path}.{k}")
                if found:
                    return found
            return None
        return None if a == b else (path, a, b)

    found = first_difference(saved_train, train, "train")
    if found:
        key, was, now = found
        may = ", ".join(sorted(RESUME_MAY_CHANGE))
        raise ConfigError(f"{key}: {now!r} differs from {was!r} in the checkpoint {checkpoint}; a resumed run may "
                          f"change only train.{{{may}}} (start a new run with --name to change the rest)")


def log_step(trainer, writer, metrics_file, run_dir, row: dict, scalars: dict, times: dict, *, logged: bool,
             sample_interval: int) -> None:
    """Write one step's outputs: its row in metrics.jsonl and TensorBoard scalars (loss/stats/time/lr) when
    ``logged``, and a sample figure every ``sample_interval`` steps (single-process and distributed rank 0)."""
    step = row["step"]
    if logged:
        metrics_file.write(json.dumps(row) + "\n")
        metrics_file.flush()
        for k, v in scalars.items():
            writer.add_scalar(f"loss/{k}" if k.startswith(("loss", "G_", "P_")) else f"stats/{k}", v, step)
        for k, v in times.items():
            writer.add_scalar(f"time/{k}", v, step)
        for name, o in trainer.opt.items():
            writer.add_scalar(f"lr/{name}", o.param_groups[0]["lr"], step)
    if step % sample_interval == 0 and trainer._last_refined is not None:
        fig = save_sample_figure(Path(run_dir) / "samples" / f"step-{step:07d}.png", *trainer._last_refined, step)
        writer.add_figure("samples", fig, step)


def train(cfg, run_dir, *, synthetic=None, real=None, resume: bool = False, device: str | None = None,
          progress: bool = False, stop=None) -> dict:
    """Train G, D and P; write checkpoints, TensorBoard scalars, sample figures and metrics.jsonl to ``run_dir``.

    Args:
        cfg: a ``TrainConfig``, or the whole pipelines ``Config`` (its ``.train`` is used, and all of it is
            written as ``config.yaml`` and stored in the checkpoints).
        run_dir: output directory (``runs/<name>``), created if needed.
        synthetic: a Dataset of pair samples (``points_a``/``points_b`` (N, 3), ``a_from_b`` (4, 4)) to use
            instead of ``SyntheticPairs(cfg.data)``.
        real: a Dataset of real pair samples instead of ``RealPairs(cfg.real)`` (None: from the config;
            pass ``False`` for none).
        resume: continue from ``run_dir/checkpoints/last.pt`` (``check_resume_config``: only run length,
            device and logging intervals may change).
        device: "cpu", "cuda" or "auto"; None uses ``cfg.device``.
        progress: show a tqdm progress bar with the losses.
        stop: optional callable checked after every step; when it returns True (the CLI's Ctrl-C / SIGTERM
            handler) the step's checkpoint is written and ``Interrupted`` is raised, so ``resume`` works.

    Returns:
        {"step": steps done, "run_dir": Path, "checkpoint": Path, "metrics": last logged row}.

    Raises:
        ConfigError: missing data paths, or a resume whose config differs outside ``RESUME_MAY_CHANGE``.
        NonFiniteLossError: a loss became NaN/inf; the last good checkpoint is kept.
    """
    from synthseq.progress import progress as tqdm  # a bar on a terminal, plain lines in a log

    tcfg: TrainConfig = cfg.train if hasattr(cfg, "train") else cfg
    config_dict = to_dict(cfg) if hasattr(cfg, "train") else {"train": to_dict(cfg)}
    run_dir = Path(run_dir)
    ckpt_path = run_dir / "checkpoints" / CHECKPOINT_NAME

    # data: given datasets, or the ones the config names (real=False: none)
    if synthetic is None or real is None:
        syn_ds, real_ds = datasets_from_config(tcfg, synthetic=synthetic is None, real=real is None)
        synthetic = syn_ds if synthetic is None else synthetic
        real = real_ds if real is None else real
    real = real or None
    if len(synthetic) == 0:
        raise DataError(f"{tcfg.data or 'synthetic dataset'}: no frame pairs (gaps {tcfg.gaps})")
    if real is not None and len(real) == 0:
        real = None
    if real is None and tcfg.use_gan:
        log.warning("no real captures (train.real is empty): the GAN and real-pair losses are off, "
                    "P trains on raw synthetic pairs")

    # model, optimisers, state
    dev = resolve_device(device or tcfg.device)
    if dev.type == "cuda" and tcfg.cuda_batch_size and tcfg.cuda_batch_size != tcfg.batch_size:
        import dataclasses

        log.info("CUDA: batch size %d (train.cuda_batch_size) instead of %d", tcfg.cuda_batch_size, tcfg.batch_size)
        tcfg = dataclasses.replace(tcfg, batch_size=tcfg.cuda_batch_size)
    trainer = Trainer(tcfg, dev)
    if resume:
        state = load_checkpoint(ckpt_path, map_location="cpu")  # RNG states must stay CPU tensors
        check_resume_config(state["config"]["train"], config_dict["train"], ckpt_path)
        trainer.load_state_dict(state)
        log.info("resuming %s from step %d", ckpt_path, trainer.step)
    elif tcfg.init:
        init_pose_network(trainer, tcfg.init)
    if tcfg.pseudo_labels.enabled and real is not None:  # after train.init: method model labels with that P
        real = _with_pseudo_labels(trainer, tcfg, real, run_dir)
    if tcfg.synthetic_weight != 1.0 and not trainer.pseudo_labels:
        log.warning("train.synthetic_weight %g applies only with pseudo-labelled real pairs (train.real + "
                    "train.pseudo_labels.enabled): P trains on the synthetic pairs at weight 1", tcfg.synthetic_weight)
    steps_per_epoch = max(len(synthetic) // tcfg.batch_size, 1)
    total_steps = tcfg.epochs * steps_per_epoch
    if tcfg.max_steps is not None:
        total_steps = min(total_steps, tcfg.max_steps)

    # outputs
    import yaml
    from torch.utils.tensorboard import SummaryWriter

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config_dict, sort_keys=False))
    metrics_path = run_dir / "metrics.jsonl"
    if resume:
        _truncate_metrics(metrics_path, trainer.step)
    elif metrics_path.exists():
        metrics_path.unlink()
    writer = SummaryWriter(str(run_dir / "tb"), purge_step=trainer.step if resume else None)
    log.info("training steps %d..%d (%d per epoch) on %s, %d synthetic pairs, %d real pairs -> %s",
             trainer.step, total_steps, steps_per_epoch, dev, len(synthetic), len(real) if real else 0, run_dir)

    def checkpoint(metrics):
        save_checkpoint(trainer.state_dict(config_dict, metrics), ckpt_path)

    start = trainer.step
    synth_loader = make_loader(synthetic, tcfg, 0, start, total_steps)
    real_loader = make_loader(real, tcfg, 1, start, total_steps) if real is not None else None
    synth_iter = iter(synth_loader)
    real_iter = iter(real_loader) if real_loader is not None else None
    row: dict = {}
    bar = tqdm(total=total_steps, initial=start, disable=not progress, desc="train", dynamic_ncols=True)
    try:
        with open(metrics_path, "a") as metrics_file:
            while trainer.step < total_steps:
                t_start = time.perf_counter()
                synth_batch = next(synth_iter)
                real_batch = next(real_iter) if real_iter is not None else None
                t_data = time.perf_counter() - t_start
                try:
                    scalars, times = trainer.train_step(synth_batch, real_batch)
                except NonFiniteLossError as e:
                    last = f"{ckpt_path} (step {load_checkpoint(ckpt_path)['step']})" if ckpt_path.exists() else "none"
                    raise NonFiniteLossError(f"{e}; stopped, last good checkpoint: {last}") from None
                step = trainer.step  # steps done
                times.update(time_data=t_data, time_step=time.perf_counter() - t_start)
                row = {"step": step, **scalars, **times, "lr": trainer.opt["P"].param_groups[0]["lr"]}
                bar.update(1)
                logged = step % tcfg.log_interval == 0 or step == total_steps
                if logged:
                    bar.set_postfix({k: f"{v:.3g}" for k, v in scalars.items() if k.startswith("loss")})
                log_step(trainer, writer, metrics_file, run_dir, row, scalars, times, logged=logged,
                         sample_interval=tcfg.sample_interval)
                stopping = stop is not None and stop()
                if step % tcfg.checkpoint_interval == 0 or step == total_steps or stopping:
                    checkpoint(row)
                if stopping and step < total_steps:
                    raise Interrupted(f"stopped at step {step} of {total_steps}; checkpoint saved to {ckpt_path}")
    finally:
        bar.close()
        writer.close()
    if trainer.step == start and not ckpt_path.exists():
        checkpoint(row)
    return {"step": trainer.step, "run_dir": run_dir, "checkpoint": ckpt_path, "metrics": row}
