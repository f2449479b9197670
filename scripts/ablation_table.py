#!/usr/bin/env python3
"""Write the ablation table (markdown) from `synthseq evaluate` reports of several stages on the same pairs.

  .venv/bin/python scripts/ablation_table.py D=experiment/reports/D B=experiment/reports/B \\
      --baseline experiment/reports/baselines --reference D --out experiment/reports/ablation.md

Rows: the baseline report's identity / ICP / FPFH + RANSAC + ICP, then each stage's ours (coarse), ours, ours + ICP,
ours with the FPFH fallback, whichever it evaluated; success with 95% intervals, paired differences against FPFH +
RANSAC + ICP and against the reference stage; success per sequence and gap; median rotation error at gap 10
(synthseq.training.evaluation.ablation).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stages", nargs="+", metavar="NAME=REPORT_DIR", help="one evaluation report per stage")
    ap.add_argument("--baseline", type=Path, help="report with identity / icp / fpfh_ransac_icp rows")
    ap.add_argument("--reference", help="the stage the others are paired against (the default recipe); "
                    "omitted: no paired column against a stage")
    ap.add_argument("--method", default="ours", help="the stage method of the per-gap table (default: ours)")
    ap.add_argument("--out", type=Path, help="markdown file to write (default: stdout)")
    args = ap.parse_args(argv)
    stages = {}
    for spec in args.stages:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            print(f"ablation_table: {spec!r}: expected NAME=REPORT_DIR", file=sys.stderr)
            return 2
        stages[name] = Path(path)
    from synthseq.training.evaluation.ablation import compare_reports, render_ablation
    try:
        text = render_ablation(compare_reports(stages, args.baseline, method=args.method, reference=args.reference))
    except (ValueError, FileNotFoundError) as e:
        print(f"ablation_table: {e}", file=sys.stderr)
        return 1
    if args.out is None:
        sys.stdout.write(text)
    else:
        from synthseq.pipelines.view import write_file_atomic

        write_file_atomic(args.out, lambda tmp: Path(tmp).write_text(text))
        print(f"ablation_table: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
