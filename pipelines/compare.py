"""`synthseq compare DATASET REAL...`: synthetic and real depth frames side by side, measured the same way.

For the moving views of a built dataset (views whose camera pose changes; a static rig only sees its scene
from one place) and for each real capture (TUM RGB-D, 7-Scenes, point-cloud folders, ``PATH@START:STOP``
frame ranges), every frame's stored N-point cloud (N = the dataset's ``num_points``; real frames are sampled
to the same N, uniformly over their valid pixels, like the synthetic ones) gives:

- the camera-frame depth z of its points (histogram, percentiles), and the Wasserstein-1 distance between the
  synthetic z distribution and the **pooled** real captures (each capture weighted equally, so a long capture
  does not outweigh a short one), next to each capture's own distance to the pool;
- the valid-pixel ratio (valid depth pixels / all pixels);
- the angle between each point's surface normal (PCA of its 16 nearest neighbours in the cloud) and the
  viewing ray: 0 deg = a surface facing the camera, 90 deg = seen edge-on;
- the local point density: the distance to the 8th nearest neighbour (metres);
- a realism score on local patches: 1-NNA under the Chamfer distance (PointFlow protocol,
  :func:`synthseq.training.metrics.realism_metrics`) between patches of the same size (the ``--patch-size``
  nearest points around random centres, centred on their mean), so the score compares local surface
  structure and sensor noise rather than which scene was captured. 50% = indistinguishable, 100% = fully
  separable.

Writes ``compare.json`` and ``compare.png`` into ``--out`` (written to temporary names, then renamed) and
prints a table.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from synthseq.errors import DataError, UsageError

log = logging.getLogger(__name__)

NORMAL_NEIGHBOURS = 16
DENSITY_NEIGHBOUR = 8


def configure_parser(p) -> None:
    p.add_argument("dataset", help="a dataset directory written by `synthseq build` (with manifest.json)")
    p.add_argument("real", nargs="+", help="real captures: TUM RGB-D / 7-Scenes / point-cloud folders, "
                                           "optionally PATH@START:STOP (STOP exclusive)")
    p.add_argument("--out", default=None, help="folder for compare.json and compare.png (default: print only)")
    p.add_argument("--frames", type=int, default=120,
                   help="frames per set: synthetic frames in all, and per real capture (evenly spaced)")
    p.add_argument("--patches", type=int, default=150, help="patches per side for the patch 1-NNA")
    p.add_argument("--patch-size", type=int, default=128, help="points per patch (nearest neighbours)")
    p.add_argument("--all-views", action="store_true", help="use static views of the dataset too")
    p.add_argument("--seed", type=int, default=0, help="seed for frame, patch and centre sampling")


# ----------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------

def _even(count: int, k: int) -> np.ndarray:
    return np.unique(np.linspace(0, count - 1, min(count, k)).round().astype(int)) if count else np.zeros(0, int)


def load_synthetic(root, frames: int, all_views: bool = False) -> dict:
    """Frames of the moving views of a dataset: ``{"clouds": [(n_i, 3)], "valid_ratio": (F,), "N": N,
    "num_sequences", "views"}``, ``frames`` clouds at most, evenly spaced over (sequence, view, frame).

    Raises:
        FileNotFoundError / DataError: no manifest, a shard that does not match it.
        DataError: no moving view in the dataset (and ``all_views`` is off), or no valid point at all.
    """
    from synthseq.datasets.shards import ShardReader, iter_dataset

    items = []  # (shard, key, v, t)
    sizes = {}
    views_used = set()
    num_points = None
    for shard, key in iter_dataset(root, verify=True):
        with ShardReader(shard) as r:
            poses = r.dataset(key, "camera_poses")[()]  # (T, V, 4, 4)
            T, V = poses.shape[:2]
            num_points = int(r.dataset(key, "points").shape[2])
            moving = np.abs(poses - poses[:1]).reshape(T, V, -1).max(axis=(0, 2)) > 1e-9
            for v in range(V):
                if moving[v] or all_views:
                    views_used.add(v)
                    items.extend((shard, key, v, t) for t in range(T))
            sizes[(shard, key)] = r.dataset(key, "image_size")[()]
    if not items:
        raise DataError(f"{root}: no moving camera view in this dataset (every view is static); pass "
                         "--all-views to compare static views")
    clouds, ratios = [], []
    pick = [items[i] for i in _even(len(items), frames)]
    by_seq: dict = {}
    for shard, key, v, t in pick:
        by_seq.setdefault((shard, key), []).append((v, t))
    for (shard, key), vts in by_seq.items():
        with ShardReader(shard) as r:
            pts = r.dataset(key, "points")
            nv = r.dataset(key, "num_valid")[()]
            W, H = (int(x) for x in sizes[(shard, key)][0])
            for v, t in vts:
                n = min(int(nv[t, v]), pts.shape[2])
                ratios.append(nv[t, v] / float(W * H))
                if n:
                    clouds.append(np.asarray(pts[t, v, :n], dtype=np.float64))
    if not clouds:
        raise DataError(f"{root}: the moving views have no valid depth pixel")
    return {"clouds": clouds, "valid_ratio": np.asarray(ratios), "N": num_points,
            "num_sequences": len({k for _, k, _, _ in items}), "views": sorted(views_used)}


def load_real(spec, num_points: int, frames: int, seed: int = 0) -> dict:
    """``frames`` evenly spaced frames of a real capture, ``num_points`` points each (ground truth not read).

    Raises:
        FileNotFoundError / DataError: from the capture readers (naming the file).
        DataError: a capture with no valid depth at all.
    """
    from synthseq.datasets.real import detect_format, load_capture, parse_capture_spec

    cap = parse_capture_spec(spec)
    fmt = detect_format(spec)
    options = {"groundtruth": False} if fmt == "tum" else {}
    seq = load_capture(spec, num_points=num_points, seed=seed, **options)
    W, H = (int(x) for x in seq.image_size[0])
    idx = _even(seq.num_frames, frames)
    clouds = [np.asarray(seq.points[t, 0, :min(int(seq.num_valid[t, 0]), num_points)], dtype=np.float64)
              for t in idx]
    clouds = [c for c in clouds if len(c)]
    if not clouds:
        raise DataError(f"{spec}: no valid depth in the selected frames")
    return {"name": cap.display_name, "clouds": clouds,
            "valid_ratio": seq.num_valid[idx, 0] / float(W * H), "num_frames": int(seq.num_frames)}


# ----------------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------------

def normal_view_angles(points: np.ndarray, k: int = NORMAL_NEIGHBOURS) -> np.ndarray:
    """(M,) angles in degrees between each point's PCA normal (its k nearest neighbours) and its viewing ray.

    Args:
        points: (M, 3) camera-frame points (camera at the origin), M > k.
    """
    from scipy.spatial import cKDTree

    p = np.asarray(points, dtype=np.float64)
    k = min(k, len(p))
    _, idx = cKDTree(p).query(p, k=k)
    nb = p[idx]  # (M, k, 3)
    nb = nb - nb.mean(axis=1, keepdims=True)
    cov = np.einsum("mki,mkj->mij", nb, nb)
    _, vecs = np.linalg.eigh(cov)
    n = vecs[:, :, 0]  # eigenvector of the smallest eigenvalue
    ray = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
    cos = np.abs((n * ray).sum(axis=1))
    return np.degrees(np.arccos(np.clip(cos, 0.0, 1.0)))


def knn_distance(points: np.ndarray, k: int = DENSITY_NEIGHBOUR) -> np.ndarray:
    """(M,) distance in metres from each point to its k-th nearest other point (local density: smaller =
    denser)."""
    from scipy.spatial import cKDTree

    p = np.asarray(points, dtype=np.float64)
    d, _ = cKDTree(p).query(p, k=min(k + 1, len(p)))
    return d[:, -1]


def local_patches(clouds: list, count: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(count', size, 3) patches: the ``size`` nearest points around random centres of random clouds, each
    centred on its mean. Clouds with fewer than ``size`` points are skipped."""
    from scipy.spatial import cKDTree

    usable = [c for c in clouds if len(c) >= size]
    if not usable:
        return np.zeros((0, size, 3))
    out = []
    per = max(1, math.ceil(count / len(usable)))
    for i in rng.permutation(len(usable)):
        c = usable[i]
        tree = cKDTree(c)
        for j in rng.choice(len(c), size=min(per, len(c)), replace=False):
            _, nb = tree.query(c[j], k=size)
            q = c[nb]
            out.append(q - q.mean(axis=0))
        if len(out) >= count:
            break
    return np.stack(out[:count])


