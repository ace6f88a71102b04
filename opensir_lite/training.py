"""Training: loads the policy (QLoRA, LoRA or full), builds TRL's GRPOTrainer with the round source (self-play or
the gold control) behind the one ``rollout_func`` adapter (:mod:`opensir_lite.rollout`), the reward functions and the
callbacks of :mod:`opensir_lite.callbacks` (``metrics.jsonl``, ``pool.jsonl``, evidence, checkpointed pools).

This is the only module that imports trl's trainer, peft and bitsandbytes.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch

from opensir_lite.callbacks import training_callbacks
from opensir_lite.checkpointing import (
    EVIDENCE_FILE,
    METRICS_FILE,
    RunFolderError,
    allow_indexed_cpu_locations,
    checkpoint_step,
    load_checkpoint_state,
    prepare_output_dir,
    resolve_resume,
    truncate_steps,
    write_run_config,
)
from opensir_lite.config import PolicyModelConfig, SelfPlayConfig
from opensir_lite.control import GoldControl
from opensir_lite.embedding import Embedder
from opensir_lite.models import (
    ModelLoadError,
    attention_for,
    current_device_dtype,
    from_pretrained,
    load_tokenizer,
    require_bitsandbytes,
    resolve_model_path,
)
from opensir_lite.pool import ProblemPool, resolve_pool_path
from opensir_lite.rewards import make_gold_reward_funcs, make_reward_funcs
from opensir_lite.rollout import Rollout, RoundSource
from opensir_lite.runtime import isolation_problem
from opensir_lite.selfplay import SelfPlay

logger = logging.getLogger(__name__)

__all__ = [
    "METRICS_FILE",
    "ModelLoadError",
    "RunFolderError",
    "TrainingSetupError",
    "build_trainer",
    "run_training",
    "train",
]

ROUND_PLACEHOLDER_PROMPT = (
    "opensir self-play round"  # the dataset rows only pace the trainer; prompts are built per round
)


class FillerRowWarningFilter(logging.Filter):
    """Drops TRL's per-step warning "All reward functions returned None" for our filler rows: they are the
    zero-weight student rows of a round with too few answered problems, by design, and are counted in metrics
    (``filler_groups``) instead of alarming users at every step."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "All reward functions returned None" not in str(record.msg)  # accelerate prefixes "[RANK n] "


def silence_filler_row_warnings() -> None:
    """Install :class:`FillerRowWarningFilter` on TRL's GRPO trainer logger (idempotent)."""
    trl_logger = logging.getLogger("trl.trainer.grpo_trainer")
    if not any(isinstance(f, FillerRowWarningFilter) for f in trl_logger.filters):
        trl_logger.addFilter(FillerRowWarningFilter())


class TrainingSetupError(RuntimeError):
    """The run cannot start (model, quantisation or pool problem); the message says which."""


