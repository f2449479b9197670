"""`synthseq register`: the trained pose estimator on your own data: two point clouds, or a whole capture chained
into a trajectory (no ground truth needed; errors are reported where the capture has it).

    synthseq register A.ply B.pcd [--out a_from_b.txt]        # the 4x4 a_from_b mapping B's points into A's frame
    synthseq register --capture PATH[@START:STOP] [--gap 1] --out trajectory.tum

Clouds: PLY / PCD / NPY / XYZ files (``datasets.real.pointcloud_folder.read_cloud_file``), both in their own sensor
frames. Captures: TUM RGB-D, 7-Scenes or point-cloud folders (as ``synthseq evaluate --real``); frames t and
t + gap are registered for t = 0, gap, 2 gap, ... and the estimates chained (from the ground-truth first pose where
the capture has one, else from the identity) into a TUM trajectory (evo reads it), with one CSV row per pair
(confidence, time and, with ground truth, the pair's rotation / translation error) beside it. The weights are the
shipped ``training/weights/pose_match_small.pt`` unless ``--checkpoint`` names a run or checkpoint. Existing
outputs are refused unless ``--overwrite``; outputs are written to temporary files and renamed at the end (folders
created), so a failing run leaves nothing half-written and no folder it made.
"""

from __future__ import annotations

from pathlib import Path

from synthseq.errors import UsageError
from synthseq.pipelines.view import write_file_atomic, write_files_atomic

LOW_CONFIDENCE = 0.3  # below this the summary counts a pair as unsure (evaluate's ours_fallback threshold)


def shipped_weights() -> Path:
    """The pose weights shipped with the package (``training/weights/pose_match_small.pt``)."""
    import synthseq.training

    return Path(synthseq.training.__file__).resolve().parent / "weights" / "pose_match_small.pt"


