"""The health of a self-play run: python scripts/learning_report.py RUN_DIR [RUN_DIR ...] [--first 5 --last 10] [--json FILE]
python scripts/learning_report.py RUN_DIR --advantage   # per step: the format share of the student |advantage|

Reads metrics.jsonl and prints, per run, the legal ratio over the first ``--first`` and last ``--last`` steps, the student's valid
answer rate, the share of answered problems in the solvability gate, novelty, completion lengths, the label probe
(pseudo-label quality on held-out GSM8K rows), the reward-hacking watch (most repeated problem and answer) and the
distinct problems in the pool.

``--advantage`` adds a per-step table: the student's mean tokens and sampling entropy, the format share of the
student |advantage| as logged by the run (``advantage/format_share``, in runs that log it) and as replayed from
``round_evidence.jsonl`` under each advantage scheme (TRL's group std or no scaling, with or without the student
format gate), and the groups whose only variance is the format reward.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from opensir_lite.checkpointing import EVIDENCE_FILE
from opensir_lite.curves import (
    ADVANTAGE_SCHEMES,
    SUMMARY_KEYS,
    evidence_format_shares,
    find_metrics_file,
    learning_summary,
    read_metrics,
)


def fmt(v, spec=".2f") -> str:
    return "-" if v is None else format(v, spec)


def advantage_table(run: str) -> dict[str, dict]:
    """Print and return the per-step advantage table of one run."""
    rows = {r["step"]: r for r in read_metrics(find_metrics_file(run))}
    path = Path(run) / EVIDENCE_FILE
    evidence = (
        [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if path.is_file()
        else []
    )
    replay = {name: evidence_format_shares(evidence, scale, gate) for name, (scale, gate) in ADVANTAGE_SCHEMES.items()}
    names = list(ADVANTAGE_SCHEMES)
    print("format share of the student |advantage| per step (logged; replayed from round evidence: "
          + "; ".join(f"{i + 1} = {n}" for i, n in enumerate(names)) + ")")  # fmt: skip
    header = f"{'step':>4} {'tokens':>7} {'entropy':>8} {'logged':>7}" + "".join(
        f"{i + 1:>7}" for i in range(len(names))
    )
    print(header + f" {'format-only groups (1)':>23}")
    table = {}
    for step in sorted(rows):
        r = rows[step]
        shares = [replay[n].get(step, {}).get("format_share") for n in names]
        only = replay[names[0]].get(step, {}).get("format_only_groups")
        print(f"{step:>4} {fmt(r.get('student_mean_tokens'), '.0f'):>7} {fmt(r.get('student_mean_entropy'), '.3f'):>8} "
              f"{fmt(r.get('advantage/format_share')):>7}" + "".join(f"{fmt(v):>7}" for v in shares)
              + f" {fmt(only, 'd'):>23}")  # fmt: skip
        table[str(step)] = {"logged": r.get("advantage/format_share"), **dict(zip(names, shares, strict=True))}
    for n in names:
        steps = replay[n].values()
        fa, aa = sum(v["format_abs"] for v in steps), sum(v["accuracy_abs"] for v in steps)
        print(f"  all steps, {n}: format share {fmt(fa / (fa + aa) if fa + aa > 0 else None)}, format-only groups "
              f"{sum(v['format_only_groups'] for v in steps)}, accuracy-variance groups "
              f"{sum(v['accuracy_variance_groups'] for v in steps)}")  # fmt: skip
    return table


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders (with metrics.jsonl)")
    p.add_argument("--json", default=None, help="write the summaries here as JSON")
    p.add_argument("--first", type=int, default=5, help="steps averaged at the start (>= 1)")
    p.add_argument("--last", type=int, default=10, help="steps averaged at the end (>= 1)")
    p.add_argument("--advantage", action="store_true", help="per step: lengths, entropy and the format share")
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
        choice = s["probe_choice"]
        if choice:
            print(f"probe's choice: the step-{choice['step']} reading (majority = gold "
                  f"{fmt(choice['majority_correct'])}) -> {choice['checkpoint'] or 'the base (no update is better)'}")  # fmt: skip
        if args.advantage:
            s["advantage"] = advantage_table(run)
    if args.json:
        Path(args.json).write_text(json.dumps(summaries, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
