"""Facts about this machine, asked once where a decision needs them: the device and its training dtype, whether the
CPU computes bf16 natively, the attention implementation to load with, and a hardware description for notebooks.
The decisions themselves (a run's precision, CPU process groups) are made in :mod:`opensir_lite.runtime`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from opensir_lite.attention import GROUPED_SDPA, default_attn_implementation, register_grouped_sdpa


def gpu_available() -> bool:
    """Whether a CUDA device is visible."""
    return torch.cuda.is_available()


def pick_dtype(device_type: str, compute_capability: tuple[int, int] | None = None) -> torch.dtype:
    """fp32 on CPU; bf16 on CUDA with compute capability >= 8.0 (Ampere+); fp16 below (T4, V100).

    ``torch.cuda.is_bf16_supported()`` answers True on a T4 through emulation, so the capability decides.
    """
    if device_type != "cuda":
        return torch.float32
    if compute_capability is not None and compute_capability >= (8, 0):
        return torch.bfloat16
    return torch.float16


CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs that compute bf16 natively


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bf16 matrix products natively (AVX512-BF16 or AMX). Without them torch emulates
    bf16 and is several times slower than fp32 (measured on an AVX2 EPYC: 1.7 against 7.4 tokens/s decoding the
    0.5B Qwen; docs/benchmarks.md). ``cpuinfo``: the text of /proc/cpuinfo (read when None; False where absent)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return False
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return any(flag in flags for flag in CPU_BF16_FLAGS)


def cpu_model_name() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


def current_device_dtype() -> tuple[str, torch.dtype]:
    """The device type here and its training dtype."""
    if torch.cuda.is_available():
        return "cuda", pick_dtype("cuda", torch.cuda.get_device_capability())
    return "cpu", torch.float32


def attention_for(device_type: str, requested: str | None = None) -> str | None:
    """The attn_implementation to load with: the requested one, else ``sdpa_grouped`` on the CPU (decoding about
    twice as fast there with the same outputs, docs/benchmarks.md; see :mod:`opensir_lite.attention`), else
    transformers' default."""
    if requested:
        if requested == GROUPED_SDPA:
            register_grouped_sdpa()
        return requested
    return default_attn_implementation(device_type)


def describe_hardware() -> dict[str, object]:
    """What a notebook runs on: device, GPU name and memory, training dtype, CPU count."""
    device, dtype = current_device_dtype()
    info: dict[str, object] = {"device": device, "dtype": str(dtype).replace("torch.", ""), "cpus": os.cpu_count()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1))
    return info
