"""The one TRL ``rollout_func`` adapter: plays a round of a source (self-play or the gold control) per call.

A source implements :class:`RoundSource`: ``play(sampler, step, use_system_prompt) -> Round`` and the state a
checkpoint keeps. :class:`Rollout` is what ``GRPOTrainer(rollout_func=...)`` calls: it checks the number of rows
TRL expects, opens the round's sampler (:meth:`Rollout.sampling`: the policy or the merged copy with transformers,
TRL's vLLM integration with ``generation_backend: vllm``, or the adapter-serving engine with ``vllm_lora``), runs the
optional ``before_round`` hook (the label probe of :mod:`opensir_lite.probe`) with that sampler, plays the round,
measures how far the sampler's log-probabilities are from the trained policy's when it returns them
(:func:`sampling_gap`), and keeps the round's metrics in ``round_stats`` for the training callbacks.

With transformers sampling every model forward of the round runs inside TRL's ``unwrap_model_for_generation`` with
the parameters gathered: under DeepSpeed ZeRO-3 each forward is otherwise a collective, and ranks run different
numbers of them (the compacting decoder stops when its rows end; a rank without a legal problem asks no student), so
they would wait on each other for ever. Everything it needs is passed in when it is built.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import torch

from opensir_lite.pool import ProblemPool
from opensir_lite.prompts import supports_system_prompt
from opensir_lite.round import Round
from opensir_lite.sampling import Sampler, TransformersSampler, VLLMSampler


class RoundSource(Protocol):
    """What the rollout adapter plays: self-play (:class:`opensir_lite.selfplay.SelfPlay`) or the gold control
    (:class:`opensir_lite.control.GoldControl`)."""

    args: Any
    pool: ProblemPool
    rows_per_round: int

    def play(self, sample: Sampler, step: int, use_system_prompt: bool) -> Round: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def take_evidence(self) -> list[dict[str, Any]]: ...


def generation_context(trainer):
    """TRL's ``unwrap_model_for_generation`` with the ZeRO-3 parameters gathered (the unwrapped policy otherwise)."""
    from trl.models import unwrap_model_for_generation

    return unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator, gather_deepspeed3_params=True)


class Rollout:
    """TRL's ``rollout_func``: ``rollout(prompts, trainer)`` plays one round of ``source`` and returns its rows.

    ``rollout_model`` maps the trainer to the model that samples with transformers (default: the unwrapped policy;
    :class:`opensir_lite.training.MergedRolloutModel` is the fast copy); ``vllm_lora`` is the adapter-serving
    backend (:class:`opensir_lite.vllm_backend.VLLMLoRABackend`); ``before_round`` is called with
    ``(sampler, step, use_system_prompt)`` before each round and its dict joins the round's metrics."""

    def __init__(
        self,
        source: RoundSource,
        rollout_model: Callable[[Any], Any] | None = None,
        before_round: Callable[..., dict[str, Any]] | None = None,
        vllm_lora=None,
    ):
        self.source = source
        self.args = source.args
        self.rollout_model = rollout_model
        self.before_round = before_round
        self.vllm_lora = vllm_lora
        self.use_system_prompt: bool | None = source.args.use_system_prompt
        self.round_stats: list[dict[str, Any]] = []  # metrics of rounds not yet logged (the callbacks take them)

    @property
    def pool(self) -> ProblemPool:
        return self.source.pool

    def state_dict(self) -> dict[str, Any]:
        """The source's state and the system-prompt decision (a collective on several processes)."""
        return {**self.source.state_dict(), "use_system_prompt": self.use_system_prompt}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.source.load_state_dict(state)
        self.use_system_prompt = state.get("use_system_prompt", self.use_system_prompt)

    def take_evidence(self) -> list[dict[str, Any]]:
        return self.source.take_evidence()

    @contextmanager
    def sampling(self, trainer) -> Iterator[Sampler]:
        """The round's sampler, open for the round (see the module docstring)."""
        backend = getattr(self.args, "generation_backend", "transformers")
        if backend == "vllm_lora":
            with self.vllm_lora.round(trainer) as sample:
                yield sample
            return
        with generation_context(trainer) as policy:
            model = self.rollout_model(trainer) if self.rollout_model is not None else policy
            if backend == "vllm":
                yield VLLMSampler(trainer.vllm_generation, model, trainer.processing_class, self.args)
            else:
                yield TransformersSampler(model, trainer.processing_class, self.args)

    def __call__(self, prompts: list, trainer) -> dict[str, list]:
        expected = self.source.rows_per_round
        if len(prompts) != expected:
            raise ValueError(
                f"rollout received {len(prompts)} rows but a round makes {expected} "
                "((num_teacher_groups + num_student_groups) * num_generations) on each process; "
                "leave generation_batch_size and steps_per_generation unset"
            )
        step = trainer.state.global_step + 1
        with self.sampling(trainer) as sample:
            if self.use_system_prompt is None:
                self.use_system_prompt = supports_system_prompt(sample.tokenizer)
            extra = {}
            if self.before_round is not None:
                extra = self.before_round(sample, step, self.use_system_prompt)
            rnd = self.source.play(sample, step, self.use_system_prompt)
        rnd.stats.update(extra)
        if self.vllm_lora is not None:
            rnd.stats["time/vllm_sync"] = self.vllm_lora.take_sync_seconds()
        corrected = bool(getattr(trainer, "use_vllm", False)) and trainer.args.vllm_importance_sampling_correction
        if corrected and rnd.logprobs is None:
            raise RuntimeError(
                "TRL's importance-sampling correction is on but the round's sampler returned no log-probabilities"
            )
        every = int(getattr(self.args, "sampling_gap_every", 0) or 0)
        if rnd.logprobs is not None and every and (step == 1 or step % every == 0):
            policy = trainer.accelerator.unwrap_model(trainer.model)
            start = time.perf_counter()
            rnd.stats.update(sampling_gap(policy, rnd.rows, rnd.logprobs, trainer.args, trainer.processing_class))
            rnd.stats["time/sampling_gap"] = time.perf_counter() - start
        self.round_stats.append(rnd.stats)
        return {**rnd.rows, "logprobs": rnd.logprobs}


