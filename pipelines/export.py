"""`synthseq export`: one sequence as per-frame PLY/PCD/NPZ clouds plus TUM trajectories (for CloudCompare, evo).

Layout written into ``--out DIR`` (created if missing)::

    DIR/clouds/frame-000000_view-0.ply   one cloud per (frame, view): the valid points only (num_valid
                                          rows; the resampled copies that pad shards to N are dropped),
                                          camera frame, or world frame with --world
    DIR/trajectories/camera_view-0.txt   world_from_camera of each view, TUM: t tx ty tz qx qy qz qw
    DIR/trajectories/object-0_<name>.txt world_from_object of each object, TUM
    DIR/sequence.json                    intrinsics, image sizes, object names, fps, frame, file list

Per-point fields: ``label`` (int32 object index, -1 background) and ``normals`` when the sequence has
them. PLY/PCD are written with Open3D's tensor API, which stores ``label`` as a named scalar field
(CloudCompare shows it as a scalar field; ``open3d.t.io.read_point_cloud`` gives ``pcd.point.label``).
NPZ files hold ``points`` (M, 3) float32, ``labels`` (M,) int16, ``normals`` (M, 3) float16 when
present, ``world_from_camera`` (4, 4), ``intrinsics`` (3, 3), ``timestamp``.

Existing files are never silently replaced: if any file the export would write exists already, nothing
is written and the command says so, unless ``--overwrite`` is given. Other files in DIR are left alone.
The files are written into a hidden staging folder beside DIR and moved in when all are written, so a
failed export leaves no partial files and no folder it created.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from synthseq.errors import UsageError

log = logging.getLogger(__name__)

FORMATS = ("ply", "pcd", "npz")


def configure_parser(parser) -> None:
    """Arguments of `synthseq export`."""
    from synthseq.pipelines.view import add_capture_arguments

    parser.add_argument("path", help="a dataset directory (manifest.json), a shard (.h5) or a real capture folder")
    parser.add_argument("--sequence", metavar="ID",
                        help="sequence id (e.g. 3 or 000003); required when PATH holds several sequences")
    parser.add_argument("--format", choices=FORMATS, default="ply", help="cloud file format (default ply)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
    parser.add_argument("--world", action="store_true", help="clouds in the world frame (default: camera frame)")
    parser.add_argument("--overwrite", action="store_true", help="replace files a previous export wrote")
    add_capture_arguments(parser)


def cloud_name(frame: int, view: int, fmt: str) -> str:
    """``frame-000012_view-1.ply``."""
    return f"frame-{frame:06d}_view-{view}.{fmt}"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "object"


def export_plan(seq, fmt: str) -> dict[str, list[str]]:
    """The relative paths an export of ``seq`` writes: {"clouds": [...], "trajectories": [...], "meta": [...]}."""
    if fmt not in FORMATS:
        raise UsageError(f"format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    clouds = [f"clouds/{cloud_name(t, v, fmt)}" for t in range(seq.num_frames) for v in range(seq.num_views)]
    traj = []
    if seq.camera_poses is not None:
        traj += [f"trajectories/camera_view-{v}.txt" for v in range(seq.num_views)]
    if seq.object_poses is not None:
        traj += [f"trajectories/object-{k}_{_safe(n)}.txt" for k, n in enumerate(seq.object_names)]
    return {"clouds": clouds, "trajectories": traj, "meta": ["sequence.json"]}


def frame_arrays(seq, frame: int, view: int, world: bool) -> dict[str, np.ndarray]:
    """The valid points of one (frame, view) and their per-point fields.

    Returns:
        {"points": (M, 3) float32 camera frame (world frame with ``world``), "labels": (M,) int16 if the
        sequence has labels, "normals": (M, 3) float16 if it has normals (rotated with ``world``)}.

    Raises:
        UsageError: ``world`` for a sequence without camera poses.
    """
    from synthseq.geometry import transform_points

    n = int(min(seq.num_valid[frame, view], seq.num_points))
    points = seq.points[frame, view, :n]
    out = {}
    if world:
        if seq.camera_poses is None:
            raise UsageError(f"--world needs camera poses; sequence {seq.name} has none")
        pose = seq.camera_poses[frame, view]
        points = transform_points(pose, points.astype(np.float64)).astype(np.float32)
    out["points"] = np.ascontiguousarray(points, np.float32)
    if seq.labels is not None:
        out["labels"] = seq.labels[frame, view, :n]
    if seq.normals is not None:
        normals = seq.normals[frame, view, :n]
        if world:
            normals = (normals.astype(np.float64) @ seq.camera_poses[frame, view, :3, :3].T).astype(np.float16)
        out["normals"] = normals
    return out


def write_cloud(path, arrays: dict[str, np.ndarray], fmt: str, extra: dict | None = None) -> None:
    """Write one cloud: PLY/PCD through Open3D's tensor PointCloud (``label`` int32 scalar field,
    ``normals``), or NPZ (arrays as given, plus ``extra``)."""
    path = Path(path)
    if fmt == "npz":
        np.savez(path, **arrays, **(extra or {}))
        return
    if len(arrays["points"]) == 0:
        _write_empty_cloud(path, fmt, "labels" in arrays, "normals" in arrays)
        return
    import open3d as o3d

    o3c = o3d.core
    pcd = o3d.t.geometry.PointCloud()
    pcd.point.positions = o3c.Tensor(np.ascontiguousarray(arrays["points"], np.float32))
    if "labels" in arrays:
        # PLY/PCD writers take no int16; int32 keeps -1 for the background.
        pcd.point.label = o3c.Tensor(np.ascontiguousarray(arrays["labels"], np.int32)[:, None])
    if "normals" in arrays:
        pcd.point.normals = o3c.Tensor(np.ascontiguousarray(arrays["normals"], np.float32))
    if not o3d.t.io.write_point_cloud(str(path), pcd, write_ascii=False, compressed=False):
        raise OSError(f"{path}: Open3D could not write the point cloud")


def _write_empty_cloud(path: Path, fmt: str, labels: bool, normals: bool) -> None:
    """A valid PLY/PCD with no points (Open3D refuses to write one; its readers accept it, with a warning),
    for a (frame, view) where no point was valid."""
    fields = [("x", "F"), ("y", "F"), ("z", "F")] + ([("label", "I")] if labels else []) + (
        [("normal_x", "F"), ("normal_y", "F"), ("normal_z", "F")] if normals else [])
    if fmt == "ply":
        names = {"normal_x": "nx", "normal_y": "ny", "normal_z": "nz"}
        props = [f"property {'int' if t == 'I' else 'float'} {names.get(n, n)}" for n, t in fields]
        text = "\n".join(["ply", "format binary_little_endian 1.0", "element vertex 0", *props, "end_header"])
    else:
        k = len(fields)
        text = "\n".join(["# .PCD v0.7 - Point Cloud Data file format", "VERSION 0.7",
                          "FIELDS " + " ".join(n for n, _ in fields), "SIZE " + " ".join(["4"] * k),
                          "TYPE " + " ".join(t for _, t in fields), "COUNT " + " ".join(["1"] * k), "WIDTH 0",
                          "HEIGHT 1", "VIEWPOINT 0 0 0 1 0 0 0", "POINTS 0", "DATA binary"])
    path.write_text(text + "\n")


def export_sequence(seq, out_dir, fmt: str = "ply", world: bool = False, overwrite: bool = False,
                    source: str = "") -> list[Path]:
    """Export one sequence (see the module docstring for the layout).

    Args:
        seq: PointSequence. out_dir: output directory. fmt: ply, pcd or npz. world: clouds in the world
        frame. overwrite: replace existing files. source: where the sequence came from (sequence.json).

    Returns:
        The paths written.

    Raises:
        FileExistsError: some of the files exist already and ``overwrite`` is False (nothing written).
        UsageError: ``world`` without camera poses.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: exists and is not a directory")
    if world and seq.camera_poses is None:
        raise UsageError(f"--world needs camera poses; sequence {seq.name} has none")
    plan = export_plan(seq, fmt)
    rel = plan["clouds"] + plan["trajectories"] + plan["meta"]
    existing = [r for r in rel if (out / r).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out}: {len(existing)} of the {len(rel)} files to write exist already (e.g. "
                              f"{existing[0]}); pass --overwrite to replace them, or choose another --out")
    # Everything is written into a hidden staging folder beside DIR and moved in at the end, so a failure
    # (full disk, a bad frame, Ctrl-C) leaves DIR as it was and no half-written export.
    created = [p for p in [out, *out.parents] if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        _write_export(seq, staging, plan, fmt, world, source)
        if not out.exists():
            mask = os.umask(0)
            os.umask(mask)
            os.chmod(staging, 0o777 & ~mask)  # mkdtemp makes 0700 folders; give the usual permissions
            os.rename(staging, out)
        else:
            for r in rel:
                (out / r).parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / r, out / r)
            shutil.rmtree(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for p in created[1:]:  # the ancestors this call made (DIR itself never existed if we get here)
            try:
                p.rmdir()
            except OSError:
                break
        raise
    return [out / r for r in rel]


def _write_export(seq, out: Path, plan: dict, fmt: str, world: bool, source: str) -> None:
    from synthseq.datasets.trajectory import write_tum_trajectory
    from synthseq.progress import progress

    (out / "clouds").mkdir(parents=True, exist_ok=True)
    items = [(t, v) for t in range(seq.num_frames) for v in range(seq.num_views)]
    for (t, v), r in zip(progress(items, desc="export", unit="cloud"), plan["clouds"]):
        extra = {"intrinsics": seq.intrinsics[v], "timestamp": np.float64(seq.timestamps[t])}
        if seq.camera_poses is not None:
            extra["world_from_camera"] = seq.camera_poses[t, v]
        write_cloud(out / r, frame_arrays(seq, t, v, world), fmt, extra)
    trajectories = iter(plan["trajectories"])
    if plan["trajectories"]:
        (out / "trajectories").mkdir(parents=True, exist_ok=True)
    if seq.camera_poses is not None:
        for v in range(seq.num_views):
            write_tum_trajectory(out / next(trajectories), seq.timestamps, seq.camera_poses[:, v],
                                 header=f"synthseq {seq.name}: world_from_camera of view {v}")
    if seq.object_poses is not None:
        for k, name in enumerate(seq.object_names):
            write_tum_trajectory(out / next(trajectories), seq.timestamps, seq.object_poses[:, k],
                                 header=f"synthseq {seq.name}: world_from_object of object {k} ({name})")
    meta = {
        "source": source, "sequence": seq.name, "format": fmt, "frame": "world" if world else "camera",
        "num_frames": seq.num_frames, "num_views": seq.num_views, "fps": seq.fps, "seed": seq.seed,
        "timestamps": seq.timestamps.tolist(),
        "intrinsics": seq.intrinsics.tolist(), "image_size": seq.image_size.tolist(),
        "object_names": list(seq.object_names), "num_valid": seq.num_valid.tolist(),
        "clouds": plan["clouds"], "trajectories": plan["trajectories"],
        "conventions": "metres; OpenCV camera axes (x right, y down, z forward); TUM rows "
                       "t tx ty tz qx qy qz qw = world_from_camera / world_from_object; label -1 = background",
    }
    (out / "sequence.json").write_text(json.dumps(meta, indent=1) + "\n")


def run(args) -> int:
    """`synthseq export`: read the sequence, refuse to overwrite, write clouds + trajectories."""
    from synthseq.pipelines.view import capture_options, load_sequence

    seq = load_sequence(args.path, args.sequence, require_id=True, capture_options=capture_options(args))
    written = export_sequence(seq, args.out, args.format, world=args.world, overwrite=args.overwrite,
                              source=str(args.path))
    n_clouds = sum(1 for p in written if p.parent.name == "clouds")
    n_traj = sum(1 for p in written if p.parent.name == "trajectories")
    print(f"wrote {n_clouds} {args.format} clouds ({'world' if args.world else 'camera'} frame) and "
          f"{n_traj} TUM trajectories of sequence {seq.name} to {args.out}")
    return 0
