"""The health of a self-play run: python scripts/learning_report.py RUN_DIR [RUN_DIR ...] [--first 5 --last 10] [--json FILE]

Reads metrics.jsonl and prints, per run, the legal ratio over the first ``--first`` and last ``--last`` steps, the student's valid
answer rate, the share of answered problems in the solvability gate, novelty, completion lengths, the label probe
(pseudo-label quality on held-out GSM8K rows), the reward-hacking watch (most repeated problem and answer) and the
distinct problems in the pool.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from opensir_lite.curves import SUMMARY_KEYS, find_metrics_file, learning_summary, read_metrics


def fmt(v, spec=".2f") -> str:
    return "-" if v is None else format(v, spec)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders (with metrics.jsonl)")
    p.add_argument("--json", default=None, help="write the summaries here as JSON")
    p.add_argument("--first", type=int, default=5, help="steps averaged at the start (>= 1)")
    p.add_argument("--last", type=int, default=10, help="steps averaged at the end (>= 1)")
    args = p.parse_args()
    if args.first < 1 or args.last < 1:
        print(f"error: --first {args.first} / --last {args.last} out of range: each must be >= 1", file=sys.stderr)
        return 2
    summaries = {}
    try:
        for run in args.runs:
            summaries[run] = learning_summary(read_metrics(find_metrics_file(run)), args.first, args.last)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for run, s in summaries.items():
        print(
            f"== {run}: {s['steps']} steps, {s['step_seconds'] / 60:.1f} min of steps, probe {s['probe_seconds'] / 60:.1f} min"
        )
        print(f"{'metric':<30}{f'first {args.first}':>9}{f'last {args.last}':>9}")
        for key in SUMMARY_KEYS:
            print(f"{key:<30}{fmt(s[key]['first']):>9}{fmt(s[key]['last']):>9}")
        print(f"legal ratio gain (last {args.last} - first {args.first}): {fmt(s['legal_ratio']['gain'])}")
        print(f"pool: {s['pool_size']} problems, {s['pool_distinct_problems']} distinct (cosine < 0.95)")
        print(f"largest share of one problem in a round: {fmt(s['max_top_problem_share'])}")
        for probe in s["probe"]:
            print(f"probe at step {probe['step']}: majority = gold {fmt(probe['majority_correct'])}, solve rate "
                  f"{fmt(probe['solve_rate'])}, one sample = gold {fmt(probe['sample_accuracy'])}, "
                  f"{fmt(probe['seconds'], '.0f')} s")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(summaries, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
