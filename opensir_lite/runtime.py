"""Decisions about this machine, made once when a run's configuration is read: the precision (bf16 where the GPU
has it, fp16 on older GPUs, fp32 on a CPU, and ``bf16_when_native``'s fallback on a CPU that only emulates bf16),
CPU process groups under ``torchrun``, and whether the sandbox can isolate the programs a recipe runs.

:func:`parse_config` is what scripts call: the recipe and command line read by :func:`opensir_lite.config.parse_config`
(validation only) with the hardware's defaults below them, then these decisions.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from opensir_lite import config
from opensir_lite.config import ConfigError
from opensir_lite.device import cpu_has_native_bf16, current_device_dtype, gpu_available

logger = logging.getLogger(__name__)


def hardware_defaults() -> dict[str, Any]:
    """Field defaults the hardware decides (a recipe or the command line still wins): mixed precision in the
    device's training dtype; no pinned memory without an accelerator."""
    device, dtype = current_device_dtype()
    defaults: dict[str, Any] = {"bf16": dtype == torch.bfloat16, "fp16": dtype == torch.float16}
    if device == "cpu":
        defaults["dataloader_pin_memory"] = False  # nothing to pin without an accelerator
    return defaults


def several_processes() -> bool:
    """Whether this process is one of several (``WORLD_SIZE`` > 1, as torchrun and accelerate set it)."""
    return os.environ.get("WORLD_SIZE", "1") not in ("", "1")


def overrides(train_args) -> dict[str, Any]:
    """Values the configuration must change on this machine, as field -> value (empty when none)."""
    out: dict[str, Any] = {}
    if train_args.bf16_when_native and not gpu_available() and not cpu_has_native_bf16():
        if train_args.bf16 or train_args.rollout_dtype == "bfloat16":
            logger.warning(
                "this CPU has no native bf16 (AVX512-BF16/AMX): bf16 autocast and bf16 rollouts run in fp32 "
                "instead (bf16_when_native)"
            )
            out["bf16"] = False
            if train_args.rollout_dtype == "bfloat16":
                out["rollout_dtype"] = "float32"
    if not train_args.use_cpu and several_processes() and current_device_dtype()[0] == "cpu":
        # Several processes (torchrun) on a machine without an accelerator: accelerate forms a gloo group only
        # when told it is a CPU run; otherwise every rank would train alone as its own "main process".
        out["use_cpu"] = True
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
    name = "program_check" if train_args.program_check else "student_label program_confirmed"
    return (f"{name}: the sandbox cannot isolate programs here ({reason}); "
            "set allow_unisolated_sandbox to run them without isolation")  # fmt: skip


def parse_config(argv: list[str] | None = None, extra: tuple = ()) -> tuple:
    """(SelfPlayConfig, PolicyModelConfig, *extra) for this machine: the recipe and command line over the
    hardware's defaults, then :func:`overrides` (read again with them, so TRL's own settings follow), then the
    sandbox check; ConfigError (one line) when the run cannot start."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    defaults = hardware_defaults()
    parsed = config.parse_config(argv, extra, defaults)
    changes = overrides(parsed[0])
    if changes:
        flags = [item for k, v in changes.items() for item in (f"--{k}", str(v).lower() if isinstance(v, bool) else v)]
        parsed = config.parse_config([*argv, *flags], extra, defaults)
    problem = isolation_problem(parsed[0])
    if problem:
        raise ConfigError(problem)
    return parsed
