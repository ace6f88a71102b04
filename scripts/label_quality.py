"""Pseudo-label quality where training looks: python scripts/label_quality.py --config learn-cpu-qwen
--data_dir ../shared/benchmarks --rows 320 --results_dir results/qwen0.5b/label-quality

Three stages, each resumable and each writing into --results_dir:
1. samples.jsonl: for the first --rows questions of the recipe's initial pool that are GSM8K rows (the
   gsm8k-questions pool: rows outside every evaluation subset and the probe), G student samples at the recipe's
   settings (the label probe's code: common random numbers, the rollout dtype), their majority vote and solve rate;
   gold is read from --data_dir for measurement only.
2. program_checks.jsonl: one greedy program per row from the program check, run in the sandbox, graded against the
   majority and against gold.
3. table.json (and the printed table): P(majority = gold) by solve-rate bin with Wilson intervals; inside the gate
   the precision of the majority label, of the program-confirmed label and of the program alone, and the recall of
   the filter.

--stage samples|programs|table runs one stage (default: all, skipping rows already done).

A self-play pool, where gold is absent (the teacher's solvability judgement): --pool_run RUN_DIR --pool_checks FILE
adds the share of its answered problems whose program confirmed the majority, by solve-rate bin and in the gate
(FILE from scripts/check_programs.py --run_dir RUN_DIR --output FILE); written to pool_table.json.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from opensir_lite.config import ConfigError
from opensir_lite.evaluation.benchmarks import BenchmarkError, load_items
from opensir_lite.exploration import load_run_pool
from opensir_lite.label_quality import format_pool_table, format_table, label_table, pool_gold_items, pool_table
from opensir_lite.models import ModelLoadError, load_for_inference
from opensir_lite.pool import PoolFileError
from opensir_lite.probe import LabelProbe
from opensir_lite.programs import ProgramCheck, check_problems, read_checks, write_checks
from opensir_lite.prompts import supports_system_prompt
from opensir_lite.runtime import parse_config
from opensir_lite.sandbox import SandboxUnavailable


@dataclass
class LabelQualityArguments:
    data_dir: str = field(default="../shared/benchmarks", metadata={"help": "Folder holding gsm8k.jsonl (gold)."})
    rows: int = field(default=320, metadata={"help": "Pool questions to measure (the pool's first N)."})
    results_dir: str = field(default="results/qwen0.5b/label-quality", metadata={"help": "Where the stages write."})
    stage: str = field(default="all", metadata={"help": "samples, programs, table or all."})
    chunk: int = field(default=16, metadata={"help": "Rows sampled per appended chunk (resume granularity)."})
    pool_run: str | None = field(default=None, metadata={"help": "A self-play run (or pool .jsonl) to tabulate too."})
    pool_checks: str | None = field(
        default=None, metadata={"help": "That pool's program_checks.jsonl (scripts/check_programs.py --output)."}
    )


def main() -> int:
    try:
        train_args, model_args, args = parse_config(extra=(LabelQualityArguments,))
        if args.stage not in ("samples", "programs", "table", "all"):
            raise ConfigError(f"--stage must be samples, programs, table or all, not {args.stage!r}")
        if bool(args.pool_run) != bool(args.pool_checks):
            raise ConfigError("--pool_run and --pool_checks go together")
        if args.pool_checks and not Path(args.pool_checks).is_file():
            raise ConfigError(f"--pool_checks: file not found: {args.pool_checks}")
        if not train_args.initial_pool_path:
            raise ConfigError("label quality reads the questions of the recipe's initial_pool_path; set one")
        out = Path(args.results_dir)
        _, gsm8k, _ = load_items("gsm8k", args.data_dir)
        items = pool_gold_items(train_args.initial_pool_path, gsm8k, args.rows)
        out.mkdir(parents=True, exist_ok=True)
        samples_file, checks_file = out / "samples.jsonl", out / "program_checks.jsonl"
        model = tokenizer = None
        if args.stage in ("samples", "programs", "all"):
            torch.manual_seed(train_args.seed)
            model, tokenizer = load_for_inference(
                model_args.model_name_or_path, trust_remote_code=train_args.trust_remote_code,
                dtype=train_args.rollout_dtype,
            )  # fmt: skip
            use_system = (
                supports_system_prompt(tokenizer)
                if train_args.use_system_prompt is None
                else train_args.use_system_prompt
            )
        if args.stage in ("samples", "all"):
            done = {json.loads(line)["row"] for line in samples_file.open()} if samples_file.is_file() else set()
            todo = [it for it in items if it.index not in done]
            probe = LabelProbe(train_args, items=[], every=1, last_step=1)
            for start in range(0, len(todo), args.chunk):
                probe.items = todo[start : start + args.chunk]
                t0 = time.perf_counter()
                probe.read_model(model, tokenizer, 1, use_system)
                seconds = (time.perf_counter() - t0) / len(probe.items)
                with samples_file.open("a") as f:
                    for item, row in zip(probe.items, probe.last_rows, strict=True):
                        f.write(json.dumps({**row, "question": item.question, "gold": item.gold,
                                            "seconds": round(seconds, 2)}) + "\n")  # fmt: skip
                print(f"samples: {len(done) + start + len(probe.items)}/{len(items)} rows", flush=True)
        if args.stage in ("programs", "all"):
            rows = {r["row"]: r for r in map(json.loads, samples_file.open())}
            done = read_checks(checks_file) if checks_file.is_file() else {}
            todo = [(i, rows[i]["question"], rows[i]["majority"], rows[i]["gold"]) for i in rows if i not in done]
            checks = [ProgramCheck(**{k: d.get(k) for k in ProgramCheck.__dataclass_fields__}) for d in done.values()]
            for start in range(0, len(todo), args.chunk):
                checks += check_problems(
                    model, tokenizer, todo[start : start + args.chunk], train_args.program_max_new_tokens,
                    train_args.max_generate_batch, use_system, allow_unisolated=train_args.allow_unisolated_sandbox,
                )  # fmt: skip
                write_checks(checks_file, checks)
                print(f"programs: {len(checks)}/{len(rows)} rows", flush=True)
        samples = [json.loads(line) for line in samples_file.open()]
        checks = read_checks(checks_file) if checks_file.is_file() else {}
        table = label_table(samples, checks, train_args.solve_rate_lower, train_args.solve_rate_upper)
        pool = None
        if args.pool_run:
            pool = pool_table(load_run_pool(args.pool_run).history, read_checks(args.pool_checks),
                              train_args.solve_rate_lower, train_args.solve_rate_upper)  # fmt: skip
    except (ConfigError, PoolFileError, ModelLoadError, FileNotFoundError, BenchmarkError, SandboxUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    table.update(model=model_args.model_name_or_path, samples=train_args.probe_samples or train_args.num_generations,
                 temperature=train_args.temperature, student_max_new_tokens=train_args.student_max_new_tokens,
                 rollout_dtype=train_args.rollout_dtype)  # fmt: skip
    (out / "table.json").write_text(json.dumps(table, indent=2) + "\n")
    print(format_table(table))
    if pool is not None:
        pool.update(run=args.pool_run, checks=args.pool_checks)
        (out / "pool_table.json").write_text(json.dumps(pool, indent=2) + "\n")
        print("\n" + format_pool_table(pool))
    return 0


if __name__ == "__main__":
    sys.exit(main())
