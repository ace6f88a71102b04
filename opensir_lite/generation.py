"""Batched sampling with transformers ``generate``: every sample of a role in as few calls as memory allows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class Completion:
    """One sampled completion: unpadded prompt tokens, completion tokens (through EOS) and decoded text."""

    prompt_ids: list[int]
    completion_ids: list[int]
    text: str

    @property
    def num_tokens(self) -> int:
        return len(self.completion_ids)


@dataclass
class SamplingSettings:
    """Per-role sampling: new-token budget, temperature (0 = greedy) and nucleus ``top_p``."""

    max_new_tokens: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0


def _trim(ids: list[int], eos_ids: set[int], pad_id: int | None) -> list[int]:
    for i, t in enumerate(ids):
        if t in eos_ids:
            return ids[: i + 1]
    while ids and pad_id is not None and ids[-1] == pad_id and pad_id not in eos_ids:
        ids = ids[:-1]
    return ids


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    num_samples: int,
    sampling: SamplingSettings,
    max_batch: int = 0,
) -> list[Completion]:
    """Sample ``num_samples`` completions for each prompt text (already chat-templated).

    Returns ``len(prompts) * num_samples`` completions, the samples of a prompt consecutive. All of them go through
    ``generate`` in one call unless ``max_batch`` (sequences per call, 0 = no limit) splits them.
    """
    if not prompts or num_samples <= 0:
        return []
    expanded = [p for p in prompts for _ in range(num_samples)]
    encoded = tokenizer(expanded, add_special_tokens=False)["input_ids"]
    eos = (
        model.generation_config.eos_token_id
        if model.generation_config.eos_token_id is not None
        else tokenizer.eos_token_id
    )
    eos_ids = set(eos if isinstance(eos, list) else [eos])
    eos_ids.add(tokenizer.eos_token_id)
    pad_id = tokenizer.pad_token_id
    device = next(model.parameters()).device
    step = max_batch if max_batch and max_batch > 0 else len(expanded)
    was_training = model.training
    model.eval()
    out: list[Completion] = []
    try:
        for start in range(0, len(expanded), step):
            chunk = encoded[start : start + step]
            width = max(len(ids) for ids in chunk)
            input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, ids in enumerate(chunk):
                input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                attention[row, width - len(ids) :] = 1
            kwargs = dict(max_new_tokens=sampling.max_new_tokens, pad_token_id=pad_id, eos_token_id=sorted(eos_ids))
            if sampling.temperature > 0:
                kwargs.update(
                    do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k or None
                )
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            sequences = model.generate(
                input_ids=input_ids.to(device), attention_mask=attention.to(device), use_cache=True, **kwargs
            )
            generated = sequences[:, width:].tolist()
            for ids, gen in zip(chunk, generated, strict=True):
                gen = _trim(gen, eos_ids, pad_id)
                out.append(Completion(list(ids), gen, tokenizer.decode(gen, skip_special_tokens=True)))
    finally:
        model.train(was_training)
    return out
