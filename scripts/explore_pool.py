"""Explore the problems a run generated: python scripts/explore_pool.py RUN_DIR [--out DIR] [--method auto|pca|umap]
    [--html [FILE]]

Writes PNG figures, summary.json and report.md (default RUN_DIR/explore) and prints the report. With --html it also
writes one self-contained interactive page (default RUN_DIR/explore/explorer.html): the embedding map with hover,
filters by step, legality and reason, concept, solve rate and text, a table and the detail of each problem (its
reference, teacher output, student answers by vote class and rewards). It opens offline in any browser.
"""

from __future__ import annotations

import argparse
import sys

from opensir_lite.exploration import EXPLORER_FILE, write_exploration_report, write_explorer_html
from opensir_lite.pool import PoolFileError
from opensir_lite.rewards import GATE_LOWER, GATE_UPPER


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a run folder (with pool.jsonl) or a pool .jsonl file")
    p.add_argument("--out", default=None, help="output folder (default RUN_DIR/explore)")
    p.add_argument("--method", choices=["auto", "pca", "umap"], default="auto", help="2-D map of the embeddings")
    p.add_argument("--solve_rate_lower", type=float, default=GATE_LOWER, help="gate drawn on the histogram")
    p.add_argument("--solve_rate_upper", type=float, default=GATE_UPPER, help="gate drawn on the histogram")
    p.add_argument("--html", nargs="?", const="", default=None, metavar="FILE", help="also write the HTML explorer")
    args = p.parse_args()
    try:
        report = write_exploration_report(
            args.run_dir, args.out, args.solve_rate_lower, args.solve_rate_upper, args.method
        )
    except (FileNotFoundError, PoolFileError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.read_text(encoding="utf-8"))
    print(f"report and figures: {report.parent}")
    if args.html is not None:
        method = "pca" if args.method == "auto" else args.method
        page = write_explorer_html(args.run_dir, args.html or (report.parent / EXPLORER_FILE), method)
        print(f"explorer: {page} ({page.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
