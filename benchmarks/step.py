"""Time self-play steps of a recipe and print where the time goes.

python benchmarks/step.py --recipe smoke [--steps 3] [--skip_first 1] [--json docs/bench.json] [--field value ...]
python benchmarks/step.py --metrics runs/smoke/metrics.jsonl   # summarise a finished run instead
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
from pathlib import Path

import torch
from benchlib import format_breakdown, step_breakdown

from opensir_lite.checkpointing import read_run_rows
from opensir_lite.config import ConfigError
from opensir_lite.runtime import parse_config
from opensir_lite.training import METRICS_FILE, train


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="smoke", help="packaged recipe name or YAML path")
    parser.add_argument("--steps", type=int, default=3, help="self-play steps to time")
    parser.add_argument("--skip_first", type=int, default=1, help="warm-up steps left out of the means")
    parser.add_argument("--json", default=None, help="write the breakdown here as JSON")
    parser.add_argument("--metrics", default=None, help="summarise this metrics.jsonl instead of training")
    args, overrides = parser.parse_known_args()
    if args.metrics:
        if not Path(args.metrics).is_file():
            print(f"error: metrics file not found: {args.metrics}", file=sys.stderr)
            return 2
        breakdown = step_breakdown(read_run_rows(args.metrics), skip_first=args.skip_first)
        breakdown["source"] = args.metrics
        print(format_breakdown(breakdown, title=f"self-play step breakdown: {args.metrics}"))
        if args.json:
            Path(args.json).write_text(json.dumps(breakdown, indent=2) + "\n")
        return 0
    output_dir = tempfile.mkdtemp(prefix="opensir-bench-")
    try:
        train_args, model_args = parse_config(
            ["--config", args.recipe, "--max_steps", str(args.steps), "--output_dir", output_dir,
             "--save_strategy", "no", *overrides]
        )  # fmt: skip
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    train(train_args, model_args, quiet=True)
    breakdown = step_breakdown(read_run_rows(Path(output_dir) / METRICS_FILE), skip_first=args.skip_first)
    if torch.cuda.is_available():
        breakdown["peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        breakdown["device"] = torch.cuda.get_device_name()
    else:
        breakdown["peak_memory_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
        breakdown["device"] = "cpu (peak RSS)"
    breakdown["recipe"] = args.recipe
    breakdown["overrides"] = overrides
    print(format_breakdown(breakdown, title=f"self-play step breakdown: recipe {args.recipe}, {args.steps} steps"))
    if args.json:
        Path(args.json).write_text(json.dumps(breakdown, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
