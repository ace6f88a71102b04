"""One process against two at the same global batch: python benchmarks/two_processes.py --config smoke

python benchmarks/two_processes.py --config <recipe> [--steps 2] [--threads 2] [--json FILE] [--field value ...]

Runs ``scripts/train.py`` twice with the recipe (plus any ``--field value`` overrides): under
``torch.distributed.run`` as two processes (gloo on a CPU, NCCL on GPUs) with ``threads / 2`` torch threads each and the
recipe's ``gradient_accumulation_steps`` A, and as one process with ``threads`` threads and 2A accumulation steps, so
both optimiser steps hold the same rows and the same number of self-play rounds (one per process and A micro-steps). Prints the mean step time (the first step, which loads
and warms up, is left out when there are more), the rollout and update shares, the pool size and the legal ratio, and
writes the table as JSON.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from opensir_lite.checkpointing import read_run_rows
from opensir_lite.config import ConfigError
from opensir_lite.runtime import parse_config

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = {"--steps": 2, "--threads": 2, "--json": None}
OPTIONS_HELP = """options of this benchmark (every other flag goes to scripts/train.py; its flags follow):
  --steps STEPS      optimiser steps per run (default: 2)
  --threads THREADS  CPU threads in all, split over the processes (default: 2, must be even)
  --json JSON        write the table here as JSON (default: none)
"""


def split_options(argv: list[str]) -> tuple[dict, list[str]]:
    """Our three options out of argv; the rest goes to scripts/train.py."""
    opts, rest, i = dict(OPTIONS), [], 0
    while i < len(argv):
        if argv[i] in OPTIONS and i + 1 < len(argv):
            opts[argv[i]] = argv[i + 1]
            i += 2
        else:
            rest.append(argv[i])
            i += 1
    return opts, rest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(processes: int, threads: int, accumulation: int, steps: int, train_argv: list[str], out: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1", TRL_EXPERIMENTAL_SILENCE="1")
    train = [str(ROOT / "scripts" / "train.py"), *train_argv, "--output_dir", str(out), "--overwrite_output_dir",
             "true", "--max_steps", str(steps), "--gradient_accumulation_steps", str(accumulation), "--save_steps",
             str(10 * steps), "--probe_every", "0", "--write_plots", "false", "--disable_tqdm", "true"]  # fmt: skip
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port", str(free_port())]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(launcher + train, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        raise RuntimeError(f"{processes}-process run failed (exit {proc.returncode}): " + " | ".join(tail))
    rows = read_run_rows(out / "metrics.jsonl")
    timed = rows[1:] if len(rows) > 1 else rows
    mean = lambda key: sum(r.get(key, 0.0) for r in timed) / len(timed)  # noqa: E731
    return {
        "processes": processes,
        "threads_per_process": threads,
        "gradient_accumulation_steps": accumulation,
        "steps": len(rows),
        "timed_steps": len(timed),
        "step_s": mean("time/step"),
        "rollout_s": mean("time/rollout"),
        "update_s": mean("time/update"),
        "teacher_outputs_per_step": mean("teacher_outputs"),
        "legal_ratio": mean("legal_ratio"),
        "pool_size": rows[-1].get("pool_size"),
        "wall_s": wall,
    }


def format_table(rows: list[dict]) -> str:
    """Step time per launch; each row's rounds per optimiser step is the same by construction."""
    base = rows[0]["step_s"]
    lines = [
        "| processes | torch threads each | gradient accumulation | rounds per step | step s | vs 1 process | wall s |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['processes']} | {r['threads_per_process']} | {r['gradient_accumulation_steps']} "
            f"| {r.get('rounds_per_step', '-')} | {r['step_s']:.1f} | {base / r['step_s']:.2f}x | {r['wall_s']:.0f} |"
        )
    return "\n".join(lines)


def main() -> int:
    opts, train_argv = split_options(sys.argv[1:])
    if {"-h", "--help"} & set(train_argv):
        print(OPTIONS_HELP)
    try:
        steps, threads = int(opts["--steps"]), int(opts["--threads"])
        train_args, _ = parse_config(train_argv)  # a bad recipe fails here, in one line
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    accumulation = train_args.gradient_accumulation_steps
    if threads % 2:
        print(f"error: --threads ({threads}) must be even to split over 2 processes", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="opensir-mp-") as tmp:
        try:
            for processes in (1, 2):
                row = run(processes, threads // processes, accumulation * 2 // processes, steps, train_argv,
                          Path(tmp) / f"p{processes}")  # fmt: skip
                rows_per_step = train_args.per_device_train_batch_size * row["gradient_accumulation_steps"] * processes
                row["rounds_per_step"] = rows_per_step // train_args.rows_per_round
                rows.append(row)
                print(f"{processes} process(es): {row['step_s']:.1f} s per step", flush=True)
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    print(format_table(rows))
    if opts["--json"]:
        record = {"recipe": train_args.recipe, "argv": train_argv, "global_rows_per_step":
                  train_args.per_device_train_batch_size * accumulation * 2, "rows": rows}  # fmt: skip
        Path(opts["--json"]).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
