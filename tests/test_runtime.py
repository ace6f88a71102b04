"""The machine's decisions (opensir_lite.runtime), made by one function from a device's facts, for a table of
devices: a CPU with and without native bf16, a T4 (7.5), a V100 (7.0), an L4 (8.9), an A100 (8.0) and an H100
(9.0). Every shipped recipe resolves to a precision TrainingArguments accepts there, ``use_cpu`` only without a
GPU, and a rollout dtype the device runs natively."""

from __future__ import annotations

import pytest

from opensir_lite import config
from opensir_lite.device import DEVICES, DeviceFacts
from opensir_lite.runtime import (
    parse_config,
    requested_precision,
    resolve,
    resolve_precision,
    resolve_rollout_dtype,
)


def resolved(recipe: str, device: str, tmp_path, *extra: str, processes: int = 1) -> dict:
    """What a recipe becomes on a device: the recipe parsed with no precision (as parse_config's first pass), then
    the device's changes."""
    argv = ["--config", recipe, "--output_dir", str(tmp_path / "run"), *extra]
    args = config.parse_config([*argv, "--bf16", "false", "--fp16", "false"])[0]
    changes = resolve(args, DEVICES[device], processes, requested_precision(argv))
    return {k: changes.get(k, getattr(args, k)) for k in ("bf16", "fp16", "use_cpu", "rollout_dtype")}


def expect(bf16: bool, fp16: bool, use_cpu: bool, rollout: str) -> dict:
    return {"bf16": bf16, "fp16": fp16, "use_cpu": use_cpu, "rollout_dtype": rollout}


CASES = [
    # the registered CPU recipe: bf16 where native, fp32 on an emulating CPU, fp16 below compute capability 8.0
    ("learn-cpu-qwen", "cpu", expect(False, False, False, "float32")),  # emulated bf16: fp32 update and rollouts
    ("learn-cpu-qwen", "cpu-bf16", expect(True, False, True, "bfloat16")),  # CPU bf16 autocast needs use_cpu
    ("learn-cpu-qwen", "t4", expect(False, True, False, "float16")),  # never use_cpu on a GPU; bf16 -> fp16
    ("learn-cpu-qwen", "v100", expect(False, True, False, "float16")),
    ("learn-cpu-qwen", "l4", expect(True, False, False, "bfloat16")),
    ("learn-cpu-qwen", "a100", expect(True, False, False, "bfloat16")),
    ("learn-cpu-qwen", "h100", expect(True, False, False, "bfloat16")),
    # its control: the same decisions
    ("grpo-gold", "cpu-bf16", expect(True, False, True, "bfloat16")),
    ("grpo-gold", "t4", expect(False, True, False, "float16")),
    ("grpo-gold", "a100", expect(True, False, False, "bfloat16")),
    # the GPU test: precision unset (the device's), bf16 rollouts as fp16 on a T4 or V100
    ("gpu-qwen0.5b", "t4", expect(False, True, False, "float16")),
    ("gpu-qwen0.5b", "v100", expect(False, True, False, "float16")),
    ("gpu-qwen0.5b", "a100", expect(True, False, False, "bfloat16")),
    ("gpu-qwen0.5b", "h100", expect(True, False, False, "bfloat16")),
    # the Colab recipe: fp16 on its T4, bf16 on a newer card
    ("colab-t4", "t4", expect(False, True, False, "auto")),
    ("colab-t4", "a100", expect(True, False, False, "auto")),
    # unset precision on a CPU: fp32, native bf16 or not
    ("smoke", "cpu", expect(False, False, False, "auto")),
    ("smoke", "cpu-bf16", expect(False, False, False, "auto")),
    ("paper-llama3.2-3b", "h100", expect(True, False, False, "auto")),
]


@pytest.mark.parametrize("recipe,device,expected", CASES, ids=[f"{r}-{d}" for r, d, _ in CASES])
def test_recipes_resolve_for_each_device(recipe, device, expected, tmp_path):
    assert resolved(recipe, device, tmp_path) == expected


@pytest.mark.parametrize(
    "extra,device,expected",
    [
        (["--bf16", "false"], "a100", expect(False, False, False, "auto")),  # the command line's fp32 stands
        (["--fp16", "true"], "cpu-bf16", expect(False, False, False, "auto")),  # no fp16 autocast on a CPU: fp32
        (["--fp16"], "t4", expect(False, True, False, "auto")),  # a bare flag is true, as TRL's parser reads it
        (["--rollout_dtype", "float16"], "cpu", expect(False, False, False, "float32")),  # fp16 on a CPU: fp32
        (["--bf16", "true", "--bf16_when_native", "false"], "cpu", expect(True, False, True, "auto")),  # emulated
    ],
)
def test_command_line_requests_resolve(extra, device, expected, tmp_path):
    assert resolved("smoke", device, tmp_path, *extra) == expected


