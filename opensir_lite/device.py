"""Facts about this machine, asked once where a decision needs them: the device and its training dtype, whether the
CPU computes bf16 natively, the attention implementation to load with, and a hardware description for notebooks.
The decisions themselves (a run's precision, CPU process groups) are made in :mod:`opensir_lite.runtime`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
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


@dataclass(frozen=True)
class DeviceFacts:
    """What a decision about precision, placement or memory needs to know of a machine's device."""

    kind: str  # "cpu" or "cuda"
    name: str = ""
    compute_capability: tuple[int, int] | None = None  # CUDA only
    memory_gib: float | None = None  # the GPU's memory (None on a CPU)
    cpu_native_bf16: bool = False  # AVX512-BF16 or AMX (CPU only)

    @property
    def native_bf16(self) -> bool:
        """Whether bf16 runs natively: a GPU of compute capability 8.0 or newer, or a CPU with AVX512-BF16/AMX."""
        if self.kind == "cuda":
            return self.compute_capability is not None and self.compute_capability >= (8, 0)
        return self.cpu_native_bf16

    @property
    def train_dtype(self) -> torch.dtype:
        """The dtype weights load in for training: :func:`pick_dtype`."""
        return pick_dtype(self.kind, self.compute_capability)

    @property
    def half_dtype(self) -> str:
        """The 16-bit dtype that runs natively here: bfloat16 where native, float16 on older GPUs, and float32 on
        a CPU without native bf16 (emulated 16-bit arithmetic is slower there than fp32)."""
        if self.native_bf16:
            return "bfloat16"
        return "float16" if self.kind == "cuda" else "float32"


# Devices the decisions are tested on (tests/test_runtime.py) and the plan knows (opensir_lite/plan.py); memory as
# torch reports a card's total, in GiB.
DEVICES: dict[str, DeviceFacts] = {
    "cpu": DeviceFacts("cpu", "a CPU without AVX512-BF16/AMX"),
    "cpu-bf16": DeviceFacts("cpu", "a CPU with AVX512-BF16/AMX", cpu_native_bf16=True),
    "t4": DeviceFacts("cuda", "Tesla T4", (7, 5), 14.7),
    "v100": DeviceFacts("cuda", "Tesla V100-SXM2-16GB", (7, 0), 15.8),
    "l4": DeviceFacts("cuda", "NVIDIA L4", (8, 9), 22.0),
    "a100": DeviceFacts("cuda", "NVIDIA A100-SXM4-80GB", (8, 0), 79.2),
    "h100": DeviceFacts("cuda", "NVIDIA H100 80GB HBM3", (9, 0), 79.6),
}


def current_device_facts() -> DeviceFacts:
    """This machine's device: the first CUDA device when one is visible, else the CPU."""
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return DeviceFacts(
            "cuda", props.name, torch.cuda.get_device_capability(0), round(props.total_memory / 2**30, 1)
        )
    return DeviceFacts("cpu", cpu_model_name(), cpu_native_bf16=cpu_has_native_bf16())


def resolve_device(name: str, facts: DeviceFacts | None = None) -> str:
    """A device name for a tool's ``--device``: ``auto`` is ``cuda`` where a GPU is visible, else ``cpu``."""
    if name != "auto":
        return name
    return (facts or current_device_facts()).kind


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