def describe(clouds: list, valid_ratio: np.ndarray, rng: np.random.Generator) -> dict:
    """Per-set statistics and the raw samples the plot and the distances need (``_z``, ``_angles``, ``_knn``)."""
    z = np.concatenate([c[:, 2] for c in clouds])
    angles = np.concatenate([normal_view_angles(c) for c in clouds if len(c) > 3])
    knn = np.concatenate([knn_distance(c) for c in clouds if len(c) > DENSITY_NEIGHBOUR])
    pct = lambda x, q: [float(v) for v in np.percentile(x, q)]  # noqa: E731
    return {
        "frames": len(clouds),
        "points": int(len(z)),
        "z_m": {"mean": float(z.mean()), "p5_25_50_75_95": pct(z, [5, 25, 50, 75, 95])},
        "valid_ratio": {"mean": float(np.mean(valid_ratio)), "p5_50_95": pct(valid_ratio, [5, 50, 95])},
        "normal_view_angle_deg": {"median": float(np.median(angles)), "mean": float(angles.mean()),
                                  "frac_over_60": float((angles > 60).mean())},
        "knn8_distance_mm": {"median": float(1000 * np.median(knn)), "p25_75": [1000 * x for x in pct(knn, [25, 75])]},
        "_z": z, "_angles": angles, "_knn": knn,
    }


