"""The evaluation's files: report.md (tables, headline, goals), metrics.json, pairs.csv, config.yaml, the plots
(matplotlib, Agg backend) and the TUM trajectories."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

import numpy as np
import yaml

from synthseq.training import metrics as M

log = logging.getLogger(__name__)

# Methods whose chained gap-1 estimates are written as TUM trajectories.
TRAJECTORY_METHODS = ("ours", "ours_icp", "ours_fallback", "icp", "fpfh_ransac_icp")
COLORS = {"identity": "tab:gray", "ours_coarse": "tab:orange", "ours": "tab:red", "ours_icp": "tab:purple",
          "ours_fallback": "tab:brown", "icp": "tab:blue", "fpfh_ransac_icp": "tab:green"}
LABELS = {"identity": "identity (no motion)", "ours_coarse": "ours, coarse (no fine stage)", "ours": "ours (P)",
          "ours_icp": "ours + ICP", "ours_fallback": "ours, FPFH where unsure", "icp": "ICP from identity",
          "fpfh_ransac_icp": "FPFH + RANSAC + ICP"}
SEEN_MARK = " **[seen in training]**"


def _plt():
    try:
        import matplotlib
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("plots need matplotlib: pip install 'synthseq[torch]'") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fmt(x, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{digits}f}"


def _time(s) -> str:
    if s is None or not math.isfinite(s):
        return "-"
    return f"{s * 1000:.0f} ms" if s < 1.0 else f"{s:.2f} s"


# ----------------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------------

def _success(rate, ci) -> str:
    """``83% [61-95]``: the success rate and its 95% interval, in percent."""
    if rate is None or not math.isfinite(rate):
        return "-"
    if not ci or any(c is None or not math.isfinite(c) for c in ci):
        return f"{100 * rate:.0f}%"
    return f"{100 * rate:.0f}% [{100 * ci[0]:.0f}-{100 * ci[1]:.0f}]"


def format_headline(metrics: dict) -> str:
    """The headline table (one row per sequence, gap and method) as a Markdown table."""
    lines = ["| sequence | gap | method | success [95% CI] | rot median (deg) | trans median (cm) | time/pair | pairs |",
             "|---|---|---|---|---|---|---|---|"]
    for r in metrics.get("headline", []):
        seen = SEEN_MARK if r.get("seen_in_training") else ""
        lines.append(f"| {r['sequence']}{seen} | {r['gap']} | {LABELS.get(r['method'], r['method'])} | "
                     f"{_success(r['success_rate'], r.get('success_ci'))} | {_fmt(r['rot_deg_median'])} | "
                     f"{_fmt(r['trans_cm_median'])} | {_time(r['time_s_median'])} | {r['num_pairs']} |")
    return "\n".join(lines)


def _sequence_table(entry: dict, methods: list[str]) -> str:
    lines = ["| gap | pairs | true motion (median) | method | success [95% CI] | rot median / mean / RMSE (deg) | "
             "trans median / mean / RMSE (cm) | time/pair (median) | confidence (median) | failed |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for g, ge in entry["gaps"].items():
        mo = ge["motion"]
        motion = f"{mo['rot_deg_median']:.1f} deg, {mo['trans_cm_median']:.1f} cm"
        pairs = str(ge["num_pairs"])
        for m in methods:
            s = ge["methods"][m]
            r, t = s["rot_deg"], s["trans_cm"]
            conf = (s.get("confidence") or {}).get("median")
            lines.append(
                f"| {g} | {pairs} | {motion} | {LABELS.get(m, m)} | {_success(s['success_rate'], s.get('success_ci'))} | "
                f"{_fmt(r['median'])} / {_fmt(r['mean'])} / {_fmt(r['rmse'])} | "
                f"{_fmt(t['median'])} / {_fmt(t['mean'])} / {_fmt(t['rmse'])} | "
                f"{_time((s['time_s'] or {}).get('median'))} | {_fmt(conf)} | {s['num_failed']} |")
            motion = pairs = ""
    return "\n".join(lines)


def _realism_table(realism: dict) -> str:
    lines = ["| compared sets | 1-NNA (50% = indistinguishable) | MMD (m^2) | COV | clouds (gen / real) |",
             "|---|---|---|---|---|"]
    for key, label in (("raw_vs_real", "raw synthetic vs real"), ("refined_vs_real", "refined synthetic vs real")):
        r = realism.get(key)
        if r is None:
            continue
        lines.append(f"| {label} | {100 * r['1nna']:.1f}% | {r['mmd']:.4g} | {100 * r['cov']:.0f}% | "
                     f"{r['num_generated']} / {r['num_reference']} |")
    return "\n".join(lines)


def _goals(metrics: dict) -> list[str]:
    """The issue-5 goals checked against this report's numbers (only those it has the data for)."""
    out = []
    methods = metrics["methods"]
    for name, entry in metrics["sequences"].items():
        if entry["kind"] != "real" or not entry["gaps"]:
            continue
        if entry.get("seen_in_training"):
            out.append(f"{name}: not judged (seen in training)")
            continue
        g = "10" if "10" in entry["gaps"] else max(entry["gaps"], key=int)
        ge = entry["gaps"][g]
        ms = ge["methods"]
        if "ours_icp" in ms and "icp" in ms:
            a, b = ms["ours_icp"], ms["icp"]
            diff = 100 * (a["success_rate"] - b["success_rate"])
            sure = a["success_ci"][0] > b["success_ci"][1]
            out.append(f"{name}, gap {g} ({ge['num_pairs']} pairs): ours + ICP {_success(a['success_rate'], a['success_ci'])}"
                       f" vs ICP alone {_success(b['success_rate'], b['success_ci'])}: {diff:+.0f} points "
                       f"(goal: >= +10) - {'met' if diff >= 10 else 'missed'}"
                       f"{'' if diff < 10 else (', intervals apart' if sure else ', but the intervals overlap')}")
        if "ours" in ms and "identity" in ms:
            a, b = ms["ours"], ms["identity"]
            out.append(f"{name}, gap {g}: ours {_success(a['success_rate'], a['success_ci'])} vs identity (no motion) "
                       f"{_success(b['success_rate'], b['success_ci'])}; median rotation error "
                       f"{a['rot_deg']['median']:.2f} deg vs {b['rot_deg']['median']:.2f} deg")
        if "ours" in ms:
            med = ms["ours"]["rot_deg"]["median"]
            out.append(f"{name}, gap {g}: ours median rotation error {med:.2f} deg (goal: < 5) - "
                       f"{'met' if med < 5 else 'missed'}")
    r = metrics.get("realism") or {}
    if "raw_vs_real" in r and "refined_vs_real" in r and "ours" in methods:
        a, b = r["raw_vs_real"]["1nna"], r["refined_vs_real"]["1nna"]
        closer = abs(b - 0.5) < abs(a - 0.5)
        out.append(f"1-NNA vs real: raw synthetic {100 * a:.1f}% -> refined {100 * b:.1f}% (goal: toward 50%) - "
                   f"{'met' if closer else 'missed'}")
    return out


