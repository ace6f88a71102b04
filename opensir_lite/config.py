"""Run configuration: dataclasses extending TRL's ``GRPOConfig`` and ``ModelConfig``, read by ``TrlParser`` from a
YAML recipe (a packaged recipe name or a path) plus command-line overrides, as open-r1 does.
"""

from __future__ import annotations

import logging
import sys
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from trl import GRPOConfig, ModelConfig, TrlParser

from opensir_lite.method_args import (  # noqa: F401  (the method's names, re-exported with the config)
    METHODS,
    STOP_RULE_METRICS,
    STUDENT_LABELS,
    GoldControlArguments,
    ProgramCheckArguments,
    ScoreArguments,
    SelfPlayArguments,
    WatchArguments,
    parse_append_strategy,
)
from opensir_lite.ranges import Range, RangeError, above, at_least, between, check_ranges, ranged, type_problem

RECIPES_DIR = Path(__file__).parent / "recipes"
GENERATION_BACKENDS = ("transformers", "vllm", "vllm_lora")
logger = logging.getLogger(__name__)

ROLLOUT_DTYPES = ("auto", "bfloat16", "float16", "float32")


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the field."""


def _gpu_available() -> bool:
    import torch

    return torch.cuda.is_available()


@dataclass
class SelfPlayConfig(SelfPlayArguments, ScoreArguments, ProgramCheckArguments, GoldControlArguments, WatchArguments,
                     GRPOConfig):  # fmt: skip
    """A run: the method's arguments (:mod:`opensir_lite.method_args`), the rollout machinery, and TRL's GRPO settings
    with the defaults self-play changes. Validation only: the device decides nothing here (``bf16`` None is settled
    by :func:`opensir_lite.runtime.parse_config` from the hardware, fp32 when the config is built directly)."""

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
            "help": "What generates the rollouts: 'transformers' (generate in this process), 'vllm_lora' (a vLLM "
            "engine in this process serving the policy's current LoRA adapter each round: QLoRA or LoRA, one "
            "process; TRL's importance-sampling correction on) or 'vllm' (TRL's vLLM integration, which copies the "
            "weights into vLLM: a `trl vllm-serve` server with vllm_mode server, or vllm_mode colocate; a 16-bit "
            "base, GPU only). use_vllm true means 'vllm'."
        },
    )
    vllm_cpu_kv_cache_gib: float | None = field(
        default=None,
        metadata={
            "help": ranged(
                above(0),
                "vllm_lora on a CPU: GiB of memory for vLLM's KV cache (None: enough for one round's sequences at "
                "their longest, at least 1). On a GPU vllm_gpu_memory_utilization sets vLLM's share instead.",
            )
        },
    )
    vllm_base: str = field(
        default="trained",
        metadata={
            "help": "vllm_lora: the base vLLM serves. 'trained': the base as the trainer holds it (a 4-bit base is "
            "de-quantised once and saved, so vLLM samples the policy that trains, up to 16-bit rounding); "
            "'original': the model's own 16-bit weights (the NF4 trainer then differs from vLLM by its quantisation, "
            "which TRL's importance-sampling correction weighs)."
        },
    )
    vllm_sync: str = field(
        default="auto",
        metadata={
            "help": "vllm_lora: how the policy reaches vLLM after each step. 'adapter': the LoRA adapter is saved "
            "and served (vLLM's LoRA kernels); 'merged': the adapter is merged into the base and vLLM reloads its "
            "weights in place (no LoRA kernels: 3-4x faster on a CPU); 'auto': merged on a CPU, adapter on a GPU."
        },
    )
    vllm_max_lora_rank: int | None = field(
        default=None,
        metadata={
            "help": ranged(
                at_least(1), "vllm_lora: vLLM's max_lora_rank (None: the smallest rank vLLM accepts that holds lora_r)."
            )
        },
    )
    sampling_gap_every: int = field(
        default=1,
        metadata={
            "help": ranged(
                at_least(0),
                "With a vLLM backend, every N steps (and at step 1) measure on the round's rows how far the trained "
                "policy's log-probabilities are from vLLM's (sampling/logp_gap_mean) and the share of tokens TRL's "
                "importance-sampling correction masks (sampling/masked_token_share): one forward pass. 0: off.",
            )
        },
    )
    rollout_model: str = field(
        default="policy",
        metadata={
            "help": "What samples the rounds with transformers: 'policy' (the training model itself) or 'merged' (a "
            "plain copy of the base, de-quantised when 4-bit, with the current LoRA weights merged in at every step: "
            "several times faster on a CPU; needs use_peft). Not used with a vLLM generation_backend."
        },
    )
    rollout_dtype: str = field(
        default="auto",
        metadata={
            "help": "dtype of the merged rollout copy and of vllm_lora's engine: 'auto' (the copy: the adapter's, "
            "the same function as the policy; vLLM: the device's native 16-bit type), 'bfloat16' (about twice as "
            "fast on a CPU with AVX512-BF16/AMX; samples up to bf16 rounding; float16 below compute capability "
            "8.0), 'float16' or 'float32'."
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
        errors = [*self.selfplay_errors(), *self.score_errors(), *self.program_errors(self.method),
                  *self.gold_errors(self.method, self.num_student_groups), *self.watch_errors(), *machinery_errors(self)]  # fmt: skip
        if errors:
            raise ConfigError("; ".join(errors))
        if self.use_vllm and self.generation_backend == "transformers":
            self.generation_backend = "vllm"  # TRL's flag: its vLLM integration, with every check of that backend
        if self.generation_backend == "vllm":
            self.use_vllm = True  # TRL's vLLM client (server) or engine (colocate), and its weight sync
        if self.generation_backend != "transformers":
            self.rollout_model = "policy"  # vLLM samples: no transformers copy of the policy is made
        if self.method == "gold":  # the control's rewards: gold_accuracy and student_format
            self.reward_weights = list(self.student_reward_weights)
            self.max_completion_length = self.student_max_new_tokens
        else:
            self.reward_weights = [*self.teacher_reward_weights, *self.student_reward_weights]
            self.max_completion_length = max(self.teacher_max_new_tokens, self.student_max_new_tokens)
        if self.generation_batch_size is None and self.steps_per_generation is None:
            # One round per generation on every process: TRL's global generation batch is then
            # rows_per_round x processes, and each micro-step of per_device_train_batch_size rows takes its slice.
            self.steps_per_generation = self.rows_per_round // self.per_device_train_batch_size
        if self.bf16 is None:
            self.bf16 = False  # not settled by the runtime (a config built in code): fp32
        super().__post_init__()

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


def machinery_errors(c: SelfPlayConfig) -> list[str]:
    """One line per machinery field that cannot run (the method's groups check their own)."""
    errors = []
    errors += [] if c.generation_backend in GENERATION_BACKENDS else [
        f"generation_backend must be one of {', '.join(GENERATION_BACKENDS)}"]  # fmt: skip
    if c.rollout_model not in ("policy", "merged"):
        errors.append(f"rollout_model must be 'policy' or 'merged', got {c.rollout_model!r}")
    if c.vllm_base not in ("trained", "original"):
        errors.append(f"vllm_base must be 'trained' or 'original', got {c.vllm_base!r}")
    if c.vllm_sync not in ("auto", "adapter", "merged"):
        errors.append(f"vllm_sync must be auto, adapter or merged, got {c.vllm_sync!r}")
    elif c.vllm_sync == "merged" and c.vllm_base == "original":
        errors.append("vllm_sync merged merges into the base the trainer holds: use vllm_base trained")
    if c.rollout_dtype not in ROLLOUT_DTYPES:
        errors.append(f"rollout_dtype must be one of {', '.join(ROLLOUT_DTYPES)}, got {c.rollout_dtype!r}")
    if not c.num_generations:
        errors.append("num_generations (G) must be set")
    elif c.rows_per_round % c.per_device_train_batch_size:
        errors.append(
            f"per_device_train_batch_size ({c.per_device_train_batch_size}) must divide the rows of one "
            f"round ({c.rows_per_round} = (num_teacher_groups + num_student_groups) x num_generations)"
        )
    if c.hub_token:
        errors.append(
            "hub_token must not be set in a recipe or on the command line (it would be saved with the run): "
            "use the HF_TOKEN environment variable or `hf auth login`"
        )
    return errors


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


def recipe_purpose(name: str) -> str:
    """A packaged recipe's one-line purpose: its header's first sentence (``# name: purpose ...``)."""
    header = []
    for line in (RECIPES_DIR / f"{name}.yaml").read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        header.append(line.lstrip("# ").strip())
    text = " ".join(header)
    text = text.split(":", 1)[1].strip() if text.startswith(f"{name}:") else text
    sentence = text.split(". ")[0].rstrip(".")
    return sentence.split(" (")[0] if len(sentence) > 100 else sentence


USAGE = (
    "python scripts/train.py --config RECIPE_OR_YAML [--field value ...]: --config takes a packaged recipe "
    "(--list_recipes prints them with their purpose) or a YAML file; every field below can be set in the YAML or "
    "on the command line, which wins."
)


def resolve_recipe(name_or_path: str) -> Path:
    """A packaged recipe name (``smoke``) or a YAML path -> the YAML file."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if (packaged := RECIPES_DIR / f"{name_or_path}.yaml").is_file():
        return packaged
    raise ConfigError(f"unknown recipe {name_or_path!r}: not a file and not one of {', '.join(list_recipes())}")


def parse_config(argv: list[str] | None = None, extra: tuple = (), defaults: dict[str, Any] | None = None) -> tuple:
    """``--config <recipe or YAML> [--field value ...]`` -> (SelfPlayConfig, PolicyModelConfig, *extra instances).

    ``extra`` are more dataclass types a script adds (their fields come from the command line); ``defaults`` replace
    field defaults below the recipe and the command line (the hardware's precision, from
    :func:`opensir_lite.runtime.parse_config`, which is what scripts call)."""
    args = list(sys.argv[1:] if argv is None else argv)
    recipe = None
    if "--config" in args:
        i = args.index("--config")
        if i + 1 >= len(args):
            raise ConfigError("--config needs a recipe name or a YAML path")
        recipe = args[i + 1]
        args[i + 1] = str(resolve_recipe(args[i + 1]))
        _check_yaml(Path(args[i + 1]), extra)
    parser = TrlParser(
        (SelfPlayConfig, PolicyModelConfig, *extra),
        description=USAGE,
        usage="%(prog)s --config RECIPE_OR_YAML [--field value ...]  (or --list_recipes)",
    )

    def one_line_error(message: str):  # argparse would print the whole usage first; one line is enough
        raise ConfigError(message.replace("/--", " / --"))

    parser.error = one_line_error  # type: ignore[method-assign]
    if defaults:
        parser.set_defaults(**defaults)
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
    """A generation backend that cannot run this configuration fails here, in one line, before any model loads
    (what needs the machine or vLLM itself is checked by :func:`opensir_lite.runtime.backend_problem`)."""
    backend = train_args.generation_backend
    if backend == "transformers":
        return
    quantized = model_args.load_in_4bit or model_args.load_in_8bit
    if backend == "vllm" and quantized:
        raise ConfigError(
            "generation_backend vllm with a 4-bit/8-bit base: TRL cannot sync QLoRA weights to vLLM; use "
            "generation_backend vllm_lora (the adapter served to vLLM), LoRA on a 16-bit base (--load_in_4bit "
            "false) or generation_backend transformers"
        )
    if backend == "vllm_lora":
        if train_args.use_vllm:
            raise ConfigError("use_vllm would start TRL's own vLLM engine beside vllm_lora's: leave it false")
        if not model_args.use_peft:
            raise ConfigError(
                "generation_backend vllm_lora serves a LoRA adapter: set use_peft true, or use generation_backend "
                "vllm (TRL's weight sync) for full fine-tuning"
            )


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
    if unknown := sorted(set(data) - known):
        raise ConfigError(f"{path}: unknown config key(s): {', '.join(unknown)}")
    hints = _field_types((SelfPlayConfig, PolicyModelConfig, *extra))
    for key, value in data.items():
        if key in hints:
            problem = type_problem(value, hints[key])
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
