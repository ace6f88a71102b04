"""Training: loads the policy (QLoRA, LoRA or full), builds TRL's GRPOTrainer with the self-play ``rollout_func``,
the six reward functions and a callback that writes ``metrics.jsonl``, ``pool.jsonl`` and checkpointed pools.

This is the only module that imports trl's trainer, peft and bitsandbytes.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

from opensir_lite.checkpointing import (
    EVIDENCE_FILE,
    METRICS_FILE,
    SELFPLAY_STATE_FILE,
    STOP_RULE_FILE,
    RunFolderError,
    checkpoint_step,
    load_checkpoint_state,
    prepare_output_dir,
    resolve_resume,
    save_selfplay_checkpoint,
    truncate_steps,
    write_run_config,
)
from opensir_lite.config import PolicyModelConfig, SelfPlayConfig
from opensir_lite.control import GoldControl
from opensir_lite.curves import read_metrics
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
from opensir_lite.pool import ProblemPool
from opensir_lite.rewards import make_gold_reward_funcs, make_reward_funcs
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
        return ProblemPool.from_jsonl(train_args.initial_pool_path, max_size=train_args.pool_max_size)
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
    Called with the trainer, it returns the synchronised copy (TRL's ``rollout_func`` hook, via SelfPlay).
    """

    def __init__(self, policy, attn_implementation: str | None = None, dtype: torch.dtype | None = None):
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
        dtype = dtype or next(p for n, p in policy.named_parameters() if "lora_" in n).dtype
        kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
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
        self.synced_step: int | None = None
        self.syncs = 0

    @torch.no_grad()
    def sync(self) -> None:
        """Copy W0 + the current LoRA delta of every adapted projection into the copy."""
        for name, layer in self.lora.items():
            target = self.model.get_submodule(name).weight
            delta = sum(layer.get_delta_weight(a) for a in layer.active_adapters if a in layer.lora_A)
            target.copy_(self.base_weights[name].to(delta.dtype) + delta)  # summed at the adapter's precision
        self.syncs += 1

    def __call__(self, trainer) -> torch.nn.Module:
        step = trainer.state.global_step
        if self.synced_step != step:  # weights only change at optimiser steps
            self.sync()
            self.synced_step = step
        return self.model


