"""Check a run's problems by program: python scripts/check_programs.py --config <recipe> --run_dir RUN_DIR
[--adapter DIR] [--limit N] [--output FILE] [--json summary.json]

For every legal problem of RUN_DIR's pool with a student majority answer, the policy (the recipe's model, plus
--adapter) writes a short Python program (one greedy completion); the sandbox runs it (no network, read-only file
system, CPU / memory / output limits) and the last line it prints is graded against the majority with the
project's grader. Writes RUN_DIR/program_checks.jsonl (the explorer's "program" column and filter read it) and
prints the agreement table.

On the label probe (32 GSM8K rows with gold): the student's majority of G samples at the recipe's settings, the
program answer and gold, pairwise:
python scripts/check_programs.py --config learn-cpu-qwen --probe --output runs/programs-probe/program_checks.jsonl

Where the sandbox cannot make its namespaces it refuses in one line; --allow_unisolated_sandbox runs the programs
anyway (limits, empty environment and folder, but the machine's network and files).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from opensir_lite.config import ConfigError
from opensir_lite.evaluation.benchmarks import BenchmarkError
from opensir_lite.exploration import load_run_pool
from opensir_lite.models import ModelLoadError, load_for_inference
from opensir_lite.pool import PoolFileError
from opensir_lite.probe import LabelProbe
from opensir_lite.programs import (
    PROGRAM_CHECKS_FILE,
    check_problems,
    format_summary,
    read_checks,
    regrade,
    summarize_checks,
    write_checks,
)
from opensir_lite.prompts import supports_system_prompt
from opensir_lite.runtime import parse_config
from opensir_lite.sandbox import SandboxUnavailable


@dataclass
class CheckArguments:
    run_dir: str | None = field(default=None, metadata={"help": "A run folder (or pool .jsonl) whose pool to check."})
    probe: bool = field(default=False, metadata={"help": "Check the label probe's rows instead (majority and gold)."})
    adapter: str | None = field(default=None, metadata={"help": "LoRA adapter folder on the recipe's model."})
    limit: int = field(default=0, metadata={"help": "Check at most this many problems (0: all)."})
    output: str | None = field(default=None, metadata={"help": "program_checks.jsonl to write (default RUN_DIR's)."})
    json: str | None = field(default=None, metadata={"help": "Also write the summary here as JSON."})
    regrade_only: bool = field(
        default=False, metadata={"help": "Grade the checks already in the output file again; no model, no sandbox."}
    )


def pool_items(run_dir: str, limit: int) -> list[tuple[int, str, str | None, str | None]]:
    """(id, problem, majority, no gold) for the legal problems of the pool's history with a majority answer."""
    records = [r for r in load_run_pool(run_dir).history if r.legal and r.majority_answer is not None]
    return [(r.id, r.problem, r.majority_answer, None) for r in records[: limit or None]]


def probe_items(model, tokenizer, train_args, limit: int, use_system_prompt: bool):
    """(probe row, question, majority of G student samples at the recipe's settings, gold) for the probe rows."""
    probe = LabelProbe(train_args, every=1, last_step=1)
    if limit:
        probe.items = probe.items[:limit]
    probe.read_model(model, tokenizer, 1, use_system_prompt)
    return [(item.index, item.question, row["majority"], item.gold)
            for item, row in zip(probe.items, probe.last_rows, strict=True)]  # fmt: skip


def main() -> int:
    try:
        train_args, model_args, args = parse_config(extra=(CheckArguments,))
        if bool(args.run_dir) == bool(args.probe):
            raise ConfigError("give exactly one of --run_dir RUN_DIR and --probe")
        if args.probe and not args.output:
            raise ConfigError("--probe needs --output FILE (there is no run folder to write into)")
        if args.run_dir:
            run = Path(args.run_dir)
            output = Path(args.output) if args.output else (run if run.is_dir() else run.parent) / PROGRAM_CHECKS_FILE
            if not args.regrade_only:
                items = pool_items(args.run_dir, args.limit)
        else:
            output = Path(args.output)
        if args.regrade_only:
            if not output.is_file():
                raise FileNotFoundError(f"--regrade_only: no checks at {output}")
            return report(regrade(list(read_checks(output).values())), output, args, model_args, None)
        torch.manual_seed(train_args.seed)
        # the recipe's rollout dtype (bf16 where native under bf16_when_native), as the round and its probe sample
        model, tokenizer = load_for_inference(
            model_args.model_name_or_path, adapter=args.adapter, trust_remote_code=train_args.trust_remote_code,
            dtype=train_args.rollout_dtype,
        )  # fmt: skip
        use_system = (
            supports_system_prompt(tokenizer) if train_args.use_system_prompt is None else train_args.use_system_prompt
        )
        start = time.perf_counter()
        if args.probe:
            items = probe_items(model, tokenizer, train_args, args.limit, use_system)
        t_programs = time.perf_counter()
        checks = check_problems(
            model, tokenizer, items, train_args.program_max_new_tokens, train_args.max_generate_batch, use_system,
            allow_unisolated=train_args.allow_unisolated_sandbox,
        )  # fmt: skip
        end = time.perf_counter()
    except (ConfigError, PoolFileError, ModelLoadError, FileNotFoundError, BenchmarkError, SandboxUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    measured = {"dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
                "seconds_programs": round(end - t_programs, 1),
                "seconds_probe": round(t_programs - start, 1) if args.probe else None,
                "seconds_per_problem": round((end - t_programs) / len(checks), 2) if checks else None}  # fmt: skip
    return report(checks, output, args, model_args, measured)


def report(checks, output: Path, args: CheckArguments, model_args, measured: dict | None) -> int:
    """Write the checks and print (and optionally write) their summary."""
    write_checks(output, checks)
    summary = summarize_checks(checks)
    summary.update(source="probe" if args.probe else str(args.run_dir), model=model_args.model_name_or_path,
                   adapter=args.adapter, regraded=args.regrade_only, **(measured or {}))  # fmt: skip
    print(format_summary(summary, title=f"program check of {summary['source']}"))
    if measured:
        print(
            f"  {measured['seconds_programs']:.0f} s for programs ({measured['seconds_per_problem']} s per problem,"
            f" {measured['dtype']})"
        )
    print(f"checks: {output}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
