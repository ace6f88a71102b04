"""Run configuration: dataclasses extending TRL's ``GRPOConfig`` and ``ModelConfig``, read by ``TrlParser`` from a
YAML recipe (a packaged recipe name or a path) plus command-line overrides, as open-r1 does.
"""

from __future__ import annotations

import enum
import logging
import os
import sys
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Union

from trl import GRPOConfig, ModelConfig, TrlParser

from opensir_lite.parsing import ANSWER_EXTRACTIONS, ANSWER_VOTES
from opensir_lite.prompts import SEED_PROBLEM, TEACHER_FORMAT_HINTS
from opensir_lite.ranges import Range, RangeError, above, at_least, between, check_ranges, ranged
from opensir_lite.rewards import FORMAT_CREDITS, GATE_LOWER, GATE_UPPER, STUDENT_FORMAT_GATES

RECIPES_DIR = Path(__file__).parent / "recipes"
GENERATION_BACKENDS = ("transformers", "vllm")
logger = logging.getLogger(__name__)

ROLLOUT_DTYPES = ("auto", "bfloat16", "float32")
METHODS = ("selfplay", "gold")
STUDENT_LABELS = ("majority", "program_confirmed")  # what the student learns from (student_label)
STOP_RULE_METRICS = ("student_mean_tokens", "student_mean_entropy")  # round metrics a stop rule may watch


