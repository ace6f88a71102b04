"""Seed an initial pool: python scripts/seed_pool.py --config <recipe> --n_problems N --output pool.jsonl
[--max_minutes 30 --json report.json]

A pool of human-written questions instead (answers never read; rows outside every seed-0 evaluation subset of up
to 500 rows and the probe, in the gold control's order):
python scripts/seed_pool.py --questions_from gsm8k --data_dir ../shared/benchmarks --n_problems 512 --output pool.jsonl

Candidates come from the teacher prompt applied to the seed problem and to accepted problems; a candidate is kept
when it passes the official filters (solve rate of G samples inside [solve_rate_lower, solve_rate_upper], an answer
with a digit that the problem does not state, at least 30 characters, no XML tag). Rerunning with the same output
resumes and appends until N problems are accepted. The paper's run started from 512:
python scripts/seed_pool.py --config paper-llama3.2-3b --n_problems 512 --output runs/paper-llama3.2-3b-seed/pool.jsonl
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from opensir_lite.config import ConfigError
from opensir_lite.embedding import Embedder
from opensir_lite.evaluation.benchmarks import BenchmarkError, load_items, training_items
from opensir_lite.models import ModelLoadError, load_for_inference
from opensir_lite.pool import PoolFileError, embeddings_path
from opensir_lite.runtime import parse_config
from opensir_lite.sampling import sampling_settings
from opensir_lite.seeding import SeedSettings, pool_from_questions, seed_pool


@dataclass
class SeedArguments:
    n_problems: int = field(default=32, metadata={"help": "Problems to accept into the pool."})
    output: str = field(default="pool.jsonl", metadata={"help": "Pool file to write (resumed when it exists)."})
    max_attempts: int = field(default=512, metadata={"help": "Candidates tried before giving up."})
    candidates_per_batch: int = field(default=16, metadata={"help": "Teacher prompts per generate call."})
    max_minutes: float = field(default=0.0, metadata={"help": "Time box of this invocation in minutes (0: none)."})
    json: str | None = field(default=None, metadata={"help": "Write this invocation's report here as JSON."})
    questions_from: str | None = field(
        default=None,
        metadata={"help": "Write a pool of this benchmark's training-row questions (no generation, no answers)."},
    )
    data_dir: str | None = field(default=None, metadata={"help": "questions_from: folder of the JSONL copies."})


def question_pool(seed_args: SeedArguments) -> int:
    """The human-written-question variant: the first N training rows' questions (evaluation.training_items)."""
    bench, items, _ = load_items(seed_args.questions_from, seed_args.data_dir)
    rows = training_items(items, bench)[: seed_args.n_problems]
    out = Path(seed_args.output)
    if out.exists():
        raise PoolFileError(f"{out} exists: a question pool is written once (delete it to rebuild)")
    out.parent.mkdir(parents=True, exist_ok=True)
    pool_from_questions([(it.index, it.question) for it in rows], bench).save(out)
    embeddings_path(out).unlink(missing_ok=True)  # no embeddings yet: the trainer computes them
    print(f"done: {len(rows)} {bench} questions (rows outside every evaluation subset and the probe) in {out}")
    return 0


def main() -> int:
    try:
        train_args, model_args, seed_args = parse_config(extra=(SeedArguments,))
        if seed_args.questions_from:
            return question_pool(seed_args)
        torch.manual_seed(train_args.seed)
        model, tokenizer = load_for_inference(
            model_args.model_name_or_path,
            load_in_4bit=model_args.load_in_4bit,
            trust_remote_code=train_args.trust_remote_code,
        )
        settings = SeedSettings(
            n_problems=seed_args.n_problems,
            num_generations=train_args.num_generations,
            solve_rate_lower=train_args.solve_rate_lower,
            solve_rate_upper=train_args.solve_rate_upper,
            candidates_per_batch=seed_args.candidates_per_batch,
            max_attempts=seed_args.max_attempts,
            max_seconds=seed_args.max_minutes * 60,
            teacher=sampling_settings(train_args, "teacher"),
            student=sampling_settings(train_args, "student"),
            seed=train_args.seed,
            answer_extraction=train_args.answer_extraction,
            answer_vote=train_args.answer_vote,
            teacher_format_hint=train_args.teacher_format_hint,
            teacher_prefill=train_args.teacher_prefill,
        )
        report = seed_pool(
            model, tokenizer, seed_args.output, settings, embedder=Embedder(train_args.embedder_name_or_path)
        )
    except (ConfigError, PoolFileError, ModelLoadError, FileNotFoundError, BenchmarkError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"this invocation: {report.accepted_now} accepted of {report.tried} candidates in "
          f"{report.seconds / 60:.1f} min ({report.accepted_per_minute:.2f} per minute); outcomes: "
          + ", ".join(f"{k} {v}" for k, v in sorted(report.outcomes.items(), key=lambda kv: -kv[1])))  # fmt: skip
    if seed_args.json:
        record = {"recipe": train_args.recipe, "model": model_args.model_name_or_path, "seed": train_args.seed,
                  "accepted_total": report.accepted, "accepted": report.accepted_now, "tried": report.tried,
                  "seconds": round(report.seconds, 1), "accepted_per_minute": round(report.accepted_per_minute, 3),
                  "outcomes": report.outcomes, "temperature": train_args.temperature,
                  "teacher_max_new_tokens": train_args.teacher_max_new_tokens,
                  "student_max_new_tokens": train_args.student_max_new_tokens,
                  "num_generations": train_args.num_generations,
                  "solve_rate_range": [train_args.solve_rate_lower, train_args.solve_rate_upper]}  # fmt: skip
        Path(seed_args.json).write_text(json.dumps(record, indent=2) + "\n")
    if not report.reached:
        print(
            f"stopped after {report.tried} attempts (max_attempts or max_minutes): {report.accepted}/"
            f"{seed_args.n_problems} problems accepted in {report.path}; rerun to continue",
            file=sys.stderr,
        )
        return 1
    print(f"done: {report.accepted} problems in {report.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