def load_policy(model_args: PolicyModelConfig, train_args: SelfPlayConfig):
    """(model, tokenizer, peft_config) for QLoRA (4-bit NF4 + LoRA), LoRA or full fine-tuning."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(model_args.model_name_or_path)
    device, dtype = current_device_dtype()
    if model_args.dtype not in (None, "auto"):
        dtype = getattr(torch, model_args.dtype)
    tokenizer = load_tokenizer(path, trust_remote_code=train_args.trust_remote_code, revision=model_args.model_revision)
    kwargs: dict[str, Any] = {
        "dtype": dtype,
        "trust_remote_code": train_args.trust_remote_code,
        "revision": model_args.model_revision,
    }
    attn = attention_for(device, model_args.attn_implementation)
    if attn:
        kwargs["attn_implementation"] = attn
    quantized = model_args.load_in_4bit or model_args.load_in_8bit
    if quantized:
        if not model_args.use_peft:
            raise TrainingSetupError("load_in_4bit/load_in_8bit trains an adapter: set use_peft true (QLoRA)")
        require_bitsandbytes(device)
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=model_args.load_in_4bit,
            load_in_8bit=model_args.load_in_8bit,
            bnb_4bit_quant_type=model_args.bnb_4bit_quant_type,
            bnb_4bit_use_double_quant=model_args.use_bnb_nested_quant,
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_quant_storage=model_args.bnb_4bit_quant_storage,
        )
        kwargs["device_map"] = {"": torch.cuda.current_device() if device == "cuda" else "cpu"}
    model = from_pretrained(AutoModelForCausalLM, path, **kwargs)
    if quantized:
        keep_4bit_weights_unpacked(model)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    peft_config = None
    if model_args.use_peft:
        from peft import prepare_model_for_kbit_training
        from trl import get_peft_config

        if quantized:
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=train_args.gradient_checkpointing)
        peft_config = get_peft_config(model_args)
    return model, tokenizer, peft_config


def load_policy_with_adapter(model_args: PolicyModelConfig, train_args: SelfPlayConfig):
    """(PEFT model, tokenizer): the policy as the trainer wraps it (QLoRA/LoRA), outside a trainer (benchmarks)."""
    model, tokenizer, peft_config = load_policy(model_args, train_args)
    if peft_config is None:
        return model, tokenizer
    from peft import get_peft_model

    model = get_peft_model(model, peft_config)
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.float()
    return model, tokenizer


def keep_4bit_weights_unpacked(model) -> int:
    """Turn off bitsandbytes' CPU inference packing on every 4-bit layer of a model that trains.

    On CPUs with AVX512-BF16, bitsandbytes repacks a 4-bit weight at its first eval-mode forward (as sampling
    makes) for a bf16 kernel, and then serves every later forward, training ones included, from it: bf16 compute and
    bf16 block scales, and no gradient through that kernel. Off, eval and training forwards compute the same fp32
    function, so sampled rollouts come from the policy GRPO scores. Returns the number of layers changed."""
    changed = 0
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
            changed += 1
    return changed


def load_pool(train_args: SelfPlayConfig) -> ProblemPool:
    """The initial pool: a pool file when given, else the single seed problem."""
    if train_args.initial_pool_path:
        path = resolve_pool_path(train_args.initial_pool_path)
        if not path.is_file():
            raise TrainingSetupError(
                f"initial_pool_path {path} does not exist: make it first (python scripts/seed_pool.py --config "
                f"{train_args.recipe or 'RECIPE'} --n_problems 512 --output {path}; the recipe's header says how)"
            )
        return ProblemPool.from_jsonl(path, max_size=train_args.pool_max_size)
    return ProblemPool.from_seed(train_args.seed_problem, max_size=train_args.pool_max_size)


class MergedRolloutModel:
    """A plain copy of a LoRA policy for sampling rollouts fast: the base weights once (de-quantised when the base is
    4-bit), plus the current LoRA deltas merged in whenever the policy has taken an optimiser step.

    On a CPU, bitsandbytes de-quantises every 4-bit projection at every decoding step and LoRA adds two small
    matrix products per projection; the copy decodes as a plain model (with ``sdpa_grouped`` attention) instead.
    Its weights are W0 + scaling * B @ A, the function PEFT's forward computes as W0 x + scaling * B (A x), so its
    samples come from the policy GRPO scores (tests/test_training.py compares the log-probabilities). LoRA dropout
    is off in the copy, as it is in eval mode; set lora_dropout 0 for the scored policy to match exactly.
    ``dtype`` (default: the adapter's) may be lower than the policy's: a bf16 copy decodes about twice as fast on a
    CPU with AMX/AVX512-BF16, and samples from the policy up to bf16 rounding (as a vLLM sampler does on a GPU;
    docs/benchmarks.md measures the gap).
    Called with the trainer, it returns the synchronised copy (the ``rollout_model`` of the rollout adapter); built
    without a policy, it copies the trainer's policy at that first call (when the trainer has wrapped and cast it).
    """

    def __init__(self, policy=None, attn_implementation: str | None = None, dtype: torch.dtype | None = None):
        self.attn_implementation, self.dtype = attn_implementation, dtype
        self.model = None
        self.synced_step: int | None = None
        self.syncs = 0
        if policy is not None:
            self._build(policy)

    def _build(self, policy) -> None:
        from peft.tuners.lora import LoraLayer
        from peft.utils.integrations import dequantize_bnb_weight
        from transformers import AutoModelForCausalLM

        base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
        self.lora = {name: m for name, m in base.named_modules() if isinstance(m, LoraLayer)}
        if not self.lora:
            raise TrainingSetupError("rollout_model 'merged' needs a LoRA policy (use_peft true)")
        trainable = [n for n, p in policy.named_parameters() if p.requires_grad and "lora_" not in n]
        if trainable:
            raise TrainingSetupError(f"rollout_model 'merged' copies LoRA weights only; also trained: {trainable[0]}")
        config = copy.deepcopy(base.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        dtype = self.dtype or next(p for n, p in policy.named_parameters() if "lora_" in n).dtype
        kwargs = {"attn_implementation": self.attn_implementation} if self.attn_implementation else {}
        self.model = AutoModelForCausalLM.from_config(config, dtype=dtype, **kwargs)
        self.model.generation_config = copy.deepcopy(base.generation_config)
        self.model.to(next(p for n, p in policy.named_parameters() if "lora_" in n).device).eval()
        self.model.requires_grad_(False)
        self.base_weights: dict[str, torch.Tensor] = {}  # W0 of each LoRA-wrapped projection, de-quantised
        with torch.no_grad():
            for name, param in self.model.named_parameters():
                module_name, _, attr = name.rpartition(".")
                source = base.get_submodule(module_name)
                if module_name in self.lora:
                    source = source.get_base_layer()
                value = getattr(source, attr)
                if getattr(getattr(value, "quant_state", None), "packing_format_for_cpu", False):
                    raise TrainingSetupError(
                        f"{module_name}: bitsandbytes repacked this 4-bit weight for CPU inference; load the policy "
                        "with keep_4bit_weights_unpacked (load_policy does) before it first runs in eval mode"
                    )
                if attr == "weight" and hasattr(value, "quant_state"):  # bitsandbytes Params4bit
                    value = dequantize_bnb_weight(value, value.quant_state)
                param.copy_(value.to(param.dtype))
                if module_name in self.lora and attr == "weight":
                    self.base_weights[module_name] = param.detach().clone()

    @torch.no_grad()
    def sync(self) -> None:
        """Copy W0 + the current LoRA delta of every adapted projection into the copy."""
        for name, layer in self.lora.items():
            target = self.model.get_submodule(name).weight
            delta = sum(layer.get_delta_weight(a) for a in layer.active_adapters if a in layer.lora_A)
            target.copy_(self.base_weights[name].to(delta.dtype) + delta)  # summed at the adapter's precision
        self.syncs += 1

    def __call__(self, trainer) -> torch.nn.Module:
        if self.model is None:
            self._build(trainer.accelerator.unwrap_model(trainer.model))
        step = trainer.state.global_step
        if self.synced_step != step:  # weights only change at optimiser steps
            self.sync()
            self.synced_step = step
        return self.model


def build_source(train_args: SelfPlayConfig, pool: ProblemPool | None = None, embedder=None) -> RoundSource:
    """The round source of the run's ``method``: self-play (from ``pool``, else the recipe's initial pool) or the
    gold-label control."""
    if train_args.method == "gold":
        return build_gold_control(train_args, pool)
    pool = pool if pool is not None else load_pool(train_args)
    embedder = embedder if embedder is not None else Embedder(train_args.embedder_name_or_path)
    return SelfPlay(train_args, pool, embedder)


def build_trainer(
    train_args: SelfPlayConfig,
    model_args: PolicyModelConfig,
    pool: ProblemPool | None = None,
    embedder=None,
    quiet: bool = False,
    vllm_lora=None,
):
    """(trainer, rollout): a ready GRPOTrainer whose rollouts are rounds of the run's source. ``vllm_lora``: the
    engine of ``generation_backend: vllm_lora`` (default: started here for the policy)."""
    from datasets import Dataset

    if train_args.runs_programs:  # before the model loads: the program check needs an isolating sandbox
        reason = isolation_problem(train_args)
        if reason:
            raise TrainingSetupError(reason)
    model, tokenizer, peft_config = load_policy(model_args, train_args)  # model problems surface first
    try:
        from trl import GRPOTrainer
    except (ImportError, RuntimeError) as e:  # e.g. a bitsandbytes install that is broken on this machine
        message = str(e).strip().splitlines()
        raise TrainingSetupError(f"cannot import TRL's GRPOTrainer: {message[-1] if message else e}") from None
    source = build_source(train_args, pool, embedder)
    reward_funcs = make_gold_reward_funcs() if train_args.method == "gold" else make_reward_funcs()
    device, _ = current_device_dtype()
    probe = None
    if train_args.probe_every:
        from opensir_lite.probe import LabelProbe

        probe = LabelProbe(train_args)
    merged = None
    if train_args.rollout_model == "merged":  # built from the trainer's policy at the first round
        merged = MergedRolloutModel(None, attention_for(device, model_args.attn_implementation),
                                    rollout_dtype(train_args.rollout_dtype))  # fmt: skip
    if vllm_lora is None and train_args.generation_backend == "vllm_lora":  # before the trainer takes more memory
        from opensir_lite.vllm_backend import VLLMLoRABackend
        from opensir_lite.vllm_engine import VLLMError

        try:
            vllm_lora = VLLMLoRABackend.for_run(train_args, model_args, model, tokenizer)
        except VLLMError as e:
            raise TrainingSetupError(f"generation_backend vllm_lora: {e}") from None
    rollout = Rollout(source, rollout_model=merged, before_round=probe, vllm_lora=vllm_lora)
    # One placeholder prompt per group of one round on every process: TRL's sampler hands each rank its share.
    rows = train_args.rows_per_round // train_args.num_generations * train_args.world_size
    dataset = Dataset.from_dict({"prompt": [ROUND_PLACEHOLDER_PROMPT] * rows})
    import warnings

    silence_filler_row_warnings()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*rollout_func.*experimental.*")
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=reward_funcs,
            args=train_args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            rollout_func=rollout,
            callbacks=training_callbacks(rollout, train_args.output_dir, quiet=quiet),
        )
    trainable_to_fp32(trainer.model, deepspeed=trainer.is_deepspeed_enabled)
    if vllm_lora is not None:
        vllm_lora.attach(trainer)
    return trainer, rollout


def trainable_to_fp32(model, deepspeed: bool = False) -> int:
    """Keep every trainable parameter in fp32 (returns how many were cast). TRL casts QLoRA adapters to bf16, and a
    LoRA on a 16-bit base may start in it: at LoRA learning rates most Adam steps of ``lora_A`` are below half a
    bf16 spacing and round away. Mixed precision still computes in bf16/fp16 under autocast. Under DeepSpeed
    nothing is cast: its optimiser keeps fp32 master weights itself, and ZeRO-3 needs one dtype per partition."""
    if deepspeed:
        return 0
    cast = 0
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
            cast += 1
    return cast


def rollout_dtype(name: str | None) -> torch.dtype | None:
    """The torch dtype of ``rollout_dtype`` (None for ``auto``: the adapter's)."""
    return None if name in (None, "auto") else getattr(torch, name)


def build_gold_control(train_args: SelfPlayConfig, pool: ProblemPool | None = None) -> GoldControl:
    """The gold-label control's rollout: the labelled training rows of ``gold_benchmark`` (outside every seed-0
    evaluation subset of up to ``gold_holdout`` rows and outside the probe), and the problems of a resumed run."""
    from opensir_lite.evaluation.benchmarks import BenchmarkError, load_items, training_items

    try:
        bench, items, _ = load_items(train_args.gold_benchmark, train_args.gold_data_dir)
        rows = training_items(items, bench, train_args.gold_holdout)
    except BenchmarkError as e:
        raise TrainingSetupError(f"gold control: {e}") from None
    control = GoldControl(train_args, rows)
    if pool is not None:
        control.pool = pool
    return control


def run_training(
    trainer, rollout: Rollout, train_args: SelfPlayConfig, resume_from_checkpoint: str | Path | None = None
) -> Path:
    """Train (from a checkpoint folder when given), then save the adapter (or model) and the final pool into
    ``output_dir``."""
    output_dir = Path(train_args.output_dir)
    allow_indexed_cpu_locations()
    try:
        trainer.train(resume_from_checkpoint=str(resume_from_checkpoint) if resume_from_checkpoint else None)
    finally:
        if rollout.vllm_lora is not None:
            rollout.vllm_lora.close()
    trainer.save_model(str(output_dir))
    if trainer.accelerator.is_main_process:
        rollout.pool.save(output_dir)
    return output_dir


def _wait_for_all_ranks() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def run_config(train_args: SelfPlayConfig, model_args: PolicyModelConfig) -> dict[str, Any]:
    """The resolved configuration as JSON-ready dicts (tokens are masked by ``to_dict``; none is accepted anyway)."""
    from dataclasses import asdict

    return {"recipe": train_args.recipe, "model": asdict(model_args), "training": train_args.to_dict()}


def train(train_args: SelfPlayConfig, model_args: PolicyModelConfig, embedder=None, quiet: bool = False) -> Path:
    """Run self-play training; returns the output folder (adapter, pool.jsonl, metrics.jsonl, checkpoints).

    A new run refuses an ``output_dir`` that holds another run unless ``overwrite_output_dir``. With
    ``resume_from_checkpoint`` (a checkpoint folder, or ``true`` for the latest complete one) the run continues
    with the checkpoint's adapter, optimizer, scheduler, RNG states, step, pool and sampling stream, and
    ``metrics.jsonl`` is cut back to the checkpoint's step."""
    from transformers import set_seed

    output_dir = Path(train_args.output_dir)
    resume = resolve_resume(train_args.resume_from_checkpoint, output_dir)
    main_process = train_args.process_index == 0  # several processes: rank 0 prepares the folder, all read it
    pool, state = None, None
    if resume is None:
        if main_process:
            prepare_output_dir(output_dir, train_args.overwrite_output_dir)
    else:
        pool, state = load_checkpoint_state(resume, max_size=train_args.pool_max_size)
        if main_process:
            for name in (METRICS_FILE, EVIDENCE_FILE):  # per-step files continue from the checkpoint's step
                truncate_steps(output_dir / name, checkpoint_step(resume) or 0)
        logger.info("resuming from %s (pool of %d problems)", resume, len(pool))
    if main_process:
        write_run_config(output_dir, run_config(train_args, model_args))
    _wait_for_all_ranks()
    set_seed(train_args.seed)  # LoRA initialisation and sampling are reproducible from the seed
    trainer, rollout = build_trainer(train_args, model_args, pool=pool, embedder=embedder, quiet=quiet)
    if state is not None:
        rollout.load_state_dict(state)
    return run_training(trainer, rollout, train_args, resume_from_checkpoint=resume)
