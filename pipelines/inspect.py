"""`synthseq info` (a summary table of a dataset or shard) and `synthseq verify` (schema + checksums)."""

from __future__ import annotations

import sys
from pathlib import Path


def configure_info_parser(p) -> None:
    p.add_argument("path", help="a dataset directory (with manifest.json), one shard .h5 file, or a real capture "
                                "folder, optionally a frame range PATH@START:STOP (frames, intrinsics, ground truth)")


def configure_verify_parser(p) -> None:
    p.add_argument("path", help="a dataset directory (with manifest.json)")
    p.add_argument("--quick", action="store_true", help="checksums only, skip the per-sequence schema check")


def _table(rows: list[list], header: list[str]) -> str:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def shard_rows(path: Path) -> list[list]:
    """One row per sequence: id, seed, T, V, N, K, image size, mean valid fraction, stored arrays."""
    from synthseq.datasets.shards import ShardReader

    rows = []
    with ShardReader(path) as r:
        for key in r.sequence_ids:
            a = r.attrs(key)
            pts = r.dataset(key, "points")
            T, V, N, _ = pts.shape
            nv = r.dataset(key, "num_valid")[()]
            size = r.dataset(key, "image_size")[()]
            optional = [n for n in ("labels", "normals", "depth", "instance", "camera_poses", "object_poses")
                        if n in r._group(key)]
            rows.append([key, a.get("seed"), T, V, N, len(a["object_names"]),
                         f"{int(size[0, 0])}x{int(size[0, 1])}", f"{float(nv.mean()):.0f}",
                         ",".join(optional)])
    return rows


def run_info(args) -> int:
    from synthseq.datasets.shards import MANIFEST, read_manifest

    from synthseq.datasets.real import describe_capture, parse_capture_spec

    spec = parse_capture_spec(args.path)  # real captures (and frame ranges of them): datasets/real
    if spec.has_range or (spec.path.is_dir() and not (spec.path / MANIFEST).is_file()) or (
            spec.path.is_file() and spec.path.suffix.lower() not in (".h5", ".hdf5")):
        print(describe_capture(spec))
        return 0
    path = Path(args.path)
    header = ["sequence", "seed", "T", "V", "N", "K", "image", "mean valid", "arrays"]
    if path.is_dir():
        m = read_manifest(path)
        shards = m["shards"]
        num_seq = sum(len(e["sequence_ids"]) for e in shards)
        size = sum(e["bytes"] for e in shards)
        status = "complete" if m.get("complete") else "INCOMPLETE (resume with `synthseq build ... --resume`)"
        print(f"dataset {path}: {num_seq} sequences in {len(shards)} shards, {size / 1e6:.1f} MB, "
              f"format_version {m['format_version']}, seed {m.get('seed')}, {status}")
        rows = []
        for e in shards:
            f = path / e["file"]
            if not f.is_file():
                print(f"  {e['file']}: MISSING", file=sys.stderr)
                continue
            rows.extend([[f"{e['file']}:{r[0]}"] + r[1:] for r in shard_rows(f)])
        print(_table(rows, header))
        total_vf = sum(int(r[2]) * int(r[3]) for r in rows)
        print(f"total: {total_vf} view-frames; manifest {path / MANIFEST}")
        return 0
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such dataset directory or shard")
    rows = shard_rows(path)
    print(f"shard {path}: {len(rows)} sequences, {path.stat().st_size / 1e6:.1f} MB")
    print(_table(rows, header))
    return 0


def run_verify(args) -> int:
    from synthseq.datasets.shards import read_manifest, verify_dataset

    path = Path(args.path)
    if not path.is_dir():
        raise NotADirectoryError(f"{path}: not a dataset directory")
    problems = verify_dataset(path, deep=not args.quick)
    if problems:
        for p in problems:
            print(f"synthseq verify: {p}", file=sys.stderr)
        print(f"{path}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    m = read_manifest(path)
    note = "" if m.get("complete") else " (build incomplete: resume it to add the missing shards)"
    print(f"{path}: OK, {len(m['shards'])} shards verified{note}")
    return 0 if m.get("complete") else 1