def render_report(metrics: dict, figures: dict) -> str:
    """report.md: what each method sees, per-sequence tables, realism, trajectories, figures, notes."""
    methods = metrics["methods"]
    parts = ["# synthseq evaluation report", ""]
    tr = metrics.get("train") or {}
    if tr:
        parts += [f"Checkpoint: `{tr.get('checkpoint')}` (N = {tr.get('num_points')}, use_gan = "
                  f"{tr.get('use_gan')}). Trained on: synthetic `{tr.get('data')}`, real "
                  f"{', '.join(f'`{r}`' for r in tr.get('real') or []) or 'none'}.", ""]
    else:
        parts += ["No checkpoint: identity and classical baselines only.", ""]
    seen = [n for n, e in metrics["sequences"].items() if e.get("seen_in_training")]
    if seen:
        parts += [f"**Rows marked [seen in training] were evaluated on data the checkpoint trained on "
                  f"(--allow-train-data): {', '.join(seen)}. Their numbers measure fitting, not generalisation.**", ""]
    else:
        parts += ["Every evaluated capture and synthetic sequence is held out: none was a training input of "
                  "the checkpoint (checked against its train.real ranges and train.data).", ""]
    succ = metrics["success"]
    ci = metrics.get("confidence_interval") or {}
    parts += [f"Success = rotation error < {succ['max_rot_deg']:g} deg and translation error < "
              f"{succ['max_trans_cm']:g} cm against the ground-truth relative pose cam_t_from_cam_(t+d). "
              "Errors follow evo's RPE (rotation angle of inv(gt) est; translation |t_est - t_gt|). "
              "A method that returned no pose counts as a failure (180 deg in the statistics).", ""]
    if metrics.get("pair_selection"):
        parts += [f"Pairs: {metrics['pair_selection']}. Success intervals: {int(100 * ci.get('level', 0.95))}% "
                  f"{ci.get('method', '')} ({ci.get('resamples')} resamples; blocks at least as long as the "
                  "number of neighbouring pairs that share frames). Per-pair results: `pairs.csv`.", ""]
    parts += ["## What each method sees", ""]
    for m in methods:
        parts.append(f"- **{LABELS.get(m, m)}**: {metrics['inputs'][m]}")
    parts += ["", "Times are wall-clock per pair on this machine, one pair at a time, preprocessing included.", ""]
    parts += ["## Headline", "", format_headline(metrics), ""]
    goals = _goals(metrics)
    if goals:
        parts += ["## Issue 5 goals", ""] + [f"- {g}" for g in goals] + [""]
    for name, entry in metrics["sequences"].items():
        seen = SEEN_MARK if entry.get("seen_in_training") else ""
        parts += [f"## {name} ({entry['kind']}, {entry['num_frames']} frames){seen}", ""]
        intr = entry.get("intrinsics")
        if intr:
            parts += [f"Intrinsics: fx {intr['fx']:g}, fy {intr['fy']:g}, cx {intr['cx']:g}, cy {intr['cy']:g} "
                      f"(from {intr['source']}).", ""]
        if entry.get("seen_in_training"):
            parts += [f"Seen in training: {entry.get('seen_in_training_reason', '')}", ""]
        parts += [_sequence_table(entry, methods), ""]
        trajs = entry.get("trajectories")
        if trajs:
            gt = trajs["groundtruth"]
            f0, f1 = entry["trajectory_frames"]
            parts += [f"Trajectories (frames {f0}..{f1}: a contiguous block of gap-1 pairs evaluated apart from "
                      "the spread pairs above, chained from the ground-truth first pose) in TUM format:", ""]
            for k, v in trajs.items():
                if k != "groundtruth":
                    parts.append(f"- `{v}`: `evo_rpe tum {gt} {v} --delta 1 --delta_unit f -r angle_deg` "
                                 "(and `-r trans_part`) gives the errors of those chained pairs.")
            parts.append("")
    parts += ["## GAN realism", ""]
    realism = metrics.get("realism")
    if realism:
        parts += [realism["protocol"] + ".", "", _realism_table(realism), ""]
    else:
        parts += ["Not computed (see notes).", ""]
    if figures:
        parts += ["## Plots", ""]
        for title, rel in figures.items():
            parts += [f"### {title}", "", f"![{title}]({rel})", ""]
    if metrics.get("notes"):
        parts += ["## Notes", ""] + [f"- {n}" for n in metrics["notes"]] + [""]
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------------

