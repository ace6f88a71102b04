"""Samplers: what a round samples its teacher and student completions from, passed in by the caller.

A sampler is called with prompt texts and a role and returns ``num_generations`` completions per prompt, in prompt
order; ``sampler.generate(texts, n, settings, sample_seeds)`` samples with any other settings (the program check's
greedy programs, the label probe's seeded answers), so everything a round samples comes from one sampler. It carries
the tokenizer that rendered the prompts. Three ship:

- :class:`TransformersSampler`: a model in this process (the policy, or the merged rollout copy of
  :mod:`opensir_lite.training`), the package's compacting decoder.
- :class:`VLLMLoRASampler`: a vLLM engine in this process serving the policy's current LoRA adapter
  (``generation_backend: vllm_lora``, :mod:`opensir_lite.vllm_engine`); completions carry vLLM's log-probabilities.
- :class:`VLLMSampler`: TRL's vLLM integration (``generation_backend: vllm``: a ``trl vllm-serve`` server or a
  colocated engine whose weights TRL keeps equal to the policy's); completions carry vLLM's log-probabilities.

Tests pass scripted ones.
"""

from __future__ import annotations

from typing import Any, Protocol

from opensir_lite.distributed import all_ranks
from opensir_lite.generation import Completion, SamplingSettings, eos_token_ids, generate, generate_with_vllm


class Sampler(Protocol):
    """``sampler(texts, role)``: ``num_generations`` completions per prompt text, in order; ``sampler.generate``:
    ``num_samples`` completions per prompt with the given settings (and per-completion seeds, where given)."""

    tokenizer: Any

    def __call__(self, texts: list[str], role: str) -> list[Completion]: ...

    def generate(
        self, texts: list[str], num_samples: int, sampling: SamplingSettings, sample_seeds: list[int] | None = None
    ) -> list[Completion]: ...


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


def encode_prompts(tokenizer, texts: list[str], max_prompt_tokens: int | None) -> list[list[int]]:
    """Prompt texts (already chat-templated) as token ids, no special tokens added, cut to the last
    ``max_prompt_tokens`` (as the transformers decoder cuts them)."""
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
    return [ids[-max_prompt_tokens:] for ids in encoded] if max_prompt_tokens else encoded


class TransformersSampler:
    """Samples with a transformers model in this process (:func:`opensir_lite.generation.generate`)."""

    def __init__(self, model, tokenizer, args):
        self.model, self.tokenizer, self.args = model, tokenizer, args

    def generate(
        self, texts: list[str], num_samples: int, sampling: SamplingSettings, sample_seeds: list[int] | None = None
    ) -> list[Completion]:
        a = self.args
        return generate(
            self.model, self.tokenizer, texts, num_samples, sampling, a.max_generate_batch,
            max_prompt_tokens=getattr(a, "max_prompt_length", None), sample_seeds=sample_seeds,
        )  # fmt: skip

    def __call__(self, texts: list[str], role: str) -> list[Completion]:
        return self.generate(texts, self.args.num_generations, sampling_settings(self.args, role))


class VLLMLoRASampler:
    """Samples from a vLLM engine in this process that serves the policy (``server``: an
    :class:`opensir_lite.vllm_engine.AdapterServer` or ``MergedServer`` whose policy the caller has published for
    this step, or a ``BaseServer`` of a base model).
    ``stop_ids``: the tokens that end a completion (the policy's end-of-turn tokens)."""

    def __init__(self, server, tokenizer, args, stop_ids: list[int]):
        self.server, self.tokenizer, self.args, self.stop_ids = server, tokenizer, args, stop_ids

    def generate(
        self, texts: list[str], num_samples: int, sampling: SamplingSettings, sample_seeds: list[int] | None = None
    ) -> list[Completion]:
        ids = encode_prompts(self.tokenizer, texts, getattr(self.args, "max_prompt_length", None))
        return self.server.generate(self.tokenizer, ids, num_samples, sampling, self.stop_ids, sample_seeds)

    def __call__(self, texts: list[str], role: str) -> list[Completion]:
        return self.generate(texts, self.args.num_generations, sampling_settings(self.args, role))


class VLLMSampler:
    """Samples through TRL's vLLM integration (``trainer.vllm_generation``). In server mode a call is a collective:
    every rank calls it, and TRL hands each rank the slice ``rank x its prompt count`` of the server's answers, so
    every rank asks for as many prompts as the rank with the most (padding repeats a prompt) and drops the padding.
    TRL's integration takes no per-request seeds: :meth:`generate` with ``sample_seeds`` (the label probe's common
    random numbers) samples with ``model`` (the policy) in this process instead."""

    def __init__(self, vllm_generation, model, tokenizer, args):
        self.vllm_generation, self.model, self.tokenizer, self.args = vllm_generation, model, tokenizer, args

    def generate(
        self, texts: list[str], num_samples: int, sampling: SamplingSettings, sample_seeds: list[int] | None = None
    ) -> list[Completion]:
        a = self.args
        if sample_seeds is not None:
            return TransformersSampler(self.model, self.tokenizer, a).generate(texts, num_samples, sampling,
                                                                               sample_seeds)  # fmt: skip
        counts = all_ranks(len(texts))
        if not any(counts):
            return []
        pad_to = max(counts) if getattr(self.vllm_generation, "mode", "colocate") == "server" else 0
        return generate_with_vllm(
            self.vllm_generation, self.tokenizer, texts, num_samples, sampling,
            max_prompt_tokens=getattr(a, "max_prompt_length", None), pad_prompts_to=pad_to,
        )  # fmt: skip

    def __call__(self, texts: list[str], role: str) -> list[Completion]:
        return self.generate(texts, self.args.num_generations, sampling_settings(self.args, role))


class ProgressSampler:
    """A sampler shown as a progress bar of its calls (a round: the teacher's, then the students'), each with the
    number of sequences it decodes and the seconds it took (notebooks)."""

    def __init__(self, sampler, total: int = 2, desc: str = "round"):
        from tqdm.auto import tqdm

        self.sampler, self.tokenizer = sampler, sampler.tokenizer
        self.bar = tqdm(total=total, desc=desc)

    def __call__(self, texts: list[str], role: str) -> list[Completion]:
        self.bar.set_postfix_str(f"{role}: {len(texts)} prompts")
        out = self.sampler(texts, role)
        self.bar.update(1)
        if self.bar.n >= self.bar.total:
            self.bar.close()
        return out

    def generate(self, texts, num_samples, sampling, sample_seeds=None) -> list[Completion]:
        return self.sampler.generate(texts, num_samples, sampling, sample_seeds)


def policy_stop_ids(model, tokenizer) -> list[int]:
    """The tokens that end a completion of ``model`` (its generation config's EOS and the tokenizer's)."""
    return sorted(eos_token_ids(model, tokenizer))