def pooled_w1(z: np.ndarray, real: list[dict]) -> float:
    """Wasserstein-1 distance (metres) between depths ``z`` and the pool of the real sets, each weighted equally."""
    from scipy.stats import wasserstein_distance

    zr = np.concatenate([r["_z"] for r in real])
    w = np.concatenate([np.full(len(r["_z"]), 1.0 / len(r["_z"])) for r in real])
    return float(wasserstein_distance(z, zr, v_weights=w))


def compare(dataset, reals: list, frames: int = 120, patches: int = 150, patch_size: int = 128, seed: int = 0,
            all_views: bool = False) -> dict:
    """Measure a dataset's moving views against real captures; see the module docstring.

    Returns:
        A JSON-ready dict: ``synthetic`` and ``real`` (name -> stats), ``pool`` (stats of all real frames),
        ``w1_z_m`` (synthetic vs pool, and each capture vs the pool of the others and of all), ``patch_realism``
        (1-NNA, MMD, COV), plus the private ``_z``/``_angles``/``_knn`` samples for the plot.
    """
    from synthseq.training.metrics import realism_metrics

    if frames < 2 or patches < 2 or patch_size < 4:
        raise UsageError(f"--frames and --patches must be >= 2 and --patch-size >= 4, got {frames}, {patches}, "
                         f"{patch_size}")
    rng = np.random.default_rng(seed)
    syn = load_synthetic(dataset, frames, all_views)
    out = {"dataset": str(dataset), "num_points": syn["N"], "views": syn["views"],
           "num_sequences": syn["num_sequences"], "synthetic": describe(syn["clouds"], syn["valid_ratio"], rng)}
    reals = [load_real(spec, syn["N"], frames, seed) for spec in reals]
    names = [r["name"] for r in reals]
    if len(set(names)) != len(names):
        raise UsageError(f"the same real capture is given twice: {', '.join(names)}")
    out["real"] = {r["name"]: describe(r["clouds"], r["valid_ratio"], rng) for r in reals}
    stats = list(out["real"].values())
    pool = {"_z": np.concatenate([s["_z"] for s in stats]), "_angles": np.concatenate([s["_angles"] for s in stats]),
            "_knn": np.concatenate([s["_knn"] for s in stats])}
    out["pool_valid_ratio"] = float(np.mean([s["valid_ratio"]["mean"] for s in stats]))
    out["w1_z_m"] = {"synthetic_vs_pool": pooled_w1(out["synthetic"]["_z"], stats),
                     "real_vs_pool": {n: pooled_w1(s["_z"], stats) for n, s in out["real"].items()}}
    if len(stats) > 1:
        out["w1_z_m"]["real_vs_pool_of_others"] = {
            n: pooled_w1(s["_z"], [o for m, o in out["real"].items() if m != n]) for n, s in out["real"].items()}
    out["_pool"] = pool
    # Patches: as many from every capture (the pool), as many synthetic.
    per_real = max(2, patches // len(reals))
    real_patches = np.concatenate([local_patches(r["clouds"], per_real, patch_size, rng) for r in reals])
    syn_patches = local_patches(syn["clouds"], len(real_patches), patch_size, rng)
    if len(syn_patches) < 2 or len(real_patches) < 2:
        raise DataError(f"too few clouds with >= {patch_size} points for patches (lower --patch-size)")
    out["patch_realism"] = realism_metrics(syn_patches, real_patches, num_points=patch_size,
                                           max_clouds=max(len(syn_patches), len(real_patches)),
                                           rng=np.random.default_rng(seed))
    pr = out["patch_realism"]
    pr["patch_size"] = patch_size
    pr["1nna_ci95"] = wilson_interval(pr["1nna"], pr["num_generated"] + pr["num_reference"])
    return out


def wilson_interval(p: float, n: int, z: float = 1.96) -> list[float]:
    """95% Wilson score interval of a proportion ``p`` over ``n`` trials. For 1-NNA this treats the
    leave-one-out decisions as independent, which they are not quite: an approximation of the spread."""
    if n <= 0:
        return [math.nan, math.nan]
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [float(centre - half), float(centre + half)]


# ----------------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------------

def format_table(res: dict) -> str:
    """The comparison as a plain-text table (one row per set) and the realism lines."""
    rows = [("synthetic (moving views)", res["synthetic"], res["w1_z_m"]["synthetic_vs_pool"])]
    rows += [(n, s, res["w1_z_m"]["real_vs_pool"][n]) for n, s in res["real"].items()]
    header = ["set", "frames", "valid", "z p5 / p50 / p95 (m)", "W1(z) to pool (m)", "normal-ray angle med (deg)",
              "knn8 med (mm)"]
    cells = [header]
    for name, s, w1 in rows:
        p = s["z_m"]["p5_25_50_75_95"]
        cells.append([name, str(s["frames"]), f"{s['valid_ratio']['mean']:.3f}", f"{p[0]:.2f} / {p[2]:.2f} / {p[4]:.2f}",
                      f"{w1:.3f}", f"{s['normal_view_angle_deg']['median']:.1f}",
                      f"{s['knn8_distance_mm']['median']:.1f}"])
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    pr = res["patch_realism"]
    lines += ["",
              f"real pool: valid ratio {res['pool_valid_ratio']:.3f} (captures weighted equally)",
              f"W1(z) synthetic vs pooled real: {res['w1_z_m']['synthetic_vs_pool']:.3f} m",
              f"patch realism ({pr['patch_size']}-point patches, {pr['num_generated']} synthetic / "
              f"{pr['num_reference']} real): 1-NNA {100 * pr['1nna']:.1f}% (95% CI {100 * pr['1nna_ci95'][0]:.0f}-"
              f"{100 * pr['1nna_ci95'][1]:.0f}%, binomial approximation; 50% = indistinguishable), "
              f"MMD {pr['mmd']:.3g} m^2, COV {100 * pr['cov']:.0f}%"]
    return "\n".join(lines)


def plot(path, res: dict) -> None:
    """compare.png: depth histograms, normal-ray angle histograms, density histograms, valid ratios."""
    from synthseq.training.evaluation.report import _plt

    plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:olive", "tab:cyan", "tab:pink"]
    sets = [("synthetic", res["synthetic"], "tab:red", 2.0)] + [
        (n, s, palette[i % len(palette)], 1.0) for i, (n, s) in enumerate(res["real"].items())] + [
        ("real pool", res["_pool"], "k", 2.0)]
    panels = ((axes[0, 0], "_z", np.linspace(0, 6, 61), "camera-frame depth z (m)"),
              (axes[0, 1], "_angles", np.linspace(0, 90, 46), "angle between normal and viewing ray (deg)"),
              (axes[1, 0], "_knn", np.logspace(-3, -0.5, 51), "distance to 8th nearest neighbour (m)"))
    for ax, key, bins, label in panels:
        for name, s, color, lw in sets:
            ls = "--" if name == "real pool" else "-"
            ax.hist(s[key], bins=bins, density=True, histtype="step", lw=lw, color=color, ls=ls, label=name)
        ax.set_xlabel(label)
        ax.set_ylabel("density")
        ax.grid(alpha=0.3)
    axes[1, 0].set_xscale("log")
    axes[0, 0].set_title(f"W1(z) synthetic vs real pool: {res['w1_z_m']['synthetic_vs_pool']:.3f} m", fontsize=9)
    axes[0, 0].legend(fontsize=7)
    ax = axes[1, 1]
    names = ["synthetic"] + list(res["real"])
    vals = [res["synthetic"]["valid_ratio"]["mean"]] + [s["valid_ratio"]["mean"] for s in res["real"].values()]
    ax.bar(range(len(names)), vals, color=["tab:red"] + ["tab:gray"] * (len(names) - 1))
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=20, fontsize=7, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("valid-pixel ratio")
    pr = res["patch_realism"]
    ax.set_title(f"patch 1-NNA {100 * pr['1nna']:.1f}% (50% = indistinguishable)", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"synthseq compare: {res['dataset']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def public(res: dict) -> dict:
    """``res`` without the private raw samples (keys starting with '_'), for JSON."""
    if isinstance(res, dict):
        return {k: public(v) for k, v in res.items() if not str(k).startswith("_")}
    return res


def run(args) -> int:
    import os

    res = compare(args.dataset, args.real, frames=args.frames, patches=args.patches, patch_size=args.patch_size,
                  seed=args.seed, all_views=args.all_views)
    print(format_table(res))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        tmp_json, tmp_png = out / ".compare.json.tmp", out / ".compare.png.tmp.png"
        try:
            tmp_json.write_text(json.dumps(public(res), indent=2) + "\n")
            plot(tmp_png, res)
            os.replace(tmp_json, out / "compare.json")
            os.replace(tmp_png, out / "compare.png")
        finally:
            for p in (tmp_json, tmp_png):
                if p.exists():
                    p.unlink()
        print(f"wrote {out / 'compare.json'} and {out / 'compare.png'}")
    return 0
