"""``generation_backend: vllm_lora``: rounds sampled by a vLLM engine in this process that serves the policy's
current LoRA adapter (:mod:`opensir_lite.vllm_engine`), with TRL's importance-sampling correction on.

:class:`VLLMLoRABackend` is what the rollout adapter opens for each round (:meth:`VLLMLoRABackend.round`: the
adapter of the current step published, the engine woken from sleep mode on a GPU, the sampler) and what TRL's loop
sees as its vLLM integration: :meth:`VLLMLoRABackend.attach` sets ``trainer.use_vllm`` so that ``GRPOTrainer``
computes the trained policy's log-probabilities of every round and weighs the loss by TRL's importance-sampling
ratio against the log-probabilities vLLM returned (the vLLM policy is the 16-bit base plus the adapter; the trained
one may be the NF4 base plus the same adapter), and puts this object where TRL keeps its integration, so that TRL's
call to ``vllm_generation.sync_weights()`` before a step's rounds publishes the adapter instead of copying weights.
The trainer is built with ``use_vllm`` false, so TRL never starts an engine of its own.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from opensir_lite.device import DeviceFacts, current_device_facts
from opensir_lite.memory import GIB, shape_of
from opensir_lite.models import resolve_model_path
from opensir_lite.sampling import VLLMLoRASampler, policy_stop_ids
from opensir_lite.vllm_engine import AdapterServer, BaseServer, EngineConfig, MergedServer, build_llm, lora_rank_for

logger = logging.getLogger(__name__)


def is_quantized(model) -> bool:
    """Whether a model holds bitsandbytes 4-bit weights."""
    return any(hasattr(p, "quant_state") for p in model.parameters())


def base_state(model, dtype: str) -> dict:
    """The tensors of the base a (possibly 4-bit) model computes with, by checkpoint name, in ``dtype`` on the CPU:
    every NF4 weight de-quantised (bitsandbytes' own function: the weights its 4-bit matmul multiplies by), the rest
    as they are; tied weights once (the config ties them again). One tensor is de-quantised at a time."""
    import torch
    from peft.utils.integrations import dequantize_bnb_weight

    target = getattr(torch, dtype)
    state = {}
    with torch.no_grad():
        for name, param in model.named_parameters():
            value = dequantize_bnb_weight(param, param.quant_state) if hasattr(param, "quant_state") else param
            state[name] = value.detach().to("cpu", target).contiguous()
    return state


def save_base(model, tokenizer, folder: str | Path, state: dict, dtype: str) -> Path:
    """``state`` as a plain checkpoint vLLM can load, with the model's config (no quantisation), generation config
    and tokenizer."""
    import copy

    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.torch_dtype = dtype
    config.save_pretrained(folder)
    model.generation_config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def sync_mode(args, facts: DeviceFacts) -> str:
    """How the policy reaches the engine: ``vllm_sync`` ``auto`` is ``merged`` on a CPU (vLLM's CPU LoRA kernels
    sample 3-4 times slower than plain weights) and ``adapter`` on a GPU."""
    mode = getattr(args, "vllm_sync", "auto")
    if mode == "auto":
        original = getattr(args, "vllm_base", "trained") == "original"  # only an adapter can sit on another base
        return "merged" if facts.kind == "cpu" and not original else "adapter"
    return mode


def round_sequences(args) -> int:
    """The most sequences one round can ask for at once: every teacher output legal, G students each."""
    teacher = args.num_teacher_groups * args.teacher_upscale_ratio * args.num_generations
    return max(teacher, teacher * args.num_generations if args.method == "selfplay" else 0,
               args.num_student_groups * max(args.gold_candidates, 1) * args.num_generations)  # fmt: skip


def cpu_kv_cache_gib(args, shape, dtype: str, total_bytes: int | None = None) -> float:
    """The KV cache a CPU engine gets when the recipe names none: one round's sequences at their longest (the prompt
    budget, 1,024 tokens when unset, plus the longest completion budget), at least 1 GiB and at most a quarter of
    the machine's memory."""
    if args.vllm_cpu_kv_cache_gib:
        return float(args.vllm_cpu_kv_cache_gib)
    longest = max(args.teacher_max_new_tokens, args.student_max_new_tokens, args.program_max_new_tokens)
    tokens = round_sequences(args) * ((args.max_prompt_length or 1024) + longest)
    total = total_bytes or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return round(min(max(tokens * shape.kv_bytes_per_token(dtype) / GIB, 1.0), total / 4 / GIB), 2)


def engine_dtype(args, facts: DeviceFacts) -> str:
    """The engine's dtype: the recipe's rollout dtype (resolved for the device), ``auto`` the device's native
    16-bit type."""
    return facts.half_dtype if args.rollout_dtype == "auto" else args.rollout_dtype