def parse_append_strategy(strategy: str) -> int | None:
    """None for ``all_legal``, 0 for ``never``, x for ``top-x``; ValueError otherwise."""
    if strategy == "all_legal":
        return None
    if strategy == "never":
        return 0
    if strategy.startswith("top-") and strategy[4:].isdigit() and int(strategy[4:]) > 0:
        return int(strategy[4:])
    raise ValueError(f"pool_append_strategy must be 'all_legal', 'never' or 'top-<x>', got {strategy!r}")


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the field."""


def _gpu_available() -> bool:
    import torch

    return torch.cuda.is_available()


@dataclass
class SelfPlayConfig(GRPOConfig):
    """OpenSIR self-play settings on top of TRL's GRPO settings (paper defaults unless a comment says otherwise)."""

    # ---- method ----
    method: str = field(
        default="selfplay",
        metadata={
            "help": "'selfplay' (OpenSIR: teacher and student, no labels) or 'gold' (the control: plain GRPO on "
            "labelled problems of gold_benchmark, rewarded by the gold answer; no teacher, no pool)."
        },
    )
    gold_benchmark: str = field(
        default="gsm8k", metadata={"help": "method gold: the labelled benchmark to train on (a name or a .jsonl)."}
    )
    gold_data_dir: str | None = field(
        default=None, metadata={"help": "method gold: folder of the benchmark's JSONL file (None or '': the Hub)."}
    )
    gold_candidates: int = field(
        default=0,
        metadata={
            "help": ranged(
                at_least(0),
                "method gold: labelled problems sampled per step, of which the num_student_groups whose groups have "
                "accuracy variance are trained (then the rest in order), as self-play trains in-gate problems. "
                "0: num_student_groups (every sampled problem is trained).",
            )
        },
    )
    gold_holdout: int = field(
        default=500,
        metadata={
            "help": ranged(
                at_least(0),
                "method gold: train on the rows after the first N of the seed-0 evaluation order, so that every "
                "seed-0 evaluation subset of up to N rows (and the probe) stays out of training.",
            )
        },
    )
    # ---- pool ----
    seed_problem: str = field(default=SEED_PROBLEM, metadata={"help": "The single seed problem of a new pool."})
    initial_pool_path: str | None = field(
        default=None,
        metadata={
            "help": "JSONL pool to start from (pool.jsonl of a run, or seed_pool.py output), or the name of a pool "
            "shipped in opensir_lite/data/pools (e.g. qwen0.5b-official)."
        },
    )
    pool_append_strategy: str = field(
        default="all_legal", metadata={"help": "Which new problems join the pool: all_legal, top-<x> or never."}
    )
    near_duplicate_cosine: float | None = field(
        default=None,
        metadata={
            "help": ranged(
                between(0, 1, low_open=True),
                "A legal problem whose embedding has at least this cosine similarity to a pool problem or to "
                "another problem of its round is a near-duplicate: it earns no solvability and does not join the pool. "
                "None: no such rule (paper).",
            )
        },
    )
    pool_max_size: int | None = field(
        default=None,
        metadata={"help": ranged(at_least(1), "Largest pool size; the oldest entries are evicted. None: unlimited.")},
    )
    # ---- teacher ----
    num_teacher_groups: int = field(
        default=1,
        metadata={
            "help": ranged(
                at_least(1),
                "Teacher groups (of num_generations rows) trained per step. Paper: 8 rows = 1.",
            )
        },
    )
    teacher_upscale_ratio: int = field(
        default=4,
        metadata={
            "help": ranged(
                at_least(1),
                "Generate this many times more teacher groups; keep the highest-variance ones.",
            )
        },
    )
    teacher_max_new_tokens: int = field(
        default=1024, metadata={"help": ranged(at_least(1), "Token budget of a teacher completion.")}
    )
    teacher_format_hint: str = field(
        default="none",
        metadata={
            "help": "Format help in the teacher prompt: 'none' (paper), 'placeholders' (the tag layout with ... "
            "appended) or 'example' (one worked request and reply before the real one)."
        },
    )
    teacher_format_credit: str = field(
        default="official",
        metadata={
            "help": "teacher_format reward: 'official' (1 for a legal output with a <think> block, else 0) or "
            "'partial' (a third for each of the think, problem and concepts tag pairs, legal or not)."
        },
    )
    teacher_prefill: str = field(
        default="",
        metadata={"help": "Text the teacher reply starts with, e.g. '<think>' (a prompt, not trained; paper: '')."},
    )
    teacher_reward_weights: list[float] = field(
        default_factory=lambda: [1.0, 1.0, 0.1, 1.0],
        metadata={
            "help": ranged(
                at_least(0),
                "Weights of solvability, diversity, teacher_format, response_length (paper).",
            )
        },
    )
    # ---- student ----
    num_student_groups: int = field(
        default=1,
        metadata={
            "help": ranged(
                at_least(0),
                "Student problems (groups of num_generations rows) trained per step (paper 1).",
            )
        },
    )
    student_selection: str = field(
        default="top", metadata={"help": "Student problems: 'top' combined score (paper) or 'random' legal ones."}
    )
    student_max_new_tokens: int = field(
        default=1024, metadata={"help": ranged(at_least(1), "Token budget of a student completion.")}
    )
    answer_extraction: str = field(
        default="latex",
        metadata={
            "help": "How a student answer is read: 'latex' (official training: boxed, else an anchored LaTeX "
            "answer), 'latex_expr' (official evaluation: also 'The answer is 18.'), 'boxed' (the last box only)."
        },
    )
    answer_vote: str = field(
        default="string",
        metadata={
            "help": "Majority vote classes: 'string' (official: equal math-verify normal forms) or 'equivalence' "
            "(math-verify verify; merges 3.0 and 3)."
        },
    )
    student_reward_weights: list[float] = field(
        default_factory=lambda: [1.0, 0.1],
        metadata={"help": ranged(at_least(0), "Weights of accuracy and student_format (paper).")},
    )
    student_format_gate: str = field(
        default="none",
        metadata={
            "help": "When student_format scores a row: 'none' (paper: always) or 'accuracy_variance' (only in groups "
            "whose accuracy reward varies; elsewhere it is None, so a group that agrees on its accuracy gets no "
            "format-only advantage from the std-normalised 0.1 format reward)."
        },
    )
    # ---- scores ----
    solve_rate_lower: float = field(
        default=GATE_LOWER,
        metadata={"help": ranged(between(0, 1), "Solvability gate: lowest rewarded solve rate (paper 0.5).")},
    )
    solve_rate_upper: float = field(
        default=GATE_UPPER,
        metadata={"help": ranged(between(0, 1), "Solvability gate: highest rewarded solve rate (paper 0.9).")},
    )
    novelty_top_k: int = field(
        default=5, metadata={"help": ranged(at_least(1), "Novelty: mean of this many top cosine similarities.")}
    )
    diversity_recent_pool_size: int | None = field(
        default=None,
        metadata={
            "help": ranged(
                at_least(1),
                "Novelty against only the newest N pool entries plus the references. None: whole pool.",
            )
        },
    )
    difficulty_score_weight: float = field(
        default=1.0, metadata={"help": ranged(at_least(0), "Weight of solvability in the combined score.")}
    )
    diversity_score_weight: float = field(
        default=1.0, metadata={"help": ranged(at_least(0), "Weight of novelty in the combined score.")}
    )
    response_length_cap: float | None = field(
        default=1000.0, metadata={"help": ranged(above(0), "Cap on mean student tokens.")}
    )
    response_length_baseline: float = field(
        default=1000.0, metadata={"help": ranged(above(0), "Mean student tokens worth reward 1.")}
    )
    # ---- machinery ----
    embedder_name_or_path: str = field(
        default="embedded", metadata={"help": "sentence-transformers model for novelty: Hub id, path or 'embedded'."}
    )
    use_system_prompt: bool | None = field(
        default=None, metadata={"help": "Send a system message. None: when the chat template accepts one."}
    )
    generation_backend: str = field(
        default="transformers",
        metadata={
            "help": "What generates the rollouts: 'transformers' (generate in this process) or 'vllm' (TRL's vLLM "
            "integration: a `trl vllm-serve` server with vllm_mode server, or vllm_mode colocate; a 16-bit base)."
        },
    )
    rollout_model: str = field(
        default="policy",
        metadata={
            "help": "What samples the rounds: 'policy' (the training model itself) or 'merged' (a plain copy of the "
            "base, de-quantised when 4-bit, with the current LoRA weights merged in at every step: several times "
            "faster on a CPU; needs use_peft)."
        },
    )
    rollout_dtype: str = field(
        default="auto",
        metadata={
            "help": "dtype of the merged rollout copy: 'auto' (the adapter's, the same function as the policy), "
            "'bfloat16' (about twice as fast on a CPU with AVX512-BF16/AMX; samples up to bf16 rounding) or "
            "'float32'."
        },
    )
    bf16_when_native: bool = field(
        default=False,
        metadata={
            "help": "On a CPU without native bf16 (AVX512-BF16 or AMX), turn bf16 autocast (bf16) and bf16 rollouts "
            "(rollout_dtype bfloat16) into fp32: torch emulates bf16 there, several times slower. The choice is "
            "logged and written to run_config.json. Where bf16 is native (or on a GPU) nothing changes."
        },
    )
    probe_every: int = field(
        default=0,
        metadata={
            "help": ranged(
                at_least(0),
                "Every N steps (and at the first and last), vote on the labelled GSM8K probe and log pseudo-label "
                "quality (probe/majority_correct, probe/solve_rate). 0: off.",
            )
        },
    )
    probe_rows: int = field(
        default=32, metadata={"help": ranged(between(1, 32), "Probe questions (at most the 32 shipped GSM8K rows).")}
    )
    probe_samples: int = field(
        default=0, metadata={"help": ranged(at_least(0), "Answers per probe question. 0: num_generations.")}
    )
    stop_rule_metrics: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Pre-registered stop rule: end the run (with a checkpoint) once any of these round metrics falls "
            "below stop_rule_ratio x its value at step 1, e.g. [student_mean_tokens, student_mean_entropy]. "
            "Empty: off."
        },
    )
    stop_rule_ratio: float = field(
        default=0.5, metadata={"help": ranged(between(0, 1, low_open=True), "The stop rule's fraction of step 1.")}
    )
    program_check: bool = field(
        default=False,  # off: it costs one greedy program completion per legal problem (docs/programs.md)
        metadata={
            "help": "Per round, the policy writes a Python program for each legal problem with a majority answer; "
            "the sandbox runs it and programs/... in metrics.jsonl (and the round evidence) say how often its "
            "printed answer agrees with the student majority. Measurement only: no reward, no filter."
        },
    )
    student_label: str = field(
        default="majority",  # the paper: the student's own majority answer, unchecked
        metadata={
            "help": "The student's training label. 'majority' (paper): the majority answer of its G samples. "
            "'program_confirmed': the policy also writes a Python program for each answered problem (the program "
            "check, run in the sandbox); the student trains only on problems whose program printed the majority "
            "answer, and the teacher's solvability counts only such problems (docs/programs.md)."
        },
    )
    program_max_new_tokens: int = field(
        default=384,  # the coder model's programs for pool problems are 60-200 tokens
        metadata={"help": ranged(at_least(1), "Token budget of a program completion (program check).")},
    )
    allow_unisolated_sandbox: bool = field(
        default=False,  # refuse where no network namespace can be made
        metadata={
            "help": "Run model-written programs even where the sandbox cannot make its namespaces (no network "
            "or file-system isolation then; the limits, empty environment and empty folder still apply)."
        },
    )
    evidence_completion_chars: int = field(
        default=300,
        metadata={
            "help": ranged(
                at_least(-1),
                "round_evidence.jsonl keeps the last N characters of each student completion beside its "
                "answer and vote class (0: answers only; -1: no evidence file).",
            )
        },
    )
    max_generate_batch: int = field(
        default=0,
        metadata={"help": ranged(at_least(0), "Most sequences in one generate call (0: a whole role in one call).")},
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace a previous run in output_dir (otherwise a new run refuses it)."}
    )
    recipe: str | None = field(
        default=None, metadata={"help": "The recipe this run was configured from (set by --config; for the record)."}
    )
    write_plots: bool = field(
        default=True,
        metadata={
            "help": "At the end, write training_curves.png and explore/ (pool report and figures) in output_dir."
        },
    )
    max_prompt_length: int | None = field(
        default=None,
        metadata={
            "help": ranged(
                at_least(1),
                "Keep only the last N tokens of a teacher or student prompt, for generation and scoring alike "
                "(paper 1024). None: no limit.",
            )
        },
    )
    # ---- TRL defaults changed for self-play ----
    max_steps: int = field(
        default=200,
        metadata={"help": ranged(at_least(1), "Optimiser steps, one self-play round each (paper 200; self-play "
                  "has no epochs, so TRL's -1 is not accepted).")},
    )  # fmt: skip
    num_generations: int | None = field(
        default=8, metadata={"help": ranged(at_least(2), "G: samples per teacher and student prompt.")}
    )
    logging_steps: float = field(
        default=1, metadata={"help": ranged(above(0), "Log (and write metrics.jsonl) every N steps.")}
    )
    save_strategy: str = field(default="steps", metadata={"help": "Checkpoint strategy (checkpoints hold the pool)."})
    save_steps: float = field(default=25, metadata={"help": ranged(above(0), "Checkpoint every N steps (paper 25).")})
    bf16: bool | None = field(default=None, metadata={"help": "bf16 mixed precision. None: when the GPU has it."})

    def __post_init__(self):
        check_config_ranges(self)  # first: every later check and TRL's own may assume sane numbers
        errors = []
        try:
            parse_append_strategy(self.pool_append_strategy)
        except ValueError as e:
            errors.append(str(e))
        if self.solve_rate_lower > self.solve_rate_upper:
            errors.append("need solve_rate_lower <= solve_rate_upper")
        if self.answer_extraction not in ANSWER_EXTRACTIONS:
            errors.append(f"answer_extraction must be one of {', '.join(ANSWER_EXTRACTIONS)}")
        if self.teacher_format_hint not in TEACHER_FORMAT_HINTS:
            errors.append(f"teacher_format_hint must be one of {', '.join(TEACHER_FORMAT_HINTS)}")
        if self.teacher_format_credit not in FORMAT_CREDITS:
            errors.append(f"teacher_format_credit must be one of {', '.join(FORMAT_CREDITS)}")
        if self.generation_backend not in GENERATION_BACKENDS:
            errors.append(f"generation_backend must be one of {', '.join(GENERATION_BACKENDS)}")
        elif self.generation_backend == "vllm":
            self.use_vllm = True  # TRL's vLLM client (server) or engine (colocate), and its weight sync
        if self.rollout_model not in ("policy", "merged"):
            errors.append(f"rollout_model must be 'policy' or 'merged', got {self.rollout_model!r}")
        if self.method not in METHODS:
            errors.append(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        elif self.method == "gold" and self.num_student_groups < 1:
            errors.append("method gold trains student groups only: set num_student_groups >= 1")
        if self.rollout_dtype not in ROLLOUT_DTYPES:
            errors.append(f"rollout_dtype must be one of {', '.join(ROLLOUT_DTYPES)}, got {self.rollout_dtype!r}")
        if self.answer_vote not in ANSWER_VOTES:
            errors.append(f"answer_vote must be one of {', '.join(ANSWER_VOTES)}")
        if not self.num_generations:
            errors.append("num_generations (G) must be set")
        if self.student_label not in STUDENT_LABELS:
            errors.append(f"student_label must be one of {', '.join(STUDENT_LABELS)}, got {self.student_label!r}")
        elif self.student_label == "program_confirmed" and self.method != "selfplay":
            errors.append("student_label program_confirmed applies to method selfplay (the gold control has labels)")
        if self.runs_programs and not self.allow_unisolated_sandbox:
            from opensir_lite.sandbox import isolation_unavailable_reason

            reason = isolation_unavailable_reason()
            if reason is not None:
                name = "program_check" if self.program_check else "student_label program_confirmed"
                errors.append(
                    f"{name}: the sandbox cannot isolate programs here ({reason}); "
                    "set allow_unisolated_sandbox to run them without isolation"
                )
        if self.num_generations and self.rows_per_round % self.per_device_train_batch_size:
            errors.append(
                f"per_device_train_batch_size ({self.per_device_train_batch_size}) must divide the rows of one "
                f"round ({self.rows_per_round} = (num_teacher_groups + num_student_groups) x num_generations)"
            )
        if self.student_format_gate not in STUDENT_FORMAT_GATES:
            errors.append(f"student_format_gate must be one of {', '.join(STUDENT_FORMAT_GATES)}")
        unknown = [m for m in self.stop_rule_metrics if m not in STOP_RULE_METRICS]
        if unknown:
            errors.append(f"stop_rule_metrics: unknown {unknown[0]!r}; choose from {', '.join(STOP_RULE_METRICS)}")
        if self.method == "gold" and 0 < self.gold_candidates < self.num_student_groups:
            errors.append("gold_candidates must be 0 or at least num_student_groups")
        if self.student_selection not in ("top", "random"):
            errors.append(f"student_selection must be 'top' or 'random', got {self.student_selection!r}")
        if len(self.teacher_reward_weights) != 4 or len(self.student_reward_weights) != 2:
            errors.append("teacher_reward_weights needs 4 values and student_reward_weights 2")
        if self.hub_token:
            errors.append(
                "hub_token must not be set in a recipe or on the command line (it would be saved with the run): "
                "use the HF_TOKEN environment variable or `hf auth login`"
            )
        if errors:
            raise ConfigError("; ".join(errors))
        if self.method == "gold":  # the control's rewards: gold_accuracy and student_format
            self.reward_weights = list(self.student_reward_weights)
        else:
            self.reward_weights = [*self.teacher_reward_weights, *self.student_reward_weights]
        if self.method == "gold":
            self.max_completion_length = self.student_max_new_tokens
        else:
            self.max_completion_length = max(self.teacher_max_new_tokens, self.student_max_new_tokens)
        if self.generation_batch_size is None and self.steps_per_generation is None:
            # One round per generation on every process: TRL's global generation batch is then
            # rows_per_round x processes, and each micro-step of per_device_train_batch_size rows takes its slice.
            self.steps_per_generation = self.rows_per_round // self.per_device_train_batch_size
        if self.bf16_when_native and not _gpu_available():
            from opensir_lite.models import cpu_has_native_bf16

            if not cpu_has_native_bf16() and (self.bf16 or self.rollout_dtype == "bfloat16"):
                logger.warning(
                    "this CPU has no native bf16 (AVX512-BF16/AMX): bf16 autocast and bf16 rollouts run in fp32 "
                    "instead (bf16_when_native)"
                )
                self.bf16 = False
                if self.rollout_dtype == "bfloat16":
                    self.rollout_dtype = "float32"
        if self.bf16 is None and not self.fp16:
            from opensir_lite.models import current_device_dtype

            device, dtype = current_device_dtype()
            self.bf16 = str(dtype) == "torch.bfloat16"
            self.fp16 = str(dtype) == "torch.float16"
            if device == "cpu":
                self.dataloader_pin_memory = False  # nothing to pin without an accelerator
        if not self.use_cpu and os.environ.get("WORLD_SIZE", "1") not in ("", "1"):
            from opensir_lite.models import current_device_dtype

            if current_device_dtype()[0] == "cpu":
                # Several processes (torchrun) on a machine without an accelerator: accelerate forms a gloo group
                # only when told it is a CPU run; otherwise every rank would train alone as its own "main process".
                self.use_cpu = True
        super().__post_init__()

    @property
    def runs_programs(self) -> bool:
        """Whether rounds run the program check: as a measurement (program_check) or as the label filter."""
        return bool(self.program_check) or self.student_label == "program_confirmed"

    @property
    def rows_per_round(self) -> int:
        """Rows one round returns: (teacher groups + student groups) x G; the gold control has no teacher groups."""
        teacher = self.num_teacher_groups if self.method == "selfplay" else 0
        return (teacher + self.num_student_groups) * (self.num_generations or 0)

    def rounds_per_step(self, num_processes: int = 1) -> int:
        """Self-play rounds in one optimiser step on ``num_processes`` processes (each plays its own rounds): the
        rows of an optimiser step, per_device_train_batch_size x gradient_accumulation_steps x processes, divided by
        the rows of a round. The paper's run: 8 x 2 GPUs x 16 rows = 16 rounds."""
        rows = self.per_device_train_batch_size * self.gradient_accumulation_steps * num_processes
        return rows // self.rows_per_round


@dataclass
class PolicyModelConfig(ModelConfig):
    """The policy: TRL's ModelConfig with QLoRA defaults (4-bit NF4, double quantisation, LoRA on all linears)."""

    model_name_or_path: str | None = field(
        default="embedded", metadata={"help": "Hub id, local folder, or 'embedded' (SmolLM2-135M-Instruct from PyPI)."}
    )
    use_peft: bool = field(default=True, metadata={"help": "Train a LoRA adapter (False: full fine-tuning)."})
    load_in_4bit: bool = field(default=True, metadata={"help": "QLoRA: load the base model in 4-bit NF4."})
    use_bnb_nested_quant: bool = field(default=True, metadata={"help": "QLoRA double quantisation."})
    lora_r: int = field(default=16, metadata={"help": ranged(at_least(1), "LoRA rank.")})
    lora_alpha: int = field(default=32, metadata={"help": ranged(above(0), "LoRA alpha (scale = alpha / r).")})
    lora_dropout: float = field(default=0.05, metadata={"help": ranged(between(0, 1, high_open=True), "LoRA dropout.")})
    lora_target_modules: list[str] | None = field(
        default_factory=lambda: ["all-linear"], metadata={"help": "Modules with LoRA; all-linear = every projection."}
    )

    def __post_init__(self):
        check_config_ranges(self)
        super().__post_init__()


# Ranges of the numeric TRL / transformers fields that SelfPlayConfig and PolicyModelConfig inherit (their own
# fields declare theirs in their metadata). reward_weights and max_completion_length are derived in __post_init__.
TRL_RANGES: dict[str, Range] = {
    "learning_rate": above(0),  # torch's optimisers refuse a negative rate, after the model has loaded
    "temperature": above(0),  # sampling and TRL's log-probabilities divide by it
    "top_p": between(0, 1, low_open=True),
    "top_k": at_least(0),  # 0 (or null): off
    "min_p": between(0, 1),
    "repetition_penalty": above(0),
    "per_device_train_batch_size": at_least(1),
    "gradient_accumulation_steps": at_least(1),
    "generation_batch_size": at_least(1),
    "steps_per_generation": at_least(1),
    "num_iterations": at_least(1),
    "num_train_epochs": above(0),
    "warmup_steps": at_least(0),  # below 1: a share of the steps
    "weight_decay": at_least(0),
    "max_grad_norm": at_least(0),  # 0: no clipping
    "adam_beta1": between(0, 1, high_open=True),
    "adam_beta2": between(0, 1, high_open=True),
    "adam_epsilon": above(0),
    "beta": at_least(0),  # KL coefficient
    "epsilon": above(0),  # PPO clip range
    "epsilon_high": above(0),
    "seed": at_least(0),  # numpy's generators refuse a negative seed
    "data_seed": at_least(0),
    "save_total_limit": at_least(1),
    "dataloader_num_workers": at_least(0),
    "vllm_gpu_memory_utilization": between(0, 1, low_open=True),
    "vllm_tensor_parallel_size": at_least(1),
    "vllm_server_port": between(1, 65535),
    "vllm_server_timeout": above(0),
}


def check_config_ranges(config) -> None:
    """Every numeric field of a run configuration within its declared range (its metadata, else
    :data:`TRL_RANGES`): one :class:`ConfigError` line naming each field, value and range."""
    try:
        check_ranges(config, TRL_RANGES)
    except RangeError as e:
        raise ConfigError(str(e)) from None


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def resolve_recipe(name_or_path: str) -> Path:
    """A packaged recipe name (``smoke``) or a YAML path -> the YAML file."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    packaged = RECIPES_DIR / f"{name_or_path}.yaml"
    if packaged.is_file():
        return packaged
    raise ConfigError(f"unknown recipe {name_or_path!r}: not a file and not one of {', '.join(list_recipes())}")


def parse_config(argv: list[str] | None = None, extra: tuple = ()) -> tuple:
    """``--config <recipe or YAML> [--field value ...]`` -> (SelfPlayConfig, PolicyModelConfig, *extra instances).

    ``extra`` are more dataclass types a script adds (their fields come from the command line)."""
    args = list(sys.argv[1:] if argv is None else argv)
    recipe = None
    if "--config" in args:
        i = args.index("--config")
        if i + 1 >= len(args):
            raise ConfigError("--config needs a recipe name or a YAML path")
        recipe = args[i + 1]
        args[i + 1] = str(resolve_recipe(args[i + 1]))
        _check_yaml(Path(args[i + 1]), extra)
    parser = TrlParser((SelfPlayConfig, PolicyModelConfig, *extra))

    def one_line_error(message: str):  # argparse would print the whole usage first; one line is enough
        raise ConfigError(message.replace("/--", " / --"))

    parser.error = one_line_error  # type: ignore[method-assign]
    try:
        parsed = parser.parse_args_and_config(args)
    except ConfigError:
        raise
    except SystemExit as e:
        if e.code in (0, None):  # --help
            raise
        raise ConfigError(f"bad command-line arguments (exit {e.code})") from None
    except (ValueError, TypeError) as e:
        message = str(e).splitlines()[0]
        if message.startswith("Some specified arguments are not used"):
            message = "unknown command-line argument(s): " + message.split(":", 1)[1].strip()
        raise ConfigError(message) from None
    if recipe and parsed[0].recipe is None:
        parsed[0].recipe = recipe
    check_backend(parsed[0], parsed[1])
    return parsed


def check_backend(train_args: SelfPlayConfig, model_args: PolicyModelConfig) -> None:
    """A generation backend that cannot run this configuration fails here, in one line, before any model loads."""
    if train_args.generation_backend != "vllm":
        return
    if model_args.load_in_4bit or model_args.load_in_8bit:
        raise ConfigError(
            "generation_backend vllm with a 4-bit/8-bit base: TRL cannot sync QLoRA weights to vLLM; use LoRA on a "
            "16-bit base (--load_in_4bit false) or generation_backend transformers"
        )
    if train_args.rollout_model == "merged":
        raise ConfigError(
            "generation_backend vllm samples from vLLM's own copy of the policy: set rollout_model policy"
        )
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise ConfigError("generation_backend vllm needs vLLM, which is not installed here: pip install vllm (CUDA)")


def _check_yaml(path: Path, extra: tuple = ()) -> None:
    """Unknown keys and malformed YAML fail here with the key named, before any model is loaded."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a YAML mapping of field: value")
    known = set(SelfPlayConfig.__dataclass_fields__) | set(PolicyModelConfig.__dataclass_fields__) | {"env"}
    known |= {f for dc in extra for f in dc.__dataclass_fields__}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown config key(s): {', '.join(unknown)}")
    hints = _field_types((SelfPlayConfig, PolicyModelConfig, *extra))
    for key, value in data.items():
        if key in hints:
            problem = _type_problem(value, hints[key])
            if problem is not None:
                raise ConfigError(f"{path}: {key}: {problem}, got {value!r}")


