"""The program check's sandbox cost per program: this checkout's sandbox against an earlier commit's.

python benchmarks/sandbox.py [--baseline_ref 07ee601] [--repeats 30] [--json docs/benchmark_sandbox.json]

Runs the same programs through both sandboxes, interleaved (one of each in turn, so that a busy moment of the
machine costs both alike), and prints a table: wall seconds per program (mean, median, 90th percentile) for each
sandbox and the ratio of the means. The baseline is the module ``opensir_lite/sandbox.py`` as it stood at
``--baseline_ref`` (read with ``git show``, imported from a temporary folder beside that commit's
``sandbox_launcher.py``, where it had one); nothing else of that commit is used.
Programs: a model-written arithmetic program as the program check sees them, and one that imports sympy (the
heaviest import the model's programs use).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from opensir_lite import sandbox

PROGRAMS = {
    "arithmetic": "price = 1.50\nnotebooks = 5 * price\npens = 2 * 0.25\ntotal = (notebooks + pens + 12 + 10) * 0.9\n"
    "print(round(total, 2))",
    "sympy": "from sympy import symbols, solve\nx = symbols('x')\nprint(solve(3 * x + 5 - 20, x)[0])",
}


def load_baseline(ref: str):
    """The sandbox module as it stood at ``ref``, with its launcher beside it (where ``ref`` had one)."""
    root = Path(__file__).resolve().parents[1]
    folder = Path(tempfile.mkdtemp(prefix="sandbox-baseline-"))
    for name, target in (("sandbox.py", "sandbox_baseline.py"), ("sandbox_launcher.py", "sandbox_launcher.py")):
        shown = subprocess.run(["git", "show", f"{ref}:opensir_lite/{name}"], cwd=root, capture_output=True, text=True)
        if shown.returncode != 0 and name == "sandbox.py":
            raise ValueError(f"cannot read opensir_lite/sandbox.py at {ref}: {shown.stderr.strip()}")
        if shown.returncode == 0:
            (folder / target).write_text(shown.stdout)
    path = folder / "sandbox_baseline.py"
    spec = importlib.util.spec_from_file_location("sandbox_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {"mean": statistics.fmean(ordered), "median": statistics.median(ordered),
            "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], "n": len(ordered)}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline_ref", default="07ee601", help="the commit whose sandbox is the baseline")
    p.add_argument("--repeats", type=int, default=30, help="runs of each program in each sandbox")
    p.add_argument("--json", default=None, help="write the table here")
    args = p.parse_args()
    if args.repeats < 1:
        print("error: --repeats must be at least 1", file=sys.stderr)
        return 2
    try:
        baseline = load_baseline(args.baseline_ref)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sandboxes = {"baseline": baseline, "current": sandbox}
    for name, module in sandboxes.items():
        reason = module.isolation_unavailable_reason()
        if reason is not None:
            print(f"error: the {name} sandbox cannot isolate here: {reason}", file=sys.stderr)
            return 2
    times: dict[str, dict[str, list[float]]] = {prog: {name: [] for name in sandboxes} for prog in PROGRAMS}
    for prog, source in PROGRAMS.items():
        for module in sandboxes.values():  # one warm-up each (page cache, the probe)
            module.run_program(source)
        for _ in range(args.repeats):
            for name, module in sandboxes.items():
                start = time.perf_counter()
                result = module.run_program(source)
                times[prog][name].append(time.perf_counter() - start)
                if not result.ok:
                    print(f"error: {prog} failed in the {name} sandbox: {result.failure} {result.stderr_tail}",
                          file=sys.stderr)  # fmt: skip
                    return 1
    rows = []
    print(f"{'program':<12} {'sandbox':<10} {'mean s':>8} {'median s':>9} {'p90 s':>7} {'ratio':>6}")
    for prog in PROGRAMS:
        base = summary(times[prog]["baseline"])
        for name in sandboxes:
            s = summary(times[prog][name])
            ratio = s["mean"] / base["mean"]
            rows.append({"program": prog, "sandbox": name, **s, "ratio_to_baseline": ratio})
            print(f"{prog:<12} {name:<10} {s['mean']:>8.3f} {s['median']:>9.3f} {s['p90']:>7.3f} {ratio:>6.2f}")
    if args.json:
        out = {"baseline_ref": args.baseline_ref, "repeats": args.repeats, "machine": platform.processor() or
               platform.machine(), "python": sys.version.split()[0], "rows": rows}  # fmt: skip
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
