"""Execute notebooks top to bottom (SMOKE mode unless OPENSIR_LITE_MODE or OPENSIR_LITE_SMOKE says otherwise): what
CI does (in copies, --out); `make notebooks` runs them in showcase mode --inplace (the committed outputs).

python scripts/run_notebooks.py [NOTEBOOK ...] [--inplace | --out DIR] [--timeout SECONDS]

Each notebook runs in a fresh kernel from the repository root; any cell error fails the run with the notebook,
the cell number and the error's last line. --inplace stores the outputs in the notebook (how the committed
outputs are made); --out writes executed copies elsewhere.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("notebooks", nargs="*", help="default: every notebooks/*.ipynb")
    p.add_argument("--inplace", action="store_true", help="write the outputs into the notebooks")
    p.add_argument("--out", default=None, help="folder for the executed copies")
    p.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    args = p.parse_args()
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    os.environ.setdefault("OPENSIR_LITE_SMOKE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    paths = [Path(n) for n in args.notebooks] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    failed = 0
    for path in paths:
        if not path.is_file():
            print(f"error: notebook not found: {path}", file=sys.stderr)
            return 2
        book = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        try:
            NotebookClient(
                book, timeout=args.timeout, kernel_name="python3", resources={"metadata": {"path": ROOT}}
            ).execute()
            status = "ok"
        except CellExecutionError as e:
            failed += 1
            lines = [line for line in str(e).splitlines() if line.strip()]
            status = f"FAILED: {lines[-1] if lines else e}"
        print(f"{path.name}: {status} ({time.perf_counter() - start:.0f} s)", flush=True)
        if args.inplace:
            nbformat.write(book, path)
        elif args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            nbformat.write(book, Path(args.out) / path.name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