def test_several_cpu_processes_form_a_cpu_group(tmp_path):
    # accelerate forms a gloo group of several CPU processes only when told it is a CPU run
    assert resolved("smoke", "cpu", tmp_path, processes=2)["use_cpu"] is True
    assert resolved("smoke", "a100", tmp_path, processes=2)["use_cpu"] is False


@pytest.mark.parametrize(
    "requested,fp16,when_native,device,expected",
    [
        (None, False, False, "t4", {"bf16": False, "fp16": True}),  # unset on a T4: fp16
        (None, False, False, "h100", {"bf16": True, "fp16": False}),  # unset on Hopper: bf16
        (None, True, False, "h100", {"bf16": False, "fp16": True}),  # fp16 asked for on Hopper: fp16
        (True, False, False, "v100", {"bf16": False, "fp16": True}),  # bf16 asked on Volta: fp16
        (True, False, True, "cpu", {"bf16": False, "fp16": False}),  # emulated, bf16_when_native: fp32
        (True, False, False, "cpu", {"bf16": True, "fp16": False}),  # emulated, asked anyway
        (False, False, False, "a100", {"bf16": False, "fp16": False}),  # fp32 asked on Ampere
    ],
)
def test_resolve_precision(requested, fp16, when_native, device, expected):
    assert resolve_precision(requested, fp16, when_native, DEVICES[device]) == expected


@pytest.mark.parametrize(
    "name,when_native,device,expected",
    [
        ("bfloat16", True, "t4", "float16"),  # no bf16 below 8.0
        ("bfloat16", True, "cpu", "float32"),  # emulated bf16 is slower than fp32
        ("bfloat16", False, "cpu", "bfloat16"),  # unless asked for anyway
        ("bfloat16", True, "cpu-bf16", "bfloat16"),
        ("float16", True, "cpu", "float32"),
        ("float16", True, "a100", "float16"),
        ("auto", True, "t4", "auto"),  # the adapter's dtype: fp32 (trainable parameters stay fp32)
    ],
)
def test_resolve_rollout_dtype(name, when_native, device, expected):
    assert resolve_rollout_dtype(name, when_native, DEVICES[device]) == expected


@pytest.mark.parametrize(
    "device,native,half",
    [("cpu", False, "float32"), ("cpu-bf16", True, "bfloat16"), ("t4", False, "float16"), ("v100", False, "float16"),
     ("l4", True, "bfloat16"), ("a100", True, "bfloat16"), ("h100", True, "bfloat16")],
)  # fmt: skip
def test_device_facts(device, native, half):
    facts = DEVICES[device]
    assert facts.native_bf16 is native and facts.half_dtype == half


def test_parse_config_on_this_cpu_for_both_cpu_kinds(tmp_path):
    """The whole parse (both passes, TrainingArguments' own checks) on this machine for a CPU with and without
    native bf16: the registered recipe runs where its comments say it runs."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("the CPU kinds are parsed on a CPU machine")
    for kind, bf16, rollout in (("cpu", False, "float32"), ("cpu-bf16", True, "bfloat16")):
        args, _ = parse_config(
            ["--config", "learn-cpu-qwen", "--output_dir", str(tmp_path / kind)], facts=DEVICES[kind]
        )
        assert (args.bf16, args.fp16, args.use_cpu, args.rollout_dtype) == (bf16, False, bf16, rollout), kind


def test_unknown_gpu_is_judged_by_its_capability():
    assert DeviceFacts("cuda", "a future card", (12, 0), 192.0).half_dtype == "bfloat16"
    assert DeviceFacts("cuda", "a Pascal card", (6, 1), 11.0).half_dtype == "float16"


@pytest.mark.parametrize(
    "extra,expected",
    [
        # the registered stop rule watches the student's entropy, which vLLM does not return
        (["--generation_backend", "vllm_lora"], ["no sampling entropy", "watches student_mean_tokens only"]),
        # TRL's colocated engine decodes per_device_train_batch_size x steps_per_generation sequences at once
        (["--generation_backend", "vllm", "--load_in_4bit", "false"], ["caps its engine at 24 sequences", "up to 128"]),
        (["--generation_backend", "transformers"], []),
    ],
)
def test_backend_warnings(extra, expected, tmp_path):
    from opensir_lite.runtime import backend_warnings

    args = config.parse_config(["--config", "learn-cpu-qwen", "--output_dir", str(tmp_path / "r"), "--bf16", "false",
                                *extra])[0]  # fmt: skip
    said = " | ".join(backend_warnings(args))
    assert all(words in said for words in expected) and (said == "") == (not expected)