def configure_parser(p) -> None:
    p.add_argument("clouds", nargs="*", metavar="CLOUD",
                   help="two point-cloud files A B (PLY/PCD/NPY/XYZ); prints a_from_b (B's points into A's frame)")
    p.add_argument("--capture", metavar="PATH[@START:STOP]",
                   help="a capture folder (TUM RGB-D, 7-Scenes, point clouds) to chain into a trajectory (needs --out)")
    p.add_argument("--gap", type=int, default=1, metavar="D",
                   help="frame gap between registered frames (capture; default 1)")
    p.add_argument("--checkpoint", metavar="RUN_DIR|FILE",
                   help="a `synthseq train` run or checkpoint (default: the shipped weights)")
    p.add_argument("--fallback-below", type=float, default=0.0, metavar="C",
                   help="below this confidence also try FPFH + RANSAC + ICP and keep its pose where it fits "
                        f"better (0 = never; evaluation's ours_fallback uses {LOW_CONFIDENCE})")
    p.add_argument("--icp", action="store_true",
                   help="refine each pose by point-to-plane ICP on the dense clouds (indoor defaults: 2 cm voxels, "
                        "5 cm correspondences)")
    p.add_argument("--max-depth", type=float, metavar="M",
                   help="ignore points farther than this (m); default: 3 for depth captures, none otherwise")
    p.add_argument("--seed", type=int, default=0, help="point-sampling and RANSAC seed (default 0)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="device for the network")
    p.add_argument("--out", metavar="FILE", help="pose (text, 4 rows) or, with --capture, the TUM trajectory (and "
                   "FILE's stem + .pairs.csv beside it); folders are created")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def check_args(args) -> None:
    """Raise UsageError for a bad combination or value of flags (before anything is read)."""
    if args.capture is None and len(args.clouds) != 2:
        raise UsageError(f"expected two point-cloud files A B, or --capture PATH; got {len(args.clouds)} file(s)")
    if args.capture is not None and args.clouds:
        raise UsageError("give either two point-cloud files or --capture, not both")
    if args.capture is not None and not args.out:
        raise UsageError("--capture needs --out FILE (the TUM trajectory to write)")
    if args.gap < 1:
        raise UsageError(f"--gap: expected an integer >= 1, got {args.gap}")
    if not 0.0 <= args.fallback_below <= 1.0:
        raise UsageError(f"--fallback-below: expected a confidence in [0, 1], got {args.fallback_below}")
    if args.max_depth is not None and not args.max_depth > 0:
        raise UsageError(f"--max-depth: expected a positive distance in metres, got {args.max_depth}")
    if args.out:
        from synthseq.pipelines.view import check_output_file

        if args.out.endswith(("/", "\\")):
            raise UsageError(f"--out {args.out}: expected a file name, not a folder")
        for out in output_paths(args):
            check_output_file(out, args.overwrite)
    for f in args.clouds:
        if Path(f).is_dir():
            raise UsageError(f"{f}: is a folder; expected a point-cloud file (a folder of frames: --capture)")
        if not Path(f).is_file():
            raise FileNotFoundError(f"{f}: no such file")


def output_paths(args) -> list[Path]:
    """The files ``--out`` makes: the pose, or the trajectory and its ``.pairs.csv``."""
    out = Path(args.out)
    return [out] if args.capture is None else [out, out.with_name(out.stem + ".pairs.csv")]


def load(args):
    """The estimator and its training captures (for the seen-in-training note)."""
    from synthseq.training.checkpoint import load_pose_model
    from synthseq.training.config import resolve_device
    from synthseq.training.estimator import Estimator, EstimatorOptions

    device = resolve_device(args.device, key="--device")
    model, tcfg = load_pose_model(args.checkpoint or shipped_weights(), device=device)
    options = EstimatorOptions(classical_below=args.fallback_below, seed=args.seed)
    return Estimator(model, options, device), list(tcfg.real)


def register_pair(estimator, cloud_a, cloud_b, icp: bool):
    """(a_from_b (4, 4), confidence, seconds) of one pair, ICP-refined on the given clouds when ``icp``."""
    import time

    from synthseq.training import baselines

    t0 = time.perf_counter()
    a_from_b, confidence = estimator(cloud_a, cloud_b)
    if icp:
        a_from_b = baselines.refine_icp(cloud_a, cloud_b, a_from_b).a_from_b
    return a_from_b, float(confidence), time.perf_counter() - t0


def run_pair(args, estimator) -> int:
    import numpy as np

    from synthseq.datasets.real.pointcloud_folder import read_cloud_file

    clouds = []
    for f in args.clouds:
        c = read_cloud_file(f)
        if args.max_depth is not None:
            c = c[np.linalg.norm(c, axis=1) <= args.max_depth]
        if len(c) < 3:
            raise UsageError(f"{f}: {len(c)} points{' within --max-depth' if args.max_depth else ''}; need >= 3")
        clouds.append(c)
    a_from_b, confidence, seconds = register_pair(estimator, clouds[0], clouds[1], args.icp)
    text = "\n".join(" ".join(f"{v: .9f}" for v in row) for row in a_from_b) + "\n"
    if args.out:
        write_file_atomic(Path(args.out), lambda p: Path(p).write_text(text))
    print(f"# a_from_b: maps {args.clouds[1]} ({len(clouds[1])} points) into the frame of {args.clouds[0]} "
          f"({len(clouds[0])} points)")
    print(text, end="")
    unsure = (f" (unsure: below {LOW_CONFIDENCE}, check it or try --fallback-below {LOW_CONFIDENCE})"
              if confidence < LOW_CONFIDENCE else "")
    print(f"confidence {confidence:.3f}{unsure}; {seconds:.2f} s")
    if args.out:
        print(f"pose: {args.out}")
    return 0


def run_capture(args, estimator, train_real: list[str]) -> int:
    import csv

    import numpy as np

    from synthseq.datasets.real import detect_format, parse_capture_spec
    from synthseq.datasets.trajectory import write_tum_trajectory
    from synthseq.progress import progress as tqdm
    from synthseq.training import metrics as M
    from synthseq.training.evaluation.data import load_real_sequence, real_overlaps

    spec = parse_capture_spec(args.capture)
    max_depth = args.max_depth if args.max_depth is not None else (
        None if detect_format(spec.path) == "pointclouds" else 3.0)
    seq = load_real_sequence(args.capture, num_points=64, max_depth_m=max_depth, seed=args.seed)
    frames = np.arange(0, seq.num_frames, args.gap)
    if len(frames) < 2:
        raise UsageError(f"--capture {args.capture}: {seq.num_frames} frame(s), fewer than 2 at --gap {args.gap}")
    notes = []
    seen = real_overlaps([args.capture], train_real, notes)
    gt = seq.world_from_camera
    rel, confidence, seconds, rot, trans = [], [], [], [], []
    bar = None if args.no_progress else tqdm(total=len(frames) - 1, unit="pair", desc="register")
    dense_b = seq.dense(int(frames[0]))
    for ta, tb in zip(frames[:-1], frames[1:]):
        dense_a, dense_b = dense_b, seq.dense(int(tb))
        a_from_b, conf, secs = register_pair(estimator, dense_a, dense_b, args.icp)
        rel.append(a_from_b)
        confidence.append(conf)
        seconds.append(secs)
        if gt is not None:
            r, t = M.relative_pose_errors(a_from_b[None], M.relative_pose(gt[ta], gt[tb])[None])
            rot.append(r[0])
            trans.append(t[0])
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    start = gt[frames[0]] if gt is not None and np.all(np.isfinite(gt[frames[0]])) else None
    traj = M.chain_relative_poses(np.stack(rel), start)
    out, pairs_csv = output_paths(args)
    origin = "the ground-truth pose of the first frame" if start is not None else "the first frame (identity)"
    header = (f"synthseq register on {seq.name}, gap {args.gap}: frame-to-frame estimates chained from {origin}, "
              "world_from_camera")

    def write_csv(p):
        with open(p, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["frame_a", "frame_b", "confidence", "seconds"]
                       + (["rot_err_deg", "trans_err_cm"] if gt is not None else []))
            for k, (ta, tb) in enumerate(zip(frames[:-1], frames[1:])):
                w.writerow([seq.first_frame + int(ta), seq.first_frame + int(tb), f"{confidence[k]:.4f}",
                            f"{seconds[k]:.4f}"] + ([f"{rot[k]:.4f}", f"{trans[k]:.4f}"] if gt is not None else []))

    write_files_atomic({pairs_csv: write_csv,
                        out: lambda p: write_tum_trajectory(p, seq.timestamps[frames], traj, header=header)})

    conf = np.array(confidence)
    print(f"{seq.name}: {len(conf)} pairs at gap {args.gap}; median {np.median(seconds):.2f} s per pair; confidence "
          f"median {np.median(conf):.2f}, {int((conf < LOW_CONFIDENCE).sum())} pair(s) below {LOW_CONFIDENCE}")
    if gt is not None:
        rot, trans = np.array(rot), np.array(trans)
        ok = np.isfinite(rot)
        if ok.any():
            good = M.success_mask(rot[ok], trans[ok])
            print(f"against the capture's ground truth ({int(ok.sum())} pairs with poses): median "
                  f"{np.median(rot[ok]):.2f} deg / {np.median(trans[ok]):.2f} cm, {100 * good.mean():.1f}% within "
                  f"5 deg and 5 cm")
    for o in seen:  # real_overlaps words it for evaluate's --real
        message = o.message.replace("--real ", "--capture ", 1)
        print(f"note: SEEN IN TRAINING: {message}; these errors are not held-out numbers")
    for n in notes + seq.notes:
        print(f"note: {n}")
    print(f"trajectory: {out}\npairs: {pairs_csv}")
    return 0


def run(args) -> int:
    check_args(args)
    estimator, train_real = load(args)
    if args.capture is None:
        return run_pair(args, estimator)
    return run_capture(args, estimator, train_real)
