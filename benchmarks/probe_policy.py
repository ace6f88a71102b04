"""Pseudo-label quality of the untrained policy: one reading of the label probe, as training takes it at step 1.

python benchmarks/probe_policy.py --config learn-cpu-qwen [--probe_rows 32 --probe_samples 8] [--temperature 0.7]
    [--load_in_4bit false] [--json FILE]      # the JSON holds every row's answers, so two readings pair row by row
python benchmarks/probe_policy.py --compare A.json B.json   # B - A per probe row: one-sample accuracy, majority = gold

The policy is loaded as the recipe trains it (4-bit QLoRA, a fresh adapter) and sampled as the recipe's rounds
are (the merged rollout copy when rollout_model is merged), G answers per probe question at the recipe's
temperature and student budget; the table shows how often the majority answer is the gold one (what majority-vote
rewards need), the accuracy of single samples, the valid-answer rate and the majority's share. The probe rows are
GSM8K test rows that no evaluation subset contains.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from opensir_lite.config import ConfigError
from opensir_lite.models import ModelLoadError, attention_for, current_device_dtype
from opensir_lite.probe import LabelProbe
from opensir_lite.prompts import supports_system_prompt
from opensir_lite.runtime import parse_config
from opensir_lite.training import MergedRolloutModel, TrainingSetupError, load_policy_with_adapter, rollout_dtype


@dataclass
class ProbeArguments:
    json: str | None = field(default=None, metadata={"help": "Write the reading here as JSON."})
    compare: list[str] | None = field(
        default=None, metadata={"help": "A.json B.json: pair two readings per probe row (B - A) instead of probing."}
    )


def compare(a_path: str, b_path: str) -> int:
    """Two readings of the same rows and streams, paired per row (``paired_difference``: B - A)."""
    from opensir_lite.evaluation.stats import paired_difference

    a, b = (json.loads(Path(p).read_text()) for p in (a_path, b_path))
    rows_a, rows_b = ({r["row"]: r for r in x.get("per_row", [])} for x in (a, b))
    rows = sorted(rows_a)
    if not rows or rows != sorted(rows_b):
        print("error: the two readings do not hold the same probe rows (per_row)", file=sys.stderr)
        return 2
    for name, value in (("one sample = gold", lambda r: sum(r["right"]) / len(r["right"])),
                        ("majority = gold", lambda r: float(r["majority_right"]))):  # fmt: skip
        va, vb = [value(rows_a[i]) for i in rows], [value(rows_b[i]) for i in rows]
        d = paired_difference(va, vb)
        print(f"{name:<18} A {sum(va) / len(va):.3f}  B {sum(vb) / len(vb):.3f}  B - A {d['delta']:+.3f} +- "
              f"{d['se']:.3f} (paired, {len(rows)} rows)")  # fmt: skip
    same = sum(ra == rb for i in rows for ra, rb in zip(rows_a[i]["answers"], rows_b[i]["answers"], strict=True))
    total = sum(len(rows_a[i]["answers"]) for i in rows)
    print(f"identical answers: {same} of {total} samples")
    return 0


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--compare":
        return compare(sys.argv[2], sys.argv[3])
    try:
        train_args, model_args, probe_args = parse_config(extra=(ProbeArguments,))
        policy, tokenizer = load_policy_with_adapter(model_args, train_args)
        model = policy
        if train_args.rollout_model == "merged":
            device, _ = current_device_dtype()
            merged = MergedRolloutModel(
                policy, attention_for(device, model_args.attn_implementation), rollout_dtype(train_args.rollout_dtype)
            )
            merged.sync()
            model = merged.model
        torch.manual_seed(train_args.seed)
        probe = LabelProbe(train_args, every=1)
        reading = probe.read_model(model, tokenizer, step=1, use_system_prompt=supports_system_prompt(tokenizer))
    except (ConfigError, ModelLoadError, TrainingSetupError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    samples = train_args.probe_samples or train_args.num_generations
    print(f"label probe: {reading['probe/rows']} GSM8K rows x {samples} samples at temperature "
          f"{train_args.temperature}, {train_args.student_max_new_tokens} tokens")  # fmt: skip
    for key in ("majority_correct", "sample_accuracy", "valid_rate", "solve_rate", "truncated"):
        value = reading.get(f"probe/{key}")
        print(f"  {key:<18}{'-' if value is None else f'{value:.3f}'}")
    print(f"  tokens {reading['probe/tokens']} in {reading['time/probe']:.0f} s")
    if probe_args.json:
        record = {"recipe": train_args.recipe, "temperature": train_args.temperature, "samples": samples,
                  "student_max_new_tokens": train_args.student_max_new_tokens,
                  "load_in_4bit": model_args.load_in_4bit, "rollout_dtype": train_args.rollout_dtype, **reading,
                  "per_row": probe.last_rows}  # fmt: skip
        Path(probe_args.json).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
