"""Generality across sensors: the pose estimator on an outdoor LiDAR pair it never trained on, against ICP and
FPFH + RANSAC + ICP (indoor defaults, and with voxels scaled by hand to the scene).

The estimator's weights were learned from indoor Kinect frames (TUM RGB-D, 7-Scenes); the pair is two sweeps of
an outdoor spinning LiDAR (~70 k points each, ~70 m across, ../shared/data/real/lidar_pair_fast_gicp, reference
pose from fast_gicp: its own test accepts 1 deg / 5 cm). Every method is run on the pair both ways, and on the
pair with the source sweep turned about the vertical by ``--yaw`` degrees (a known rotation composed with the
reference, so the truth stays exact): rotation invariance, not a small-motion prior. Times are wall-clock per
pair on this machine, one at a time. Usage:

    .venv/bin/python bench/bench_lidar.py --checkpoint training/weights/pose_match_small.pt --yaw 0 30 90 180
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=str(REPO / "training/weights/pose_match_small.pt"))
    p.add_argument("--data", default=str(REPO.parent / "shared/data/real/lidar_pair_fast_gicp"),
                   help="folder with 251370668.pcd (target), 251371071.pcd (source), relative.txt")
    p.add_argument("--yaw", type=float, nargs="+", default=[0.0, 30.0, 90.0, 180.0],
                   help="extra turns of the source sweep about the vertical, degrees")
    p.add_argument("--scaled-voxel", type=float, default=0.3,
                   help="voxel (m) of the hand-scaled FPFH row (ICP distance 2x)")
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from synthseq.datasets.real.pointcloud_folder import read_cloud_file
    from synthseq.training import baselines as B
    from synthseq.training import metrics as M
    from synthseq.training.estimator import load_estimator

    folder = Path(args.data)
    files = [folder / "251370668.pcd", folder / "251371071.pcd", folder / "relative.txt"]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        print(f"bench_lidar: {missing[0]}: not found (the LiDAR pair lives in ../shared/data/real)", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    target, source = read_cloud_file(files[0]), read_cloud_file(files[1])
    target_from_source = np.loadtxt(files[2])
    est = load_estimator(args.checkpoint)
    est(target[::50], source[::50])  # warm-up (imports, Open3D initialisation)
    v = args.scaled_voxel
    methods = {
        "ours": lambda a, b: est(a, b)[0],
        "icp": lambda a, b: B.icp_from_identity(a, b).a_from_b,
        "fpfh_ransac_icp": lambda a, b: B.fpfh_ransac_icp(a, b).a_from_b,
        f"fpfh_ransac_icp_voxel{v:g}": lambda a, b: B.fpfh_ransac_icp(a, b, voxel_m=v, max_correspondence_m=2 * v).a_from_b,
    }
    rows = []
    for yaw in args.yaw:
        c, s = np.cos(np.radians(yaw)), np.sin(np.radians(yaw))
        turn = np.eye(4)
        turn[:2, :2] = [[c, -s], [s, c]]  # about z, the sweeps' vertical
        turned = (source @ turn[:3, :3].T).astype(np.float32)
        truth = target_from_source @ np.linalg.inv(turn)  # target <- source <- turned source
        for direction, a, b, gt in (("source->target", target, turned, truth),
                                    ("target->source", turned, target, np.linalg.inv(truth))):
            for name, fn in methods.items():
                t0 = time.perf_counter()
                pose = fn(a, b)
                sec = time.perf_counter() - t0
                rot, trans_cm = (float(e) for e in M.relative_pose_errors(pose, gt))
                ok = bool(M.success_mask(rot, trans_cm, max_rot_deg=1.0))
                rows.append({"yaw_deg": yaw, "direction": direction, "method": name, "rot_err_deg": round(rot, 3),
                             "trans_err_cm": round(trans_cm, 2), "within_1deg_5cm": ok, "seconds": round(sec, 3)})
                print(f"yaw {yaw:5.0f}  {direction:15s} {name:26s} {rot:8.2f} deg {trans_cm:8.1f} cm "
                      f"{'ok ' if ok else 'BAD'} {sec:6.2f} s", flush=True)
    print("\n| method | pairs within 1 deg / 5 cm | median rotation error | median time per pair |")
    print("|---|---|---|---|")
    for name in methods:
        r = [x for x in rows if x["method"] == name]
        print(f"| {name} | {sum(x['within_1deg_5cm'] for x in r)} / {len(r)} | "
              f"{np.median([x['rot_err_deg'] for x in r]):.2f} deg | {np.median([x['seconds'] for x in r]):.2f} s |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