@torch.no_grad()
def policy_logprobs(model, prompt_ids: list[list[int]], completion_ids: list[list[int]], temperature: float,
                    pad_id: int, batch: int = 4) -> list[list[float]]:  # fmt: skip
    """The policy's log-probability of each completion token after temperature (TRL's scoring: logits of the
    position before each token, divided by the temperature), in batches of ``batch`` rows, in eval mode."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[list[float]] = []
    try:
        for start in range(0, len(prompt_ids), batch):
            prompts, completions = prompt_ids[start : start + batch], completion_ids[start : start + batch]
            p_width = max(len(p) for p in prompts)
            width = p_width + max(len(c) for c in completions)
            ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(prompts), width), dtype=torch.long)
            for row, (p, c) in enumerate(zip(prompts, completions, strict=True)):
                ids[row, p_width - len(p) : p_width + len(c)] = torch.tensor(list(p) + list(c))
                mask[row, p_width - len(p) : p_width + len(c)] = 1
            positions = (mask.cumsum(-1) - 1).clamp_min(0)
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                           position_ids=positions.to(device)).logits.float()  # fmt: skip
            logps = torch.log_softmax(logits[:, p_width - 1 : -1] / temperature, dim=-1)
            targets = ids[:, p_width:].to(device)
            picked = logps.gather(-1, targets.unsqueeze(-1)).squeeze(-1).cpu()
            out.extend(picked[row, : len(c)].tolist() for row, c in enumerate(completions))
    finally:
        model.train(was_training)
    return out


def is_weights(diffs: list[float], mode: str, clip_min: float | None, clip_max: float | None) -> list[float]:
    """TRL's importance-sampling weights of one sequence's tokens from ``diffs`` (policy minus sampler
    log-probability per token; a missing sampler value counts as 0): per token or per sequence, clipped
    (``*_truncate``) or zeroed outside the range (``*_mask``), as ``GRPOTrainer`` computes them."""
    low = -math.inf if clip_min is None else clip_min
    high = math.inf if clip_max is None else clip_max
    values = [sum(diffs)] * len(diffs) if mode.startswith("sequence") else list(diffs)
    ratios = [math.exp(min(v, 700.0)) for v in values]
    if mode.endswith("truncate"):
        return [min(max(r, low), high) for r in ratios]
    return [0.0 if r < low or r > high else r for r in ratios]


def sampling_gap(policy, rows: dict[str, list], logprobs: list[list[float | None]], args, tokenizer) -> dict[str, Any]:
    """How far the sampler's policy is from the trained one on a round's rows: the mean |log p_policy - log
    p_sampler| over the tokens that train (``env_mask``), the share of those tokens (and of the sequences) whose
    importance weight TRL sets to 0 under ``vllm_importance_sampling_mode``, and the share it clips."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scored = [i for i, m in enumerate(rows["env_mask"]) if any(m) and rows["completion_ids"][i]]
    if not scored:
        return {}
    batch = max(1, int(getattr(args, "per_device_train_batch_size", 4) or 4))
    mine = policy_logprobs(policy, [rows["prompt_ids"][i] for i in scored], [rows["completion_ids"][i] for i in scored],
                           float(args.temperature), pad_id, batch)  # fmt: skip
    mode = getattr(args, "vllm_importance_sampling_mode", "sequence_mask")
    clip_min = getattr(args, "vllm_importance_sampling_clip_min", None)
    clip_max = getattr(args, "vllm_importance_sampling_clip_max", 3.0)
    gaps, masked, clipped, seq_masked = [], 0, 0, 0
    for i, policy_row in zip(scored, mine, strict=True):
        keep = [bool(m) for m in rows["env_mask"][i]]
        diffs = [p - s if s is not None else 0.0 for p, s in zip(policy_row, logprobs[i], strict=True)]
        weights = is_weights([d for d, k in zip(diffs, keep, strict=True) if k], mode, clip_min, clip_max)
        ratios = [math.exp(min(d, 700.0)) for d, k in zip(diffs, keep, strict=True) if k]
        gaps += [abs(p - s) for p, s, k in zip(policy_row, logprobs[i], keep, strict=True) if k and s is not None]
        masked += sum(w == 0.0 for w in weights)
        clipped += (
            sum(w != r and w != 0.0 for w, r in zip(weights, ratios, strict=True)) if mode.endswith("truncate") else 0
        )
        seq_masked += int(bool(weights) and all(w == 0.0 for w in weights))
    tokens = sum(sum(bool(m) for m in rows["env_mask"][i]) for i in scored)
    return {
        "sampling/logp_gap_mean": float(sum(gaps) / len(gaps)) if gaps else None,
        "sampling/masked_token_share": masked / tokens if tokens else None,
        "sampling/masked_sequence_share": seq_masked / len(scored),
        "sampling/clipped_token_share": clipped / tokens if tokens else None,
    }