def engine_config(args, model_args, policy_config, facts: DeviceFacts, base: str | None = None) -> EngineConfig:
    """The engine a run's recipe asks for on this device: ``base`` (default: the policy's own folder or Hub id), the
    rollout dtype, LoRA when the adapter is served (not when it is merged into the weights), memory from the
    recipe."""
    dtype = engine_dtype(args, facts)
    adapter = sync_mode(args, facts) == "adapter"
    return EngineConfig(
        model=base or resolve_model_path(model_args.model_name_or_path),
        dtype=dtype,
        max_lora_rank=lora_rank_for(model_args.lora_r, args.vllm_max_lora_rank) if adapter else None,
        seed=int(args.seed),
        max_model_len=args.vllm_max_model_length,
        gpu_memory_utilization=args.vllm_gpu_memory_utilization,
        cpu_kv_cache_gib=cpu_kv_cache_gib(args, shape_of(policy_config), dtype) if facts.kind == "cpu" else 0.0,
        enable_sleep_mode=bool(args.vllm_enable_sleep_mode) and facts.kind == "cuda",
        max_num_seqs=max(256, round_sequences(args)) if facts.kind == "cuda" else 256,
        trust_remote_code=bool(args.trust_remote_code),
    )


def base_sampler(args, model_args, facts: DeviceFacts | None = None) -> VLLMLoRASampler:
    """A sampler on one vLLM engine serving the recipe's base model as it is (no adapter), in the recipe's rollout
    dtype, stopping where the model's generation config says: measurements of the base policy
    (``scripts/label_quality.py --backend vllm``). Close it with ``sampler.server.close()``."""
    from types import SimpleNamespace

    from transformers import AutoConfig, GenerationConfig

    from opensir_lite.models import load_tokenizer

    facts = facts or current_device_facts()
    path = resolve_model_path(model_args.model_name_or_path)
    tokenizer = load_tokenizer(path, trust_remote_code=bool(args.trust_remote_code))
    try:
        generation = GenerationConfig.from_pretrained(path)
    except OSError:
        generation = None
    config = engine_config(args, model_args, AutoConfig.from_pretrained(path), facts, base=path)
    config.max_lora_rank = None
    server = BaseServer(build_llm(config, facts.kind))
    stop_ids = policy_stop_ids(SimpleNamespace(generation_config=generation), tokenizer)
    return VLLMLoRASampler(server, tokenizer, args, stop_ids)


class VLLMLoRABackend:
    """One engine for the run; ``server`` is its :class:`AdapterServer`."""

    def __init__(self, server, tokenizer, args, stop_ids: list[int], sleep: bool = False, workdir: Path | None = None):
        self.server, self.tokenizer, self.args, self.stop_ids, self.sleep = server, tokenizer, args, stop_ids, sleep
        self.workdir = workdir  # the backend's own temporary folder (a de-quantised base), removed at close
        self.trainer = None
        self.sync_seconds = 0.0  # time spent publishing the policy to the engine since the last round's stats

    @classmethod
    def for_run(cls, args, model_args, policy, tokenizer, facts: DeviceFacts | None = None) -> VLLMLoRABackend:
        """The run's engine on this device, its adapters kept in a temporary folder."""
        facts = facts or current_device_facts()
        folder = Path(tempfile.mkdtemp(prefix="opensir-vllm-"))
        dtype, mode = engine_dtype(args, facts), sync_mode(args, facts)
        state, base = None, None
        if mode == "merged" or (getattr(args, "vllm_base", "trained") == "trained" and is_quantized(policy)):
            logger.info("saving the base as the trainer holds it (%s) for vLLM in %s", dtype, folder / "base")
            state = base_state(policy, dtype)
            base = str(save_base(policy, tokenizer, folder / "base", state, dtype))
        config = engine_config(args, model_args, policy.config, facts, base)
        stop_ids = policy_stop_ids(policy, tokenizer)
        logger.info("starting vLLM on %s (%s, %s, %s sync)", config.model, config.dtype, facts.kind, mode)
        llm = build_llm(config, facts.kind)
        if mode == "merged":
            server = MergedServer(llm, folder / "weights", state, base)
        else:
            server = AdapterServer(llm, folder / "adapters")
        backend = cls(server, tokenizer, args, stop_ids, sleep=config.enable_sleep_mode, workdir=folder)
        if backend.sleep:
            llm.sleep(level=1)
        return backend

    def attach(self, trainer) -> None:
        """Make ``trainer`` correct for vLLM's sampling (see the module docstring). TRL reads ``use_vllm`` and
        ``vllm_generation`` only to sync weights before a rollout and to weigh the loss; the trainer was built
        without an engine of its own."""
        self.trainer = trainer
        trainer.use_vllm = True
        trainer.vllm_generation = self
        trainer._last_loaded_step = -1  # what TRL's __init__ sets beside its own engine: no step synced yet

    def sync_weights(self) -> None:
        """TRL's hook before a step's rollout: publish the policy's adapter of this step (once per step)."""
        trainer = self.trainer
        step = trainer.state.global_step
        if self.server.published_step != step:
            start = time.perf_counter()
            self.server.publish(trainer.accelerator.unwrap_model(trainer.model), step)
            self.sync_seconds += time.perf_counter() - start

    def take_sync_seconds(self) -> float:
        seconds, self.sync_seconds = self.sync_seconds, 0.0
        return seconds

    @contextmanager
    def round(self, trainer) -> Iterator[VLLMLoRASampler]:
        """The sampler of one round, from the adapter of the trainer's current step (woken from sleep mode and put
        back to sleep after the round where sleep mode is on)."""
        if self.trainer is None:
            self.trainer = trainer
        self.sync_weights()
        if self.sleep:
            self.server.llm.wake_up()
        try:
            yield VLLMLoRASampler(self.server, self.tokenizer, self.args, self.stop_ids)
        finally:
            if self.sleep:
                self.server.llm.sleep(level=1)

    def close(self) -> None:
        self.server.close()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
