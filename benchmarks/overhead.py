"""Self-play's cost per generated token against the gold-label control's, from one benchmark run.

python benchmarks/overhead.py --recipe learn-cpu-qwen --baseline grpo-gold [--steps 4] [--skip_first 1]
    [--json docs/benchmark_overhead_qwen.json] [--field value ...]
python benchmarks/overhead.py --from_runs runs/qwen-seed42 runs/qwen-gold [--skip_first 1] [--steps_between 1 6]
    [--json ...]

Each recipe trains ``steps`` steps in its own process (``benchmarks/step.py``, so that each peak memory is
its own), the same overrides for both; the table shows seconds per step, generated tokens per step, seconds per
1,000 generated tokens, the update's share and the peak memory, and the ratio of self-play's seconds per generated
token to the control's (target: at most 1.10). ``--from_runs`` times two finished runs of the same machine
instead, from their ``metrics.jsonl`` (steps that ran a label probe are left out; no peak memory);
``--steps_between FIRST LAST`` keeps only those steps of both runs (before ``--skip_first``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib import (
    format_overhead,
    overhead_ratio,
    step_breakdown,
    steps_between,
    without_probe_steps,
)

from opensir_lite.checkpointing import METRICS_FILE, read_run_rows

SCRIPT = Path(__file__).with_name("step.py")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="learn-cpu-qwen", help="the self-play recipe")
    p.add_argument("--baseline", default="grpo-gold", help="the gold-label control recipe")
    p.add_argument("--steps", type=int, default=4, help="steps of each recipe")
    p.add_argument("--skip_first", type=int, default=1, help="warm-up steps left out of the means")
    p.add_argument("--json", default=None, help="write both breakdowns and the ratio here")
    p.add_argument("--from_runs", nargs=2, metavar=("SELFPLAY_RUN", "CONTROL_RUN"), default=None,
                   help="time two finished runs from their metrics.jsonl instead of training new steps")  # fmt: skip
    p.add_argument("--steps_between", nargs=2, type=int, metavar=("FIRST", "LAST"), default=None,
                   help="with --from_runs: time only steps FIRST..LAST (inclusive) of both runs")  # fmt: skip
    args, overrides = p.parse_known_args()
    if args.from_runs:
        return from_runs(args)
    if args.steps < 1 or not 0 <= args.skip_first < args.steps:
        print("error: need --steps >= 1 and 0 <= --skip_first < --steps", file=sys.stderr)
        return 2
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in (args.recipe, args.baseline):
            out = Path(tmp) / f"{Path(name).stem}.json"
            cmd = [sys.executable, str(SCRIPT), "--recipe", name, "--steps", str(args.steps),
                   "--skip_first", str(args.skip_first), "--json", str(out), *overrides]  # fmt: skip
            print(f"timing {name}: {' '.join(cmd[1:])}", flush=True)
            done = subprocess.run(cmd)
            if done.returncode != 0 or not out.is_file():
                print(f"error: benchmarking {name} failed (exit {done.returncode})", file=sys.stderr)
                return 2
            rows[name] = json.loads(out.read_text())
    record = {"recipe": args.recipe, "baseline": args.baseline, "steps": args.steps, "skip_first": args.skip_first,
              "overrides": overrides, "rows": rows,
              "ratio_seconds_per_token": overhead_ratio(rows[args.recipe], rows[args.baseline])}  # fmt: skip
    print(format_overhead(record))
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    return 0


def from_runs(args) -> int:
    rows = {}
    for folder in args.from_runs:
        path = Path(folder) / METRICS_FILE
        if not path.is_file():
            print(f"error: {path} not found: --from_runs takes two run folders", file=sys.stderr)
            return 2
        steps = without_probe_steps(read_run_rows(path))
        if args.steps_between:
            steps = steps_between(steps, *args.steps_between)
        if len(steps) <= args.skip_first:
            print(f"error: {path} has {len(steps)} steps without a probe, need more than --skip_first", file=sys.stderr)
            return 2
        rows[Path(folder).name] = step_breakdown(steps, skip_first=args.skip_first)
    a, b = rows
    record = {"recipe": a, "baseline": b, "from_runs": args.from_runs, "skip_first": args.skip_first,
              "steps_between": args.steps_between, "rows": rows,
              "ratio_seconds_per_token": overhead_ratio(rows[a], rows[b])}  # fmt: skip
    print(format_overhead(record))
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
