"""Which deadlock breakers matter: self-play rounds of the untrained policy under recipe variants.

python benchmarks/ablate_rounds.py --config learn-cpu --rounds 3 [--json docs/ablation_rounds.json]
    [--variants "learn-cpu:;paper prompt:teacher_format_hint=none;..."]

Each variant is the recipe with some fields changed (``name:field=value,field=value``; the default list turns off
one deadlock breaker of learn-cpu at a time). For each, the policy plays ``rounds`` rounds from the seed pool, without
training, and the table shows what GRPO would get: the legal ratio, the share of answered student samples, the share
of teacher groups whose rewards vary (non-zero advantages, a gradient) and of rounds with a trainable student group.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from benchlib import ablate_rounds, format_ablation

from opensir_lite.config import ConfigError
from opensir_lite.embedding import Embedder
from opensir_lite.models import ModelLoadError
from opensir_lite.runtime import parse_config
from opensir_lite.training import TrainingSetupError, load_policy_with_adapter

DEFAULT_VARIANTS = (
    "learn-cpu:;"
    "no worked example:teacher_format_hint=none;"
    "placeholder hint:teacher_format_hint=placeholders;"
    "official format credit:teacher_format_credit=official;"
    "official answer reading:answer_extraction=latex;"
    "temperature 1.0 (paper):temperature=1.0"
)


@dataclass
class AblationArguments:
    rounds: int = field(default=3, metadata={"help": "Rounds per variant."})
    variants: str = field(default=DEFAULT_VARIANTS, metadata={"help": "name:field=value,...;name:..."})
    json: str | None = field(default=None, metadata={"help": "Write the table here as JSON."})


def parse_variants(text: str) -> list[tuple[str, list[str]]]:
    """``name:field=value,field=value;...`` -> [(name, ["--field", "value", ...]), ...]"""
    variants = []
    for part in [p for p in text.split(";") if p.strip()]:
        name, _, fields = part.partition(":")
        args = []
        for pair in [f for f in fields.split(",") if f.strip()]:
            key, eq, value = pair.partition("=")
            if not eq:
                raise ConfigError(f"variant {name!r}: expected field=value, got {pair!r}")
            args += [f"--{key.strip()}", value.strip()]
        variants.append((name.strip(), args))
    return variants


def main() -> int:
    try:
        argv = sys.argv[1:]
        base, model_args, ablation = parse_config(argv, extra=(AblationArguments,))
        variants = [(name, parse_config(argv + extra, extra=(AblationArguments,))[0])
                    for name, extra in parse_variants(ablation.variants)]  # fmt: skip
        policy, tokenizer = load_policy_with_adapter(model_args, base)
        embedder = Embedder(base.embedder_name_or_path)
        rows = ablate_rounds(policy, tokenizer, embedder, variants, ablation.rounds, model_args)
    except (ConfigError, ModelLoadError, TrainingSetupError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_ablation(rows))
    if ablation.json:
        record = {"recipe": base.recipe, "rounds": ablation.rounds, "threads": torch.get_num_threads(), "rows": rows}
        Path(ablation.json).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
