"""Rollout sampling speed of a recipe's policy, three ways: python benchmarks/rollout.py --config learn-cpu

python benchmarks/rollout.py --config <recipe> [--references 2] [--student_problems 6] [--json FILE]

One round's generation as the recipe makes it (teacher prompts for ``references`` pool problems x G, then student
prompts for ``student_problems`` problems x G, each role at its token budget), sampled by:
  policy-packed  - the 4-bit policy as it sampled before this project turned bitsandbytes' CPU packing off (on
                   AVX512-BF16 CPUs a bf16 kernel; the policy that GRPO then scored differed from it)
  policy         - the policy itself (rollout_model: policy)
  merged         - a plain copy with the LoRA weights merged in (rollout_model: merged)
Prints tokens, seconds, generated tokens/s and the speed-up over policy-packed; --json writes the table.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from benchlib import format_rollout_speed, logprob_gap, time_generation

from opensir_lite.config import ConfigError
from opensir_lite.generation import generate
from opensir_lite.models import ModelLoadError, attention_for, current_device_dtype
from opensir_lite.prompts import render, student_messages, teacher_messages
from opensir_lite.runtime import parse_config
from opensir_lite.sampling import sampling_settings
from opensir_lite.training import MergedRolloutModel, TrainingSetupError, load_policy_with_adapter, rollout_dtype

STUDENT_PROBLEMS = [  # problems of the kind SmolLM2 writes as a teacher
    "A farmer has 12 cows and buys 7 more. How many cows does he have now?",
    "A garden has 4 rows of 5 tulips. How many tulips are in the garden?",
    "Sara reads 6 pages a day for 5 days. How many pages does she read?",
    "A box holds 24 eggs. If 9 eggs break, how many eggs are left?",
    "Tom buys 3 pens at 2 dollars each. How much does he pay?",
    "There are 30 students and 6 tables. How many students sit at each table?",
]


@dataclass
class RolloutArguments:
    references: int = field(default=2, metadata={"help": "Teacher prompts (each sampled G times)."})
    student_problems: int = field(default=6, metadata={"help": "Student problems (each sampled G times)."})
    variants: str = field(
        default="merged,policy,policy-packed",
        metadata={"help": "Samplers to time, in this order (bitsandbytes' packing cannot be undone: run it last)."},
    )
    json: str | None = field(default=None, metadata={"help": "Write the table here as JSON."})
    gap: bool = field(
        default=False,
        metadata={"help": "Also score the merged copy's samples with the policy (as GRPO does): the log-prob gap."},
    )


def main() -> int:
    try:
        train_args, model_args, bench = parse_config(extra=(RolloutArguments,))
        policy, tokenizer = load_policy_with_adapter(model_args, train_args)
        G = train_args.num_generations
        hint = train_args.teacher_format_hint
        teacher = [render(tokenizer, teacher_messages(p, format_hint=hint)) + train_args.teacher_prefill
                   for p in STUDENT_PROBLEMS[: bench.references]]  # fmt: skip
        student = [render(tokenizer, student_messages(STUDENT_PROBLEMS[i % len(STUDENT_PROBLEMS)]))
                   for i in range(bench.student_problems)]  # fmt: skip
        device, _ = current_device_dtype()
        merged = MergedRolloutModel(  # before packing
            policy, attention_for(device, model_args.attn_implementation), rollout_dtype(train_args.rollout_dtype)
        )
        merged.sync()
        rows = []
        for variant in [v.strip() for v in bench.variants.split(",") if v.strip()]:
            if variant == "merged":
                model = merged.model
            else:
                model = policy
                for module in policy.modules():  # packing is what bitsandbytes did before; off is what we train
                    if hasattr(module, "support_avx512bf16_for_cpu"):
                        module.support_avx512bf16_for_cpu = variant == "policy-packed"
            row = {"sampler": variant}
            for role, prompts in (("teacher", teacher), ("student", student)):
                row[role] = time_generation(model, tokenizer, prompts, G, sampling_settings(train_args, role), seed=0)
            if variant == "merged" and bench.gap:  # the copy's own samples, scored as the trainer scores them
                torch.manual_seed(0)
                samples = generate(model, tokenizer, student[:2], G, sampling_settings(train_args, "student"))
                policy.train()
                autocast = torch.bfloat16 if train_args.bf16 else None
                row["logprob_gap"] = logprob_gap(model, policy, samples, train_args.temperature, autocast)
                policy.eval()
                print(f"log-prob gap of the merged copy: {row['logprob_gap']}", flush=True)
            rows.append(row)
            print(f"{variant}: {row['teacher']['seconds'] + row['student']['seconds']:.1f} s", flush=True)
    except (ConfigError, ModelLoadError, TrainingSetupError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_rollout_speed(rows, baseline="policy-packed"))
    if bench.json:
        record = {"recipe": train_args.recipe, "G": G, "references": bench.references,
                  "student_problems": bench.student_problems, "threads": torch.get_num_threads(), "rows": rows}  # fmt: skip
        Path(bench.json).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
