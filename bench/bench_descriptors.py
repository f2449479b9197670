"""Descriptor quality on real pairs: inlier ratio of the mutual-nearest-neighbour matches, FPFH vs P's descriptors.

The instrument behind "does training help the estimator at all" (issue 10): registration success moves in steps
of whole pairs, the share of correct matches among the putative ones moves with every pair. For each real pair
(t, t + d) with ground truth, both frames are voxel-sampled as the estimator samples them (2048 points,
``synthseq.geometry.voxel_points``, the same points for every method), described by each method, matched by
mutual nearest neighbours (``estimator.mutual_matches``), and a match counts as correct when the ground truth maps
its b point to within 1.5 median point spacings of its a point (the estimator's RANSAC inlier distance).
Methods: ``fpfh`` (the 33-bin FPFH histograms alone, Open3D, the classical baseline's features), ``untrained``
(P at its seed-0 initialisation: a fixed random projection of FPFH plus an untrained residual) and each
``--checkpoint``. Ground truth is read only to score.

Reported per method: mean inlier ratio (IR) with a 95% bootstrap interval (pairs resampled within each capture),
feature-match recall (share of pairs with IR > 5%), per capture and gap; and each method's paired difference to
``fpfh`` with its interval. Usage:

    .venv/bin/python bench/bench_descriptors.py --checkpoint training/weights/pose_match_small.pt \\
        --real ../shared/data/real/tum_fr1_xyz_b --real ../shared/data/real/7scenes_redkitchen@50:100 --pairs 6
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", action="append", default=[], metavar="[NAME=]PATH",
                   help="a run directory or checkpoint whose P descriptors to score (repeatable)")
    p.add_argument("--real", action="append", required=True, help="real capture with ground truth (repeatable)")
    p.add_argument("--gaps", type=int, nargs="+", default=[1, 5, 10, 20, 30])
    p.add_argument("--pairs", type=int, default=6, help="pairs per capture and gap, spread over the capture")
    p.add_argument("--points", type=int, default=2048)
    p.add_argument("--no-untrained", action="store_true", help="leave out the untrained P")
    p.add_argument("--json", type=Path, default=None, help="also write the results here (per-pair ratios included)")
    p.add_argument("--versus", default=None, metavar="NAME",
                   help="also give each method's paired difference to this one (a --checkpoint NAME)")
    args = p.parse_args(argv)

    import numpy as np
    import torch
    import torch.nn.functional as F
    from scipy.spatial import cKDTree

    from synthseq.geometry import voxel_points
    from synthseq.training.checkpoint import load_pose_model
    from synthseq.training.estimator import mutual_matches
    from synthseq.training.evaluation.data import load_real_sequence, pair_starts
    from synthseq.training.metrics import block_bootstrap_ci
    from synthseq.training.models import MatchPoseNet, fpfh_features

    torch.set_num_threads(1)
    methods = {"fpfh": lambda x: F.normalize(fpfh_features(x), dim=-1)}
    if not args.no_untrained:
        torch.manual_seed(0)
        methods["untrained"] = MatchPoseNet().eval().features
    for spec in args.checkpoint:
        name, _, path = spec.rpartition("=")
        model, _ = load_pose_model(path)
        if not hasattr(model, "features"):
            print(f"bench_descriptors: {path}: not a correspondence P (model.pose: regress)", file=sys.stderr)
            return 2
        methods[name or Path(path).stem] = model.features
    if args.versus is not None and args.versus not in methods:
        print(f"bench_descriptors: --versus {args.versus}: not one of {', '.join(methods)}", file=sys.stderr)
        return 2

    rows = []  # (capture, gap, method, inlier ratio, matches)
    start = time.time()
    for spec in args.real:
        seq = load_real_sequence(spec, 64, 3.0)
        if seq.world_from_camera is None:
            print(f"bench_descriptors: {spec}: no ground truth to score with", file=sys.stderr)
            return 2
        for d in args.gaps:
            for t in pair_starts(seq.num_frames, d, args.pairs, seq.pose_valid):
                t = int(t)
                G = np.linalg.inv(seq.world_from_camera[t]) @ seq.world_from_camera[t + d]
                rng = np.random.default_rng(0)
                pa = voxel_points(seq.dense(t), args.points, rng)
                pb = voxel_points(seq.dense(t + d), args.points, rng)
                if len(pa) < 3 or len(pb) < 3:
                    continue
                spacing = float(np.median(cKDTree(pa).query(pa, k=2)[0][:, 1]))
                pb_in_a = pb @ G[:3, :3].T + G[:3, 3]
                for name, f in methods.items():
                    with torch.no_grad():
                        fa = f(torch.from_numpy(pa)[None])[0].numpy()
                        fb = f(torch.from_numpy(pb)[None])[0].numpy()
                    c = mutual_matches(fa, fb, 30)
                    r = np.linalg.norm(pb_in_a[c[:, 0]] - pa[c[:, 1]], axis=1)
                    rows.append((seq.name, d, name, float(np.mean(r < 1.5 * spacing)), len(c)))
        print(f"# {spec}: done ({time.time() - start:.0f} s)", file=sys.stderr, flush=True)

    def table(name):
        sel = [r for r in rows if r[2] == name]
        ir = np.array([r[3] for r in sel])
        groups = np.array([r[0] for r in sel])
        lo, hi = block_bootstrap_ci(ir, groups, 1, binary=False)
        return sel, ir, groups, (lo, hi)

    out = {"pairs": 0, "methods": {}}
    base = table("fpfh")[1]
    versus = table(args.versus)[1] if args.versus else None
    caps = list(dict.fromkeys(r[0] for r in rows))
    vs = f" vs {args.versus} (paired) |" if args.versus else ""
    print(f"| method | inlier ratio % [95% CI] | vs fpfh (paired) |{vs} FMR (IR > 5%) | "
          + " | ".join(f"{c} gaps {'/'.join(map(str, args.gaps))}" for c in caps) + " |")
    print("|---|---|---|---|" + ("---|" if args.versus else "") + "---|" * len(caps))
    for name in methods:
        sel, ir, groups, (lo, hi) = table(name)
        dlo, dhi = block_bootstrap_ci(ir - base, groups, 1, binary=False)
        per = []
        for c in caps:
            per.append("/".join(f"{100 * np.mean([r[3] for r in sel if r[0] == c and r[1] == d]):.0f}"
                                if any(r[0] == c and r[1] == d for r in sel) else "-" for d in args.gaps))
        diff = "" if name == "fpfh" else f"{100 * (ir - base).mean():+.1f} [{100 * dlo:+.1f}, {100 * dhi:+.1f}]"
        out["methods"][name] = {"inlier_ratio": float(ir.mean()), "ci": [lo, hi],
                                "diff_vs_fpfh": float((ir - base).mean()), "diff_ci": [dlo, dhi],
                                "fmr": float(np.mean(ir > 0.05)), "per_pair": [float(x) for x in ir]}
        if versus is not None:
            vlo, vhi = block_bootstrap_ci(ir - versus, groups, 1, binary=False)
            out["methods"][name].update(diff_vs=float((ir - versus).mean()), diff_vs_ci=[vlo, vhi])
            diff += (f" | {100 * (ir - versus).mean():+.1f} [{100 * vlo:+.1f}, {100 * vhi:+.1f}]"
                     if name != args.versus else " | ")
        print(f"| {name} | {100 * ir.mean():.1f} [{100 * lo:.1f}-{100 * hi:.1f}] | {diff} | "
              f"{100 * np.mean(ir > 0.05):.0f}% | " + " | ".join(per) + " |")
        out["pairs"] = len(ir)
    print(f"{out['pairs']} pairs; {time.time() - start:.0f} s", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
