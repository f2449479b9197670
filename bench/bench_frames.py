"""Generality across sensors and rooms: the pose estimator on single real frames from datasets it never trained on,
each seen again from a second, known camera pose, against ICP and FPFH + RANSAC + ICP.

Frames (../shared/data/real; none is TUM fr1 or 7-Scenes, the training captures): TUM fr3 (another Kinect, another
room), NYU Depth v2 (raw Kinect disparity), SUN RGB-D, PCL's office (organised Kinect cloud, 1.8-5.4 m), PCL's
stereo table scene (a stereo rig, not a structured-light sensor) and PCL's grabber frame. The second view is made
from the first one's real points: a camera moved by a known rotation (about a random axis, around its own centre)
and translation, the points z-buffered into its 320x240 image (the nearest point per pixel; pixels seen through a
surface's gaps, farther than 10% beyond their 3x3 neighbourhood's nearest, dropped), then the Kinect sensor model
(generator/sensor.py: disparity quantisation, axial and lateral noise, edge dropout) applied to that depth and the
image back-projected. So the pair has partial overlap, disocclusion holes and fresh noise on one side, and an exact
ground truth; its limit: surfaces the first view did not see are missing from the second (no new geometry comes
into view), and the two views share the first frame's own sensor noise.

Every method gets the same two dense clouds (depth up to ``--max-depth``), as in ``synthseq evaluate``; success =
< 5 deg and < 5 cm. Times are wall-clock per pair, one at a time. Usage:

    .venv/bin/python bench/bench_frames.py --checkpoint training/weights/pose_match_small.pt --motions 4
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# (rotation deg, translation m) of the second view, cycled over the motions of each frame
MOTIONS = ((5.0, 0.05), (10.0, 0.10), (20.0, 0.15), (30.0, 0.20))
FRAMES = ("tum_fr3_office", "nyu_v2", "sun_rgbd", "pcl_grabber", "pcl_office_kinect", "pcl_table_stereo")
METHODS = ("identity", "icp", "fpfh_ransac_icp", "ours", "ours_fallback")


def load_frames(root: Path, max_depth_m: float, names=FRAMES) -> dict:
    """name -> (M, 3) float32 camera-frame points of each real frame in ``names`` (OpenCV axes, metres)."""
    import numpy as np
    from PIL import Image

    from synthseq.datasets.real.depth import read_depth_png
    from synthseq.datasets.real.pointcloud_folder import read_cloud_file
    from synthseq.geometry import backproject_depth

    primesense = np.array([[525.0, 0, 319.5], [0, 525.0, 239.5], [0, 0, 1]])  # Open3D's default for NYU / SUN

    def nyu(path):
        raw = np.fromfile(path, dtype="<u2", offset=len(b"P5\n640 480\n65535\n")).reshape(480, 640).astype(float)
        return np.where(raw < 2047, 351.3 / (1092.5 - raw), 0.0)  # NYU toolbox: raw disparity -> metres

    def sun(path):
        v = np.asarray(Image.open(path)).astype(np.uint16)
        return ((v >> 3) | (v << 13)).astype(np.float64) / 1000.0  # SUN toolbox: bits rotated by 3, millimetres

    single, pcl = root / "single_frames_open3d", root / "pcl_test_clouds"
    depth_frames = {
        "tum_fr3_office": (lambda: read_depth_png(single / "TUM_depth.png") / 5000.0,
                           np.array([[535.4, 0, 320.1], [0, 539.2, 247.6], [0, 0, 1]])),
        "nyu_v2": (lambda: nyu(single / "NYU_depth.pgm"), primesense),
        "sun_rgbd": (lambda: sun(single / "SUN_depth.png"), primesense),
        "pcl_grabber": (lambda: np.asarray(Image.open(pcl / "grabber_sequences/tiff/"
                                                      "frame_20121214T142255.814212_depth.tiff")) / 1000.0,
                        np.array([[525.0, 0, 320], [0, 525.0, 240], [0, 0, 1]])),
    }
    out = {}
    for name, (read, K) in depth_frames.items():
        if name not in names:
            continue
        depth = np.asarray(read(), dtype=np.float64)
        depth[depth > max_depth_m] = 0.0
        out[name] = backproject_depth(depth, K)[0]
    for name, file in (("pcl_office_kinect", "office1.pcd"), ("pcl_table_stereo", "table_scene_mug_stereo_textured.pcd")):
        if name not in names:
            continue
        p = read_cloud_file(pcl / file)
        out[name] = p[(p[:, 2] > 0) & (p[:, 2] <= max_depth_m)].astype(np.float32)
    return {n: out[n] for n in names}


def second_view(points, a_from_b, rng):
    """The cloud a camera at ``a_from_b`` (relative to the frame's camera) would capture of ``points``: z-buffered
    into a 320x240 image, see-through pixels dropped, the Kinect sensor model applied, back-projected."""
    import numpy as np

    from synthseq.generator.sensor import SensorConfig, apply_sensor
    from synthseq.geometry import backproject_depth, invert_pose, project_points
    from synthseq.types import Camera

    cam = Camera.from_focal(262.5, 262.5, 159.5, 119.5, 320, 240)
    b_from_a = invert_pose(a_from_b)
    p = points.astype(np.float64) @ b_from_a[:3, :3].T + b_from_a[:3, 3]
    p = p[p[:, 2] > 0.1]
    u, v = np.round(project_points(cam.intrinsics, p)).astype(np.int64).T
    ok = (u >= 0) & (u < cam.width) & (v >= 0) & (v < cam.height)
    pix, z = v[ok] * cam.width + u[ok], p[ok, 2]
    depth = np.full(cam.width * cam.height, np.inf)
    np.minimum.at(depth, pix, z)
    depth = depth.reshape(cam.height, cam.width)
    padded = np.pad(depth, 1, constant_values=np.inf)
    nearest = np.min([padded[i:i + cam.height, j:j + cam.width] for i in range(3) for j in range(3)], axis=0)
    depth[~np.isfinite(depth) | (depth > 1.1 * nearest)] = 0.0
    noisy, _ = apply_sensor(depth.astype(np.float32), np.full(depth.shape, -1, np.int16), cam, SensorConfig(), rng)
    return backproject_depth(noisy, cam.intrinsics)[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=str(REPO / "training/weights/pose_match_small.pt"))
    p.add_argument("--data", default=str(REPO.parent / "shared/data/real"),
                   help="folder with single_frames_open3d/ and pcl_test_clouds/")
    p.add_argument("--motions", type=int, default=4, help="second views per frame (cycling through "
                   + ", ".join(f"{r:g} deg / {100 * t:g} cm" for r, t in MOTIONS) + ")")
    p.add_argument("--max-depth", type=float, default=4.0, help="depth kept in both clouds, metres")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fallback-below", type=float, default=0.3,
                   help="ours_fallback: FPFH + RANSAC + ICP tried below this confidence of ours")
    p.add_argument("--frames", nargs="+", choices=FRAMES, default=list(FRAMES), help="which frames (default: all)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="which methods (default: all)")
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args(argv)

    root = Path(args.data)
    for sub in ("single_frames_open3d/TUM_depth.png", "pcl_test_clouds/office1.pcd"):
        if not (root / sub).is_file():
            print(f"bench_frames: {root / sub}: not found (the frames live in ../shared/data/real)", file=sys.stderr)
            return 2
    import numpy as np
    import torch
    from scipy.spatial.transform import Rotation

    from synthseq.training import baselines as B
    from synthseq.training import metrics as M
    from synthseq.training.estimator import load_estimator

    torch.set_num_threads(1)
    frames = load_frames(root, args.max_depth, args.frames)
    est = load_estimator(args.checkpoint, seed=args.seed)
    est_fb = load_estimator(args.checkpoint, seed=args.seed, classical_below=args.fallback_below)
    first = next(iter(frames.values()))
    est(first[::20], first[::20])  # warm-up (imports, Open3D initialisation)
    every = {
        "identity": lambda a, b: np.eye(4),
        "icp": lambda a, b: B.icp_from_identity(a, b).a_from_b,
        "fpfh_ransac_icp": lambda a, b: B.fpfh_ransac_icp(a, b).a_from_b,
        "ours": lambda a, b: est(a, b)[0],
        "ours_fallback": lambda a, b: est_fb(a, b)[0],
    }
    methods = {m: every[m] for m in args.methods}
    rng = np.random.default_rng(args.seed)
    rows = []
    for name, cloud_a in frames.items():
        for k in range(args.motions):
            rot_deg, trans_m = MOTIONS[k % len(MOTIONS)]
            axis, direction = rng.normal(size=3), rng.normal(size=3)
            a_from_b = np.eye(4)
            a_from_b[:3, :3] = Rotation.from_rotvec(np.radians(rot_deg) * axis / np.linalg.norm(axis)).as_matrix()
            a_from_b[:3, 3] = trans_m * direction / np.linalg.norm(direction)
            cloud_b = second_view(cloud_a, a_from_b, rng)
            line = f"{name:18s} {rot_deg:4.0f} deg {100 * trans_m:4.0f} cm  {len(cloud_a):6d} / {len(cloud_b):6d} pts"
            for m, fn in methods.items():
                t0 = time.perf_counter()
                pose = fn(cloud_a, cloud_b)
                sec = time.perf_counter() - t0
                rot, trans_cm = M.relative_pose_errors(pose, a_from_b)
                ok = bool(M.success_mask(rot, trans_cm))
                rows.append({"frame": name, "motion_rot_deg": rot_deg, "motion_trans_cm": 100 * trans_m, "method": m,
                             "rot_err_deg": round(float(rot), 3), "trans_err_cm": round(float(trans_cm), 2),
                             "success": ok, "seconds": round(sec, 3), "points_b": int(len(cloud_b))})
                line += f" | {m} {'ok' if ok else '--'} {rot:5.1f} deg {sec:5.2f} s"
            print(line, flush=True)
    names = list(frames)
    print(f"\n{len(names)} frames x {args.motions} second views; success (< {M.SUCCESS_ROT_DEG:g} deg and "
          f"< {M.SUCCESS_TRANS_CM:g} cm) per frame, then pooled "
          "with the median time per pair\n")
    print("| method | " + " | ".join(names) + " | pooled | median time |")
    print("|---|" + "---|" * (len(names) + 2))
    for m in methods:
        r = [x for x in rows if x["method"] == m]
        per = [sum(x["success"] for x in r if x["frame"] == n) for n in names]
        print(f"| {m} | " + " | ".join(f"{s} / {args.motions}" for s in per)
              + f" | {sum(per)} / {len(r)} | {np.median([x['seconds'] for x in r]):.2f} s |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
