"""Training curves of a run: python scripts/plot_run.py RUN_DIR [--out DIR]  (reads RUN_DIR/metrics.jsonl)"""

from __future__ import annotations

import argparse
import sys

from opensir_lite.curves import write_training_plots
from opensir_lite.rewards import GATE_LOWER, GATE_UPPER


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("run_dir", help="a run folder (with metrics.jsonl) or a metrics .jsonl file")
    p.add_argument("--out", default=None, help="output folder (default: the run folder)")
    p.add_argument("--solve_rate_lower", type=float, default=GATE_LOWER, help="gate drawn on the solve-rate panel")
    p.add_argument("--solve_rate_upper", type=float, default=GATE_UPPER, help="gate drawn on the solve-rate panel")
    args = p.parse_args()
    try:
        path = write_training_plots(args.run_dir, args.out, args.solve_rate_lower, args.solve_rate_upper)
    except (FileNotFoundError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