def plot_error_vs_gap(path, results: dict, methods: list[str]) -> None:
    """One row per sequence: median rotation error, median translation error and success rate vs gap."""
    plt = _plt()
    names = [n for n, e in results.items() if e["gaps"]]
    fig, axes = plt.subplots(len(names), 3, figsize=(13, 3.2 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        gaps_d = results[name]["gaps"]
        gaps = [int(g) for g in gaps_d]
        motion_r = [gaps_d[str(g)]["motion"]["rot_deg_median"] for g in gaps]
        motion_t = [gaps_d[str(g)]["motion"]["trans_cm_median"] for g in gaps]
        ax_r, ax_t, ax_s = axes[row]
        ax_r.plot(gaps, motion_r, "k--", label="true motion")
        ax_t.plot(gaps, motion_t, "k--", label="true motion")
        for m in methods:
            c = COLORS.get(m)
            ax_r.plot(gaps, [gaps_d[str(g)]["methods"][m]["rot_deg"]["median"] for g in gaps], "o-", c=c,
                      label=LABELS.get(m, m))
            ax_t.plot(gaps, [gaps_d[str(g)]["methods"][m]["trans_cm"]["median"] for g in gaps], "o-", c=c)
            ax_s.plot(gaps, [100 * gaps_d[str(g)]["methods"][m]["success_rate"] for g in gaps], "o-", c=c)
        ax_r.set_ylabel(f"{name}\nmedian rot err (deg)", fontsize=8)
        ax_t.set_ylabel("median trans err (cm)")
        ax_s.set_ylabel("success (%)")
        ax_s.set_ylim(-5, 105)
        for ax in (ax_r, ax_t, ax_s):
            ax.set_xlabel("frame gap d")
            ax.set_xticks(gaps)
            ax.grid(alpha=0.3)
        if row == 0:
            ax_r.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_cdfs(path, name: str, raw_seq: dict, methods: list[str]) -> None:
    """Empirical CDFs of rotation and translation errors, one row per gap, one line per method."""
    plt = _plt()
    gaps = sorted(raw_seq)
    fig, axes = plt.subplots(len(gaps), 2, figsize=(10, 3 * len(gaps)), squeeze=False)
    for row, g in enumerate(gaps):
        for col, (key, unit) in enumerate((("rot_deg", "rotation error (deg)"), ("trans_cm", "translation error (cm)"))):
            ax = axes[row, col]
            for m in methods:
                e = np.sort(np.nan_to_num(raw_seq[g][m][key], nan=np.inf))
                y = np.arange(1, len(e) + 1) / max(len(e), 1)
                ax.step(np.clip(e, 1e-2, 1e3), y, where="post", c=COLORS.get(m), label=LABELS.get(m, m))
            ax.axvline(5.0, c="gray", ls=":")
            ax.set_xscale("log")
            ax.set_xlabel(unit)
            ax.set_ylabel(f"gap {g}: fraction of pairs")
            ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
        if row == 0:
            axes[row, 0].legend(fontsize=7)
    fig.suptitle(name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_sample_clouds(path, clouds: list[tuple[str, np.ndarray]]) -> None:
    """Clouds side by side, seen from the camera (x right, y down), coloured by depth z."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(clouds), figsize=(4.5 * len(clouds), 4), squeeze=False)
    for ax, (title, p) in zip(axes[0], clouds):
        p = np.asarray(p)
        p = p[np.any(p != 0, axis=1)]
        sc = ax.scatter(p[:, 0], p[:, 1], c=p[:, 2], s=1.5, cmap="viridis")
        ax.set_title(title, fontsize=9)
        ax.invert_yaxis()
        ax.set_aspect("equal")
        ax.set_xlabel("x (m)")
        ax.set_ylabel("y (m)")
        fig.colorbar(sc, ax=ax, label="z (m)", shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_plots(plots_dir: Path, results: dict, raw: dict, methods: list[str],
                clouds: list[tuple[str, np.ndarray]]) -> dict[str, str]:
    """Write every plot into ``plots_dir``; returns title -> path relative to the report directory."""
    plots_dir.mkdir(parents=True, exist_ok=True)
    rel = lambda p: f"{plots_dir.name}/{p.name}"  # noqa: E731
    figures = {}
    if results:
        p = plots_dir / "error_vs_gap.png"
        plot_error_vs_gap(p, results, methods)
        figures["Error and success vs frame gap"] = rel(p)
    for name, raw_seq in raw.items():
        p = plots_dir / f"cdf_{_safe_name(name)}.png"
        plot_cdfs(p, name, raw_seq, methods)
        figures[f"Error CDFs: {name}"] = rel(p)
    if clouds:
        p = plots_dir / "sample_clouds.png"
        plot_sample_clouds(p, clouds)
        figures["Sample clouds (synthetic / refined / real)"] = rel(p)
    return figures


# ----------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------

def export_trajectories(out_dir: Path, posed: list, traj_raw: dict, methods: list[str], entries: dict,
                        resamples: int, seed: int) -> None:
    """trajectories/<sequence>/*.tum: each sequence's contiguous block of gap-1 pairs, chained; its summary in
    ``entries`` gets the file paths, the frame range and the errors of those pairs (what ``evo_rpe --delta 1``
    gives on the files)."""
    for s in posed:
        r = traj_raw.get(s.name)
        if r is None:
            continue
        frames = np.concatenate([r["starts"], r["starts"][-1:] + 1])
        ests = {m: r[m]["a_from_b"] for m in methods if m in TRAJECTORY_METHODS}
        folder = out_dir / "trajectories" / _safe_name(s.name)
        paths = M.export_tum_trajectories(folder, s.timestamps[frames], s.world_from_camera[frames], ests, s.name)
        entry = entries.get(s.name)
        if entry is None:
            continue
        entry["trajectories"] = {k: str(Path(v).relative_to(out_dir)) for k, v in paths.items()}
        entry["trajectory_frames"] = [int(s.first_frame + frames[0]), int(s.first_frame + frames[-1])]
        entry["trajectory_errors"] = {m: M.summarize_errors(r[m]["rot_deg"], r[m]["trans_cm"], r[m]["seconds"],
                                                            num_resamples=resamples, seed=seed)
                                      for m in methods if m in TRAJECTORY_METHODS}


def write_report(out_dir: Path, config: dict, metrics: dict, posed: list, raw: dict, plots_raw: dict,
                 clouds: list[tuple[str, np.ndarray]]) -> None:
    """config.yaml (the resolved ``evaluate:`` section), metrics.json, pairs.csv, plots/ and report.md."""
    (out_dir / "config.yaml").write_text(yaml.safe_dump({"evaluate": config}, sort_keys=False))
    # numpy scalars and arrays as plain numbers and lists (np.float64 is a float already)
    text = json.dumps(metrics, indent=2, allow_nan=True, default=lambda x: x.tolist())
    (out_dir / "metrics.json").write_text(text + "\n")
    _write_pairs_csv(out_dir / "pairs.csv", posed, raw, metrics["methods"])
    figures = {}
    try:
        figures = write_plots(out_dir / "plots", metrics["sequences"], plots_raw, metrics["methods"], clouds)
    except ImportError as e:
        metrics["notes"].append(f"plots skipped: {e}")
        log.warning("plots skipped: %s", e)
    (out_dir / "report.md").write_text(render_report(metrics, figures))


def _write_pairs_csv(path: Path, posed: list, raw: dict, methods: list[str]) -> None:
    """One row per (sequence, gap, pair, method): frames, errors, success, time, confidence, seen in training."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sequence", "kind", "gap", "frame_a", "frame_b", "method", "rot_err_deg", "trans_err_cm",
                    "success", "seconds", "confidence", "seen_in_training"])
        for s in posed:
            for g, r in raw.get(s.name, {}).items():
                for m in methods:
                    ok = M.success_mask(r[m]["rot_deg"], r[m]["trans_cm"])
                    for k, t in enumerate(r["starts"]):
                        c = r[m]["confidence"][k]
                        w.writerow([s.name, s.kind, g, s.first_frame + int(t), s.first_frame + int(t) + g, m,
                                    f"{r[m]['rot_deg'][k]:.4f}", f"{r[m]['trans_cm'][k]:.4f}", int(ok[k]),
                                    f"{r[m]['seconds'][k]:.4f}", "" if not np.isfinite(c) else f"{c:.4f}",
                                    int(bool(s.seen_in_training))])


def inputs_text(cfg) -> dict:
    """What each method sees (metrics.json's "inputs", report.md's first section)."""
    depth = "all valid depth" if cfg.max_depth_m is None else f"depth <= {cfg.max_depth_m} m"
    dense = f"dense clouds: every valid depth pixel back-projected ({depth})"
    e = cfg.estimator
    return {
        "identity": "nothing: predicts no motion (a_from_b = identity), the floor every method has to beat",
        "ours_coarse": f"the same {dense} as the baselines; the estimator samples {e.num_points} points per "
                       f"cloud itself ({e.sampling}), matches P's descriptors, RANSAC + SVD; its pose before the "
                       "fine stage",
        "ours": f"ours, coarse, then its fine stage ({e.refine}: point-to-plane on its own sampled points)"
                if e.refine != "none" else "the same as ours, coarse (fine stage off)",
        "ours_icp": f"ours's estimate, refined by point-to-plane ICP ({cfg.max_correspondence_m} m) on the dense "
                    "clouds",
        "ours_fallback": f"ours, except that where its confidence is below {cfg.fallback_below:g}, FPFH + RANSAC + "
                         "ICP (as below) runs too and its pose is kept if the estimator scores it higher (fitness less "
                         "free-space violations); time: ours's plus FPFH's where it ran",
        "icp": f"{dense}, voxelised at {cfg.voxel_m} m, normals; point-to-plane ICP from identity, max "
               f"correspondence {cfg.max_correspondence_m} m",
        "fpfh_ransac_icp": f"the same dense clouds; FPFH (radius {5 * cfg.voxel_m:g} m) + RANSAC (seed "
                           f"{cfg.seed}), then point-to-plane ICP ({cfg.max_correspondence_m} m)",
    }


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