class SelfPlayCallback(TrainerCallback):
    """Per step: time the update, save the pool, print a one-line summary; per log: a ``metrics.jsonl`` line;
    per checkpoint: the pool and the self-play state inside the checkpoint folder, written *before* the trainer
    writes its own files there (so a checkpoint pushed to the Hub by ``hub_strategy`` carries the pool too).

    The label probe of step k reads the weights after k - 1 updates, so the step before a probe step is always
    checkpointed: the probe reading of step k chooses ``checkpoint-(k-1)`` (step 1's reading is the base). The
    pre-registered stop rule (``stop_rule_metrics``) ends the run with a checkpoint of the step that broke it."""

    def __init__(self, selfplay: SelfPlay, output_dir: str | Path, quiet: bool = False):
        self.selfplay = selfplay
        self.output_dir = Path(output_dir)
        self.quiet = quiet
        self._step_start = 0.0
        self._pending: list[dict[str, Any]] = []
        self._state: dict[str, Any] | None = None  # the self-play state gathered at the last save decision
        self._first: dict[str, Any] | None = None  # step 1's round metrics: the stop rule's reference

    def on_train_begin(self, args, state, control, **kwargs):
        metrics = self.output_dir / METRICS_FILE
        if state.global_step > 0 and metrics.is_file():  # a resumed run keeps its step 1 as the reference
            first = next((r for r in read_metrics(metrics) if r.get("step") == 1), None)
            self._first = first
        if state.is_world_process_zero:  # every rank holds the same pool; rank 0 writes the files
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self.selfplay.pool.save(self.output_dir)

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_start = time.perf_counter()
        self.selfplay.round_stats.clear()

    def on_step_end(self, args, state, control, **kwargs):
        step_time = time.perf_counter() - self._step_start
        rounds = list(self.selfplay.round_stats)
        self.selfplay.round_stats.clear()
        rollout = sum(r["time/rollout"] + r.get("time/probe", 0.0) for r in rounds)
        for r in rounds:
            r["time/update"] = max(0.0, step_time - rollout) / len(rounds)
            r["time/step"] = step_time / len(rounds)
        self._pending.extend(rounds)
        evidence = self.selfplay.take_evidence()
        probe = getattr(self.selfplay, "before_round", None)
        if (
            callable(getattr(probe, "due", None))
            and state.global_step < state.max_steps
            and probe.due(state.global_step + 1)
            and args.save_strategy != "no"
        ):
            control.should_save = True  # the next step's probe reads these weights: keep them as a checkpoint
        reason = self._stop_rule(args, state, rounds)
        if reason:  # the pre-registered stop rule: a checkpoint of this step, then the end of the run
            control.should_training_stop = True
            control.should_save = args.save_strategy != "no"
            for r in rounds:
                r["stop_rule_fired"] = 1
            if state.is_world_process_zero:
                (self.output_dir / STOP_RULE_FILE).write_text(
                    json.dumps({"step": state.global_step, "reason": reason}, indent=2) + "\n"
                )
            if not self.quiet:
                from tqdm.auto import tqdm

                tqdm.write(f"stop rule at step {state.global_step}: {reason}")
        if control.should_save:  # DefaultFlowCallback decided; the trainer saves next. A collective on all ranks:
            self._state = self.selfplay.state_dict()
        if state.is_world_process_zero:
            self.selfplay.pool.save(self.output_dir)
            if evidence:
                append_jsonl(self.output_dir / EVIDENCE_FILE, evidence)
            if control.should_save:
                self._save_selfplay(args, state)
        if rounds and not self.quiet:
            from tqdm.auto import tqdm

            tqdm.write(format_step_summary(state.global_step, state.max_steps, merge_round_stats(rounds)))

    def _stop_rule(self, args, state, rounds: list[dict[str, Any]]) -> str | None:
        metrics = list(getattr(args, "stop_rule_metrics", None) or [])
        if not rounds or not metrics:
            return None
        merged = merge_round_stats(rounds)
        if self._first is None:
            self._first = merged
            return None
        return stop_rule_reason(self._first, merged, metrics, getattr(args, "stop_rule_ratio", 0.5))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not self._pending:
            return
        row = {"step": state.global_step, **merge_round_stats(self._pending)}
        for k, v in (logs or {}).items():
            if isinstance(v, int | float) and math.isfinite(v):
                row[k] = v
        self._pending.clear()
        with open(self.output_dir / METRICS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def on_save(self, args, state, control, **kwargs):
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and checkpoint.is_dir() and not (checkpoint / SELFPLAY_STATE_FILE).is_file():
            self._save_selfplay(args, state)  # a save this callback did not see coming

    def _save_selfplay(self, args, state) -> None:
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if self._state is None:  # one process: no collective to fear
            self._state = self.selfplay.state_dict()
        save_selfplay_checkpoint(checkpoint, self.selfplay.pool, self._state)


def stop_rule_reason(first: dict[str, Any], current: dict[str, Any], metrics: list[str], ratio: float) -> str | None:
    """Why the stop rule fires (a metric below ``ratio`` x its step-1 value), or None. A metric missing or not
    finite in either step (no student answer at all, greedy rollouts without an entropy) does not fire."""
    for name in metrics:
        ref, now = first.get(name), current.get(name)
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in (ref, now)):
            continue
        if ref > 0 and now < ratio * ref:
            return f"{name} {now:.3g} < {ratio:g} x {ref:.3g} (step 1)"
    return None


def append_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append rows to a JSONL file and flush them to disk (a crash can cut at most the last line, which readers
    skip and a resume drops)."""
    import os

    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        f.flush()
        os.fsync(f.fileno())


def merge_round_stats(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Average per-round stats (histograms and counts of several rounds are summed; sizes keep the last)."""
    if len(rounds) == 1:
        return dict(rounds[0])
    merged: dict[str, Any] = {}
    keys = {k for r in rounds for k in r}
    for k in sorted(keys):
        values = [r[k] for r in rounds if r.get(k) is not None]
        if not values:
            merged[k] = None
        elif isinstance(values[0], list):
            merged[k] = [int(x) for x in np.sum(values, axis=0)]
        elif k in ("pool_size",):
            merged[k] = values[-1]
        elif k.startswith(("time/", "illegal/", "degenerate/")) or k.endswith(("_tokens", "_outputs", "_problems")):
            merged[k] = float(np.sum(values))
        else:
            merged[k] = float(np.mean(values))
    return merged


