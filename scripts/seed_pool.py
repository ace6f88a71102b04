"""Seed an initial pool: python scripts/seed_pool.py --config <recipe> --n_problems N --output pool.jsonl

Candidates come from the teacher prompt applied to the seed problem and to accepted problems; a candidate is kept
when it passes the official filters (solve rate of G samples inside [solve_rate_lower, solve_rate_upper], an answer
with a digit that the problem does not state, at least 30 characters, no XML tag). Rerunning with the same output
resumes and appends until N problems are accepted. The paper's run started from 512:
python scripts/seed_pool.py --config paper-llama3.2-3b --n_problems 512 --output runs/paper-llama3.2-3b-seed/pool.jsonl
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch

from opensir_lite.config import ConfigError, parse_config
from opensir_lite.embedding import Embedder
from opensir_lite.models import ModelLoadError, load_for_inference
from opensir_lite.pool import PoolFileError
from opensir_lite.seeding import SeedSettings, seed_pool
from opensir_lite.selfplay import sampling_settings


@dataclass
class SeedArguments:
    n_problems: int = field(default=32, metadata={"help": "Problems to accept into the pool."})
    output: str = field(default="pool.jsonl", metadata={"help": "Pool file to write (resumed when it exists)."})
    max_attempts: int = field(default=512, metadata={"help": "Candidates tried before giving up."})
    candidates_per_batch: int = field(default=16, metadata={"help": "Teacher prompts per generate call."})


def main() -> int:
    try:
        train_args, model_args, seed_args = parse_config(extra=(SeedArguments,))
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
    except (ConfigError, PoolFileError, ModelLoadError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not report.reached:
        print(
            f"stopped after {report.tried} attempts (max_attempts): {report.accepted}/{seed_args.n_problems} problems "
            f"accepted in {report.path}; rerun to continue",
            file=sys.stderr,
        )
        return 1
    print(f"done: {report.accepted} problems in {report.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
