"""The ablation table: evaluation reports of several trained stages on the same pairs, side by side, with 95%
intervals and paired differences (scripts/experiment.sh writes it as reports/ablation.md).

Each report is a ``synthseq evaluate`` output folder; only its ``pairs.csv`` is read. Pairs are matched by
(sequence, gap, first frame), so every report must have evaluated the same pairs (same ``--real``, ``--gaps``,
``--max-pairs``). Intervals are the evaluation's own: a moving-block bootstrap within each (sequence, gap) with the
block length ``metrics.block_length`` gives it (neighbouring pairs share frames), never narrower than a Wilson
interval for rates. A paired difference (stage - other, in points) uses the same blocks on the per-pair difference
of success, with the pairs won and lost beside it (no interval below ``MIN_BLOCKS`` effective blocks).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthseq.training import metrics as M

BASELINE_METHODS = ("identity", "icp", "fpfh_ransac_icp")
STAGE_METHODS = ("ours_coarse", "ours", "ours_icp", "ours_fallback")
NAMES = {"identity": "identity", "icp": "ICP", "fpfh_ransac_icp": "FPFH + RANSAC + ICP", "ours_coarse": "ours, coarse",
         "ours": "ours", "ours_icp": "ours + ICP", "ours_fallback": "ours, FPFH where unsure"}


@dataclass(frozen=True)
class ReportPairs:
    """One report's per-pair results.

    Attributes:
        source: the pairs.csv read.
        keys: (P,) tuples (sequence, gap, frame_a), sorted.
        success: method -> (P,) float 0/1.
        rot_deg: method -> (P,) rotation error, degrees.
        seconds: method -> (P,) wall time per pair.
    """
    source: Path
    keys: tuple
    success: dict
    rot_deg: dict
    seconds: dict


def read_pairs(report_dir) -> ReportPairs:
    """Read an evaluation report's pairs.csv.

    Args:
        report_dir: a ``synthseq evaluate`` output folder (or its pairs.csv).

    Returns:
        ReportPairs, every method on the same sorted pairs.

    Raises:
        FileNotFoundError: no pairs.csv there.
        ValueError: a malformed file, methods on different pairs, or rows seen in training (an ablation compares
            held-out numbers only).
    """
    path = Path(report_dir)
    path = path if path.suffix == ".csv" else path / "pairs.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected a `synthseq evaluate` report folder)")
    rows: dict[str, dict] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        need = {"sequence", "gap", "frame_a", "method", "rot_err_deg", "success", "seconds", "seen_in_training"}
        if not need <= set(reader.fieldnames or ()):
            raise ValueError(f"{path}: expected columns {sorted(need)}, got {reader.fieldnames}")
        for line, r in enumerate(reader, start=2):
            if r["seen_in_training"] not in ("0", ""):
                raise ValueError(f"{path}:{line}: {r['sequence']} was seen in training; an ablation compares "
                                 "held-out pairs only")
            try:
                key = (r["sequence"], int(r["gap"]), int(r["frame_a"]))
                vals = (float(r["success"]), float(r["rot_err_deg"]), float(r["seconds"]))
            except ValueError as e:
                raise ValueError(f"{path}:{line}: {e}") from None
            rows.setdefault(r["method"], {})[key] = vals
    if not rows:
        raise ValueError(f"{path}: no pairs")
    keys = tuple(sorted(next(iter(rows.values()))))
    for m, by in rows.items():
        if set(by) != set(keys):
            raise ValueError(f"{path}: method {m} has {len(by)} pairs, other methods {len(keys)}")
    pick = lambda m, i: np.array([rows[m][k][i] for k in keys], np.float64)  # noqa: E731
    return ReportPairs(path, keys, {m: pick(m, 0) for m in rows}, {m: pick(m, 1) for m in rows},
                       {m: pick(m, 2) for m in rows})


def _blocks(keys: tuple) -> tuple[np.ndarray, dict]:
    """Bootstrap groups (one per sequence and gap, pairs in start order) and their block lengths."""
    labels = [f"{s}|{g}" for s, g, _ in keys]
    starts: dict = {}  # label -> (gap, first frames in order)
    for (_, g, a), label in zip(keys, labels):
        starts.setdefault(label, (g, []))[1].append(a)
    return np.array(labels), {label: M.pairs_block_length(st, g) for label, (g, st) in starts.items()}


def _rate(v: np.ndarray, groups, lengths) -> tuple[float, float, float]:
    lo, hi = M.block_bootstrap_ci(v, groups, lengths)
    return float(v.mean()), lo, hi


MIN_BLOCKS = 10  # fewer independent blocks than this: a paired difference gets no interval


def _paired(a: np.ndarray, b: np.ndarray, groups, lengths) -> tuple[float, float, float, int, int]:
    """(mean difference, low, high, won, lost); the interval is NaN below ``MIN_BLOCKS`` effective blocks, where
    the bootstrap of a few -1 / 0 / +1 values collapses (one lost pair of 6 can give an interval that excludes
    zero)."""
    d = a - b
    if M.effective_sample_size(groups, lengths) < MIN_BLOCKS:
        lo = hi = math.nan
    else:
        lo, hi = M.block_bootstrap_ci(d, groups, lengths, binary=False)
    return float(d.mean()), lo, hi, int((d > 0).sum()), int((d < 0).sum())


def compare_reports(stages: dict, baseline=None, method: str = "ours", versus: str = "fpfh_ransac_icp",
                    reference: str | None = None) -> dict:
    """Success of each stage's methods with intervals, paired against a classical method and a reference stage.

    Args:
        stages: name -> report folder (one per trained stage).
        baseline: a report folder with the classical rows (identity, ICP, FPFH + RANSAC + ICP), or None.
        method: the stage method the per-sequence table and the median rotation follow (``ours``).
        versus: the classical method paired differences are taken against (from ``baseline``, or from the stage
            reports when they have it).
        reference: the stage the others are paired against (the default recipe), or None.

    Returns:
        dict with ``keys`` (the pairs), ``rows`` (one per stage x method and per baseline method: success, interval,
        paired differences, median time), ``per_gap`` (sequence -> gap -> row name -> success) and
        ``median_rot`` (sequence -> row name -> median rotation error at gap 10, or the largest gap below it).

    Raises:
        ValueError: an unknown reference, no ``method`` in a stage report, or reports on different pairs.
    """
    if not stages:
        raise ValueError("compare_reports: no stage reports given")
    if reference is not None and reference not in stages:
        raise ValueError(f"reference stage {reference!r} is not among the stages {sorted(stages)}")
    read = {name: read_pairs(d) for name, d in stages.items()}
    base = read_pairs(baseline) if baseline is not None else None
    first = next(iter(read.values()))
    keys = first.keys
    for r in list(read.values()) + ([base] if base else []):
        if r.keys != keys:
            raise ValueError(f"{r.source}: {len(r.keys)} pairs, not the {len(keys)} of {first.source} (every report "
                             "must evaluate the same --real, --gaps and --max-pairs)")
    for name, r in read.items():
        if method not in r.success:
            raise ValueError(f"{r.source}: no {method!r} rows (stage {name}; evaluated methods: "
                             f"{sorted(r.success)})")
    groups, lengths = _blocks(keys)
    vs = next((r.success[versus] for r in ([base] if base else []) + list(read.values()) if versus in r.success),
              None)

    rows = []

    def row(name: str, stage: str | None, m: str, r: ReportPairs):
        v = r.success[m]
        rate, lo, hi = _rate(v, groups, lengths)
        out = {"name": name, "stage": stage, "method": m, "success": rate, "ci": (lo, hi),
               "time_s_median": float(np.median(r.seconds[m])), "time_s_mean": float(np.mean(r.seconds[m]))}
        if vs is not None and m != versus:
            out["vs_" + versus] = _paired(v, vs, groups, lengths)
        if stage is not None and reference is not None and stage != reference and m in read[reference].success:
            out["vs_reference"] = _paired(v, read[reference].success[m], groups, lengths)
        rows.append(out)

    if base:
        for m in BASELINE_METHODS:
            if m in base.success:
                row(NAMES[m], None, m, base)
    for stage, r in read.items():
        for m in STAGE_METHODS:
            if m in r.success:
                row(f"{stage}: {NAMES[m]}", stage, m, r)

    shown = [(NAMES[m], base, m) for m in BASELINE_METHODS if base and m in base.success]
    shown += [(stage, r, method) for stage, r in read.items()]
    per_gap: dict = {}
    median_rot: dict = {}
    seqs = list(dict.fromkeys(k[0] for k in keys))
    for s in seqs:
        gaps = sorted({k[1] for k in keys if k[0] == s})
        per_gap[s] = {}
        for g in gaps:
            idx = np.array([k[0] == s and k[1] == g for k in keys])
            per_gap[s][g] = {name: float(r.success[m][idx].mean()) for name, r, m in shown}
        g10 = max([g for g in gaps if g <= 10] or gaps)
        idx = np.array([k[0] == s and k[1] == g10 for k in keys])
        median_rot[s] = {"gap": g10, **{name: float(np.median(r.rot_deg[m][idx])) for name, r, m in shown}}
    return {"keys": keys, "rows": rows, "per_gap": per_gap, "median_rot": median_rot, "method": method,
            "versus": versus, "reference": reference, "stages": list(read), "num_pairs": len(keys)}


def _pct(rate: float, ci) -> str:
    return f"{100 * rate:.1f}% [{100 * ci[0]:.1f}-{100 * ci[1]:.1f}]"


def _diff(d) -> str:
    if d is None:
        return ""
    mean, lo, hi, won, lost = d
    if math.isnan(lo):
        return f"{100 * mean:+.1f} (too few pairs for an interval) ({won} / {lost})"
    return f"{100 * mean:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] ({won} / {lost})"


def render_ablation(summary: dict) -> str:
    """The ablation as markdown: pooled rows with intervals and paired differences, success per sequence and gap,
    and the median rotation error at gap 10."""
    versus, ref = summary["versus"], summary["reference"]
    n = summary["num_pairs"]
    lines = [f"# Ablation: {len(summary['stages'])} stages on the same {n} pairs", "",
             f"Success = rotation < {M.SUCCESS_ROT_DEG:g} deg and translation < {M.SUCCESS_TRANS_CM:g} cm. "
             "Intervals: 95% moving-block bootstrap within each sequence and gap; paired differences in points "
             "(pairs won / lost) on the same pairs.", "",
             f"| row | success [95% CI] | vs {NAMES.get(versus, versus)} (paired) | "
             + (f"vs stage {ref}, same method (paired) | " if ref else "") + "median / mean time per pair |",
             "|---|---|---|" + ("---|" if ref else "") + "---|"]
    for r in summary["rows"]:
        cells = [r["name"], _pct(r["success"], r["ci"]), _diff(r.get("vs_" + versus))]
        if ref:
            cells.append(_diff(r.get("vs_reference")))
        cells.append(f"{r['time_s_median']:.3f} / {r['time_s_mean']:.3f} s")
        lines.append("| " + " | ".join(cells) + " |")
    method = NAMES.get(summary["method"], summary["method"])
    for s, by_gap in summary["per_gap"].items():
        names = list(next(iter(by_gap.values())))
        gaps = list(by_gap)
        lines += ["", f"**{s}**: success % by gap (stages: {method})", "",
                  "| row | " + " | ".join(f"gap {g}" for g in gaps) + " |", "|---|" + "---|" * len(gaps)]
        for name in names:
            lines.append(f"| {name} | " + " | ".join(f"{100 * by_gap[g][name]:.0f}" for g in gaps) + " |")
    first = next(iter(summary["median_rot"].values()))
    names = [k for k in first if k != "gap"]
    lines += ["", f"Median rotation error (deg) at gap 10, or the largest gap below it, in brackets (stages: {method})",
              "",
              "| sequence (gap) | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for s, mr in summary["median_rot"].items():
        lines.append(f"| {s} ({mr['gap']}) | " + " | ".join(
            "" if math.isnan(mr[k]) else f"{mr[k]:.2f}" for k in names) + " |")
    return "\n".join(lines) + "\n"