def format_step_summary(step: int, max_steps: int, s: dict[str, Any]) -> str:
    def f(v, spec=".2f"):
        return "-" if v is None else format(v, spec)

    return (
        f"step {step}/{max_steps} | legal {s['legal_problems']}/{s['teacher_outputs']} | "
        f"solve {f(s['solve_rate_mean'])} | novelty {f(s['novelty_mean'])} | pool {s['pool_size']} | "
        f"gen T {s['time/teacher_generation']:.1f}s S {s['time/student_generation']:.1f}s | "
        f"update {s.get('time/update', 0.0):.1f}s | tokens {s['tokens_generated']}"
    )


def build_trainer(
    train_args: SelfPlayConfig,
    model_args: PolicyModelConfig,
    pool: ProblemPool | None = None,
    embedder=None,
    quiet: bool = False,
):
    """(trainer, selfplay): a ready GRPOTrainer whose rollouts are OpenSIR rounds."""
    from datasets import Dataset

    model, tokenizer, peft_config = load_policy(model_args, train_args)  # model problems surface first
    try:
        from trl import GRPOTrainer
    except (ImportError, RuntimeError) as e:  # e.g. a bitsandbytes install that is broken on this machine
        message = str(e).strip().splitlines()
        raise TrainingSetupError(f"cannot import TRL's GRPOTrainer: {message[-1] if message else e}") from None
    if train_args.method == "gold":
        selfplay = build_gold_control(train_args, pool)
        reward_funcs = make_gold_reward_funcs()
    else:
        pool = pool if pool is not None else load_pool(train_args)
        embedder = embedder if embedder is not None else Embedder(train_args.embedder_name_or_path)
        selfplay = SelfPlay(train_args, pool, embedder)
        reward_funcs = make_reward_funcs(
            lower=train_args.solve_rate_lower,
            upper=train_args.solve_rate_upper,
            num_generations=train_args.num_generations,
            length_cap=train_args.response_length_cap,
            length_baseline=train_args.response_length_baseline,
            format_credit=train_args.teacher_format_credit,
        )
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
            rollout_func=selfplay,
            callbacks=[SelfPlayCallback(selfplay, train_args.output_dir, quiet=quiet)],
        )
    device, dtype = current_device_dtype()
    if (model_args.load_in_4bit or model_args.load_in_8bit) and dtype != torch.bfloat16:
        # TRL casts QLoRA adapters to bf16; without native bf16 (CPU, T4) train them in fp32 instead.
        for param in trainer.model.parameters():
            if param.requires_grad:
                param.data = param.data.float()
    if train_args.probe_every:
        from opensir_lite.probe import LabelProbe

        selfplay.before_round = LabelProbe(train_args)
    if train_args.rollout_model == "merged":
        selfplay.rollout_model = MergedRolloutModel(
            trainer.accelerator.unwrap_model(trainer.model),
            attention_for(device, model_args.attn_implementation),
            dtype=rollout_dtype(train_args.rollout_dtype),
        )
    return trainer, selfplay


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
    trainer, selfplay: SelfPlay, train_args: SelfPlayConfig, resume_from_checkpoint: str | Path | None = None
) -> Path:
    """Train (from a checkpoint folder when given), then save the adapter (or model) and the final pool into
    ``output_dir``."""
    output_dir = Path(train_args.output_dir)
    allow_indexed_cpu_locations()
    trainer.train(resume_from_checkpoint=str(resume_from_checkpoint) if resume_from_checkpoint else None)
    trainer.save_model(str(output_dir))
    if trainer.accelerator.is_main_process:
        selfplay.pool.save(output_dir)
    return output_dir


_INDEXED_CPU_REGISTERED = False


def _indexed_cpu_storage(storage, location: str):
    """torch.load deserializer for the location "cpu:N" (None for every other location)."""
    return storage if location.startswith("cpu:") else None


def allow_indexed_cpu_locations() -> None:
    """Let ``torch.load`` accept ``map_location="cpu:0"``: with several CPU processes transformers resumes the
    optimizer state onto ``args.device``, which accelerate names ``cpu:0``, and torch only knows ``cpu``. Registered
    through torch's public ``register_package`` (idempotent)."""
    global _INDEXED_CPU_REGISTERED
    import torch.serialization as serialization

    if not _INDEXED_CPU_REGISTERED:
        serialization.register_package(30, lambda obj: None, _indexed_cpu_storage)
        _INDEXED_CPU_REGISTERED = True


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
    trainer, selfplay = build_trainer(train_args, model_args, pool=pool, embedder=embedder, quiet=quiet)
    if state is not None:
        selfplay.load_state_dict(state)
    return run_training(trainer, selfplay, train_args, resume_from_checkpoint=resume)
