"""Samplers: what a round samples its teacher and student completions from, passed in by the caller.

A sampler is called with prompt texts and a role and returns ``num_generations`` completions per prompt, in prompt
order; it carries the tokenizer that rendered the prompts and the model the program check writes with. Two ship:
:class:`TransformersSampler` (a model in this process: the policy, or the merged rollout copy of
:mod:`opensir_lite.training`) and :class:`VLLMSampler` (TRL's vLLM integration). Tests pass scripted ones.
"""

from __future__ import annotations

from typing import Any, Protocol

from opensir_lite.distributed import all_ranks
from opensir_lite.generation import Completion, SamplingSettings, generate, generate_with_vllm


class Sampler(Protocol):
    """``sampler(texts, role)``: ``num_generations`` completions per prompt text, in order."""

    tokenizer: Any
    model: Any

    def __call__(self, texts: list[str], role: str) -> list[Completion]: ...


def sampling_settings(args, role: str) -> SamplingSettings:
    """The sampling of a role: its token budget, and the configuration's one temperature, top_p, top_k, min_p and
    repetition_penalty (TRL scores completions at ``args.temperature``, so rollouts sample at it too)."""
    return SamplingSettings(
        max_new_tokens=getattr(args, f"{role}_max_new_tokens"),
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k or 0,
        min_p=getattr(args, "min_p", None) or 0.0,
        repetition_penalty=getattr(args, "repetition_penalty", 1.0) or 1.0,
    )


class TransformersSampler:
    """Samples with a transformers model in this process (:func:`opensir_lite.generation.generate`)."""

    def __init__(self, model, tokenizer, args):
        self.model, self.tokenizer, self.args = model, tokenizer, args

    def __call__(self, texts: list[str], role: str) -> list[Completion]:
        a = self.args
        return generate(
            self.model, self.tokenizer, texts, a.num_generations, sampling_settings(a, role), a.max_generate_batch,
            max_prompt_tokens=getattr(a, "max_prompt_length", None),
        )  # fmt: skip


class VLLMSampler:
    """Samples through TRL's vLLM integration (``trainer.vllm_generation``); ``model`` is the policy (the program
    check writes with it). In server mode a call is a collective: ranks with nothing to ask skip it together."""

    def __init__(self, vllm_generation, model, tokenizer, args):
        self.vllm_generation, self.model, self.tokenizer, self.args = vllm_generation, model, tokenizer, args

    def __call__(self, texts: list[str], role: str) -> list[Completion]:
        a = self.args
        if not any(all_ranks(len(texts))):
            return []
        return generate_with_vllm(
            self.vllm_generation, self.tokenizer, texts, a.num_generations, sampling_settings(a, role),
            max_prompt_tokens=getattr(a, "max_prompt_length", None),
        )  # fmt: skip