def _field_types(classes: tuple) -> dict[str, Any]:
    """Field name -> annotated type of the config dataclasses (fields whose annotation cannot be resolved are
    left to the parser)."""
    types_: dict[str, Any] = {}
    for cls in classes:
        try:
            hints = typing.get_type_hints(cls)
        except Exception:  # noqa: BLE001 - a forward reference in a library dataclass
            hints = {f.name: f.type for f in fields(cls) if not isinstance(f.type, str)}
        for f in fields(cls):
            if f.name in hints:
                types_.setdefault(f.name, hints[f.name])
    return types_


_BOOL_WORDS = {"true", "false", "yes", "no", "t", "f", "y", "n", "1", "0"}


def _type_problem(value: Any, tp: Any) -> str | None:
    """Why a YAML value does not fit the field type ``tp`` (None when it fits or the type is not checked)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return None
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        problems = [_type_problem(value, a) for a in args if a is not type(None)]
        return None if any(p is None for p in problems) else problems[0]
    if value is None:
        return "expected a value"
    if origin is Literal:
        return None if value in args else f"expected one of {', '.join(map(repr, args))}"
    if tp is bool:
        ok = isinstance(value, bool) or (isinstance(value, str | int) and str(value).lower() in _BOOL_WORDS)
        return None if ok else "expected true or false"
    if tp in (int, float):
        if isinstance(value, bool) or isinstance(value, list | dict):
            return f"expected {'an integer' if tp is int else 'a number'}"
        if tp is int and isinstance(value, float) and not value.is_integer():
            return "expected an integer"
        try:
            tp(value)  # int("2.5") and int("two") fail, float("1e-5") parses
        except (TypeError, ValueError):
            return f"expected {'an integer' if tp is int else 'a number'}"
        return None
    if tp is str:
        return None if isinstance(value, str | int | float) and not isinstance(value, bool) else "expected a string"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        allowed = [e.value for e in tp]
        return None if value in allowed or value in [e.name for e in tp] else f"expected one of {allowed}"
    if origin in (list, tuple) or tp in (list, tuple):
        items = value if isinstance(value, list) else [value]
        if isinstance(value, dict):
            return "expected a list"
        inner = args[0] if args else Any
        for item in items:
            problem = _type_problem(item, inner)
            if problem is not None:
                return f"list item {item!r}: {problem}"
        return None
    if origin is dict or tp is dict:
        return None if isinstance(value, dict | str) else "expected a mapping"
    return None
