"""Decisions about this machine, made once when a run's configuration is read, from the device's facts
(:class:`opensir_lite.device.DeviceFacts`): the precision, where the Trainer runs, the dtype of rollouts, what a
vLLM backend can do here, and whether the sandbox can isolate the programs a recipe runs.

A recipe states what it wants (``bf16: true`` for bf16 mixed precision, ``bf16: null`` for the device's default,
``rollout_dtype: bfloat16``); :func:`resolve` turns that into what the device runs, the same way on every machine
(tests/test_runtime.py holds it for a CPU with and without native bf16, a T4, a V100, an L4, an A100 and an H100):

- precision: bf16 where the device computes it natively (compute capability 8.0 or newer, a CPU with AVX512-BF16 or
  AMX); below 8.0 a bf16 request becomes fp16; on a CPU without native bf16 it becomes fp32 when
  ``bf16_when_native`` (else bf16 is emulated); fp16 on a CPU becomes fp32 (no fp16 autocast there). Unset
  (``null``): bf16 or fp16 on a GPU by compute capability, fp32 on a CPU.
- ``use_cpu``: only without a GPU, where accelerate needs it for CPU bf16 autocast or to form a gloo group of
  several processes; never on a GPU machine.
- rollout dtype: bfloat16 becomes float16 below compute capability 8.0 and float32 on a CPU without native bf16
  (with ``bf16_when_native``); float16 on a CPU becomes float32.

:func:`parse_config` is what scripts call: the recipe and command line read by :func:`opensir_lite.config.parse_config`
(validation only), then these decisions (read again with them, so TRL's own settings follow), then the checks
that need the machine.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from opensir_lite import config
from opensir_lite.config import ConfigError
from opensir_lite.device import DeviceFacts, current_device_facts

logger = logging.getLogger(__name__)


def hardware_defaults(facts: DeviceFacts) -> dict[str, Any]:
    """Field defaults the hardware decides before the recipe is read: no pinned memory without an accelerator.
    (Precision is decided after it, by :func:`resolve`, from what the recipe asked for.)"""
    return {"dataloader_pin_memory": False} if facts.kind == "cpu" else {}


def several_processes() -> bool:
    """Whether this process is one of several (``WORLD_SIZE`` > 1, as torchrun and accelerate set it)."""
    return os.environ.get("WORLD_SIZE", "1") not in ("", "1")


def resolve_precision(requested_bf16: bool | None, fp16: bool, bf16_when_native: bool, facts: DeviceFacts) -> dict:
    """``{"bf16": ..., "fp16": ...}``: the mixed precision this device runs for what the recipe asked
    (``requested_bf16`` None: the device's default). See the module docstring."""
    if facts.kind == "cuda":
        if requested_bf16 is None:
            return {"bf16": facts.native_bf16 and not fp16, "fp16": fp16 or not facts.native_bf16}
        if requested_bf16 and not facts.native_bf16:
            return {"bf16": False, "fp16": True}
        return {"bf16": bool(requested_bf16), "fp16": bool(fp16) and not requested_bf16}
    bf16 = bool(requested_bf16)
    if bf16 and not facts.native_bf16 and bf16_when_native:
        bf16 = False
    return {"bf16": bf16, "fp16": False}


def resolve_rollout_dtype(name: str, bf16_when_native: bool, facts: DeviceFacts) -> str:
    """The dtype the rollout copy (or a vLLM engine) samples in here, for the recipe's ``rollout_dtype``."""
    if name == "bfloat16" and not facts.native_bf16:
        if facts.kind == "cuda":
            return "float16"
        return "float32" if bf16_when_native else name
    if name == "float16" and facts.kind == "cpu":
        return "float32"
    return name


def requested_precision(argv: list[str]) -> dict[str, bool | None]:
    """What the recipe (``--config``) and the command line ask of ``bf16`` and ``fp16``, read the way TRL's parser
    reads them (the command line over the recipe; a bare ``--bf16`` is true); ``bf16`` None: not set. Read before the
    configuration is built, because TrainingArguments refuses a precision the machine lacks (bf16 on a T4 or on a
    CPU without use_cpu) before the device could decide anything."""
    import argparse

    import yaml
    from transformers.hf_argparser import string_to_bool

    recipe: dict[str, Any] = {}
    if "--config" in argv and argv.index("--config") + 1 < len(argv):
        try:
            recipe = yaml.safe_load(config.resolve_recipe(argv[argv.index("--config") + 1]).read_text()) or {}
        except (OSError, yaml.YAMLError, ConfigError):
            recipe = {}  # the real parse reports it
        recipe = recipe if isinstance(recipe, dict) else {}
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for name in ("bf16", "fp16"):
        parser.add_argument(f"--{name}", type=string_to_bool, nargs="?", const=True, default=recipe.get(name))
    try:
        known, _ = parser.parse_known_args(argv)
    except (SystemExit, argparse.ArgumentTypeError):
        return {"bf16": recipe.get("bf16"), "fp16": bool(recipe.get("fp16"))}
    return {"bf16": known.bf16, "fp16": bool(known.fp16)}


def resolve(train_args, facts: DeviceFacts, processes: int = 1, requested: dict | None = None) -> dict[str, Any]:
    """The fields this device changes in a parsed configuration, as field -> value (empty when none).
    ``requested``: what the recipe asked of ``bf16`` / ``fp16`` (:func:`requested_precision`; default: the parsed
    values, where None is still unset)."""
    requested = requested or {"bf16": train_args.bf16, "fp16": train_args.fp16}
    wanted = resolve_precision(requested["bf16"], bool(requested["fp16"]), train_args.bf16_when_native, facts)
    out: dict[str, Any] = {k: v for k, v in wanted.items() if getattr(train_args, k) != v}
    rollout = resolve_rollout_dtype(train_args.rollout_dtype, train_args.bf16_when_native, facts)
    if rollout != train_args.rollout_dtype:
        out["rollout_dtype"] = rollout
    if facts.kind == "cpu" and not train_args.use_cpu and (wanted["bf16"] or processes > 1):
        # accelerate forms a gloo group, and autocasts to bf16 on a CPU, only when told it is a CPU run
        out["use_cpu"] = True
    return out


def log_changes(changes: dict[str, Any], facts: DeviceFacts) -> None:
    if changes:
        listed = ", ".join(f"{k} {v}" for k, v in changes.items())
        logger.warning("on %s (%s) the run uses: %s", facts.name or facts.kind, facts.kind, listed)


def backend_problem(train_args, model_args, facts: DeviceFacts, processes: int = 1) -> str | None:
    """Why the recipe's generation backend cannot run on this machine with the vLLM installed here, or None."""
    backend = train_args.generation_backend
    if backend == "transformers":
        return None
    from opensir_lite.vllm_engine import VLLMError, install_problem, lora_rank_for, unservable_modules

    if backend == "vllm" and facts.kind == "cpu":
        return ("generation_backend vllm (TRL's weight sync into vLLM) does not run on vLLM's CPU backend: use "
                "generation_backend vllm_lora (the adapter served to vLLM) with a LoRA policy")  # fmt: skip
    if backend == "vllm_lora" and processes > 1:
        return ("generation_backend vllm_lora runs one engine in one process: use one process, or "
                "generation_backend vllm with a `trl vllm-serve` server for several")  # fmt: skip
    try:
        problem = install_problem()
        if problem:
            raise VLLMError(problem)
        if backend == "vllm_lora":
            lora_rank_for(model_args.lora_r, train_args.vllm_max_lora_rank)
            bad = unservable_modules(model_args.lora_target_modules)
            if bad or model_args.lora_modules_to_save:
                names = ", ".join(bad + list(model_args.lora_modules_to_save or []))
                raise VLLMError(f"vLLM cannot serve a LoRA on {names}: set lora_target_modules to projections "
                                "(or all-linear) and no lora_modules_to_save, or use generation_backend transformers")  # fmt: skip
    except VLLMError as e:
        return f"generation_backend {backend}: {e}"
    return None


def backend_warnings(train_args) -> list[str]:
    """What a vLLM backend does differently from the transformers one that the run cannot fix, said once at start:
    vLLM returns no sampling entropy (a stop rule on it then watches its other metrics only), and TRL caps a
    colocated engine at fewer sequences than a round asks for (they queue)."""
    backend = train_args.generation_backend
    if backend == "transformers":
        return []
    out = []
    if "student_mean_entropy" in (train_args.stop_rule_metrics or []):
        others = [m for m in train_args.stop_rule_metrics if m != "student_mean_entropy"]
        out.append(f"generation_backend {backend}: vLLM returns no sampling entropy, so student_mean_entropy is not "
                   f"measured and the stop rule watches {', '.join(others) or 'nothing'} only")  # fmt: skip
    if backend == "vllm" and train_args.vllm_mode == "colocate":
        cap = (
            train_args.per_device_train_batch_size
            * train_args.vllm_tensor_parallel_size
            * (train_args.steps_per_generation or 1)
        )
        asked = train_args.num_teacher_groups * train_args.teacher_upscale_ratio * train_args.num_generations**2
        if asked > cap:
            out.append(f"generation_backend vllm (colocate): TRL caps its engine at {cap} sequences at once "
                       f"(per_device_train_batch_size x steps_per_generation); a round asks up to {asked}, which queue "
                       "(generation_backend vllm_lora has no such cap)")  # fmt: skip
    return out


def isolation_problem(train_args) -> str | None:
    """Why the recipe's programs cannot run here (the sandbox cannot isolate them and unisolated runs are not
    allowed), or None."""
    if not train_args.runs_programs or train_args.allow_unisolated_sandbox:
        return None
    from opensir_lite import sandbox

    reason = sandbox.isolation_unavailable_reason()
    if reason is None:
        return None
    name = "program_check" if train_args.program_check else f"student_label {train_args.student_label}"
    return (f"{name}: the sandbox cannot isolate programs here ({reason}); "
            "set allow_unisolated_sandbox to run them without isolation")  # fmt: skip


def parse_config(argv: list[str] | None = None, extra: tuple = (), facts: DeviceFacts | None = None) -> tuple:
    """(SelfPlayConfig, PolicyModelConfig, *extra) for this machine (``facts``: another device's, for tests and
    plans): the recipe and command line over the hardware's defaults, then :func:`resolve` (read again with its
    changes, so TRL's own settings follow), then the backend and sandbox checks; ConfigError (one line) when the run
    cannot start."""
    import sys

    facts = facts or current_device_facts()
    processes = int(os.environ.get("WORLD_SIZE", "1") or 1)
    argv = list(sys.argv[1:] if argv is None else argv)
    defaults = hardware_defaults(facts)
    requested = requested_precision(argv)
    parsed = config.parse_config([*argv, "--bf16", "false", "--fp16", "false"], extra, defaults)  # no precision yet
    changes = resolve(parsed[0], facts, processes, requested)
    precision = {"bf16": changes.pop("bf16", False), "fp16": changes.pop("fp16", False)}
    asked = {"bf16": requested["bf16"], "fp16": requested["fp16"]}
    moved = {k: v for k, v in precision.items() if asked[k] is not None and bool(asked[k]) != v}
    log_changes({**moved, **changes}, facts)
    flags = [item for k, v in {**precision, **changes}.items()
             for item in (f"--{k}", str(v).lower() if isinstance(v, bool) else v)]  # fmt: skip
    parsed = config.parse_config([*argv, *flags], extra, defaults)
    problem = backend_problem(parsed[0], parsed[1], facts, processes) or isolation_problem(parsed[0])
    if problem:
        raise ConfigError(problem)
    for warning in backend_warnings(parsed[0]):
        logger.warning(warning)
    return parsed
