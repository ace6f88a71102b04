"""Batched sampling: every sample of a role in as few calls as memory allows.

Every sampling parameter comes from :class:`SamplingSettings`; nothing is inherited from the model's own
``generation_config`` (Qwen2.5-Instruct ships ``repetition_penalty``, ``top_k`` and ``top_p`` there), so the
samples come from the distribution the configuration names, the one GRPO scores.

Two decoders share those settings: transformers' ``generate`` (``decoder="generate"``) and :func:`decode_compacting`
(the default), the same token-by-token sampling with transformers' own logits processors and KV cache, which drops
the rows that have finished from the batch (``Cache.batch_select_indices``). ``generate`` keeps computing every row
until the longest one ends; with G samples of varied length (and a 151k-token vocabulary) most of a batch is often
already finished, and on a CPU a smaller batch decodes each step faster. Greedy outputs are the same (tested).

Common random numbers (``sample_seeds``, compacting decoder only): each sequence then draws its tokens by inverse
CDF from its own stream of uniforms, seeded per sequence, instead of from the global generator. The t-th token of a
sequence uses the t-th number of its stream whatever else is in the batch, so two nearly identical models given the
same seeds sample nearly identical completions (a base and its adapter differ only where their distributions do),
which is what makes a paired comparison of sampled evaluations tight. The decoder also measures each sequence's
mean sampling entropy (nats per token of the distribution it sampled from), which training logs for the student.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

DECODERS = ("compacting", "generate")


@dataclass
class Completion:
    """One sampled completion: unpadded prompt tokens, completion tokens (through EOS) and decoded text."""

    prompt_ids: list[int]
    completion_ids: list[int]
    text: str
    entropy: float | None = None  # mean entropy (nats) of the sampled distributions; None when not measured
    # the sampler's log-probability of each completion token (after temperature), for TRL's importance-sampling
    # correction; None when the sampler gives none (transformers), an entry None where the sampler could not score
    logprobs: list[float | None] | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.completion_ids)


@dataclass
class SamplingSettings:
    """Sampling: new-token budget, temperature (0 = greedy), nucleus ``top_p``, ``top_k`` (0 = off), ``min_p``
    (0 = off) and ``repetition_penalty`` (1 = off)."""

    max_new_tokens: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0

    def generate_kwargs(self) -> dict:
        """The ``generate`` arguments, every one explicit."""
        if self.temperature <= 0:
            return {"do_sample": False, "repetition_penalty": self.repetition_penalty or 1.0}
        return {
            "do_sample": True,
            "temperature": self.temperature,
            "top_p": self.top_p if self.top_p is not None else 1.0,
            "top_k": self.top_k or 0,
            "min_p": self.min_p or None,
            "repetition_penalty": self.repetition_penalty if self.repetition_penalty is not None else 1.0,
        }


def neutral_generation_config(model, pad_id: int | None, eos_ids: list[int]):
    """A generation config with transformers' defaults and only the model's special tokens: what ``generate`` may
    fill unset values from instead of the model's shipped sampling preferences."""
    from transformers import GenerationConfig

    own = getattr(model, "generation_config", None)
    return GenerationConfig(bos_token_id=getattr(own, "bos_token_id", None), eos_token_id=eos_ids, pad_token_id=pad_id)


def _hf_model(model):
    """The transformers model under a PEFT wrapper (whose ``generate`` reads that model's generation config)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def logits_processors(sampling: SamplingSettings):
    """transformers' logits processors for these settings, in the order ``generate`` applies them (repetition
    penalty, then temperature, top-k, top-p, min-p); empty for greedy decoding but the repetition penalty."""
    from transformers import (
        LogitsProcessorList,
        MinPLogitsWarper,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    procs = LogitsProcessorList()
    if sampling.repetition_penalty is not None and sampling.repetition_penalty != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(penalty=sampling.repetition_penalty))
    if sampling.temperature <= 0:
        return procs
    if sampling.temperature != 1.0:
        procs.append(TemperatureLogitsWarper(sampling.temperature))
    if sampling.top_k:
        procs.append(TopKLogitsWarper(top_k=sampling.top_k))
    if sampling.top_p is not None and sampling.top_p < 1.0:
        procs.append(TopPLogitsWarper(top_p=sampling.top_p))
    if sampling.min_p:
        procs.append(MinPLogitsWarper(min_p=sampling.min_p))
    return procs


@torch.no_grad()
def decode_compacting(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    sampling: SamplingSettings,
    eos_ids: set[int],
    sample_seeds: Sequence[int] | None = None,
    entropies: list[float | None] | None = None,
) -> list[list[int]]:
    """Sample up to ``sampling.max_new_tokens`` tokens for each row of a left-padded batch, dropping finished rows.

    The token-by-token loop of ``generate`` (prefill, then one token per step through a ``DynamicCache``, positions
    from the attention mask as ``generate`` makes them, transformers' logits processors, multinomial sampling or
    argmax), except that rows which have produced an EOS token leave the batch: once at least an eighth of the
    rows still decoded are finished, the cache, mask and positions keep only the running rows. Returns each row's
    new tokens, through its EOS token when it has one.

    ``sample_seeds`` (one per row): sample row i by inverse CDF from its own uniform stream (common random numbers,
    see the module docstring) instead of ``torch.multinomial``. ``entropies``: a list that receives each row's mean
    entropy of the distributions it sampled from (None for greedy decoding)."""
    from transformers import DynamicCache

    procs = logits_processors(sampling)
    greedy = sampling.temperature <= 0
    n_rows = input_ids.shape[0]
    eos = torch.tensor(sorted(eos_ids), device=input_ids.device)
    cache = DynamicCache(config=model.config)
    attention = attention_mask.long()
    positions = (attention.cumsum(-1) - 1).masked_fill(attention == 0, 0)
    out = model(
        input_ids=input_ids, attention_mask=attention, position_ids=positions, past_key_values=cache,
        use_cache=True, logits_to_keep=1,
    )  # fmt: skip
    rows = torch.arange(n_rows, device=input_ids.device)  # the original row of each row still in the batch
    history = input_ids  # the repetition penalty reads every token so far
    next_position = positions[:, -1] + 1
    generated: list[list[int]] = [[] for _ in range(n_rows)]
    finished = torch.zeros(n_rows, dtype=torch.bool, device=input_ids.device)
    uniforms = None
    if sample_seeds is not None and not greedy:
        if len(sample_seeds) != n_rows:
            raise ValueError(f"{len(sample_seeds)} sample seeds for {n_rows} rows")
        uniforms = torch.stack([row_uniforms(seed, sampling.max_new_tokens) for seed in sample_seeds])
        uniforms = uniforms.to(input_ids.device)
    entropy_sum = [0.0] * n_rows
    for step in range(sampling.max_new_tokens):
        scores = procs(history, out.logits[:, -1, :].float())
        step_entropy = None
        if greedy:
            token = scores.argmax(dim=-1)
        else:
            probs = torch.softmax(scores, dim=-1)
            if entropies is not None:
                step_entropy = torch.special.entr(probs).sum(dim=-1).tolist()
            if uniforms is not None:
                token = inverse_cdf_sample(probs, uniforms[rows, step])
            else:
                token = torch.multinomial(probs, num_samples=1).squeeze(1)
        for k, (row, t, done) in enumerate(zip(rows.tolist(), token.tolist(), finished.tolist(), strict=True)):
            if not done:
                generated[row].append(t)
                if step_entropy is not None:
                    entropy_sum[row] += step_entropy[k]
        finished |= torch.isin(token, eos)
        if bool(finished.all()) or step + 1 == sampling.max_new_tokens:
            break
        if int(finished.sum()) * 8 >= len(rows):  # compact: keep the rows still running
            keep = (~finished).nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            rows, token, attention, next_position = rows[keep], token[keep], attention[keep], next_position[keep]
            history, finished = history[keep], finished[keep]
        attention = torch.cat([attention, attention.new_ones((len(rows), 1))], dim=1)
        history = torch.cat([history, token[:, None]], dim=1)
        out = model(
            input_ids=token[:, None], attention_mask=attention, position_ids=next_position[:, None],
            past_key_values=cache, use_cache=True,
        )  # fmt: skip
        next_position = next_position + 1
    if entropies is not None:  # None for greedy rows: nothing was sampled
        entropies.extend(
            None if greedy else (entropy_sum[r] / len(generated[r]) if generated[r] else 0.0) for r in range(n_rows)
        )
    return generated


def row_uniforms(seed: int, length: int) -> torch.Tensor:
    """The uniform stream of one sequence: ``length`` numbers in [0, 1) from a generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(int(seed) % 2**63)
    return torch.rand(length, generator=generator, dtype=torch.float64)


def inverse_cdf_sample(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Per row, the first token (in vocabulary order) whose cumulative probability exceeds the row's uniform: a
    draw from ``probs`` that moves only where the distribution moves (the coupling of common random numbers)."""
    cdf = probs.double().cumsum(dim=-1)
    cdf = cdf / cdf[:, -1:].clamp_min(1e-300)  # exactly 1 at the end, whatever the float sums
    token = torch.searchsorted(cdf, uniforms[:, None].to(cdf.dtype), right=True).squeeze(1)
    return token.clamp_max(probs.shape[-1] - 1)


def sequence_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for one sequence's stream from a run seed and integer keys (row index, sample number):
    independent streams for different keys, the same stream for the same keys in every run."""
    import numpy as np

    state = np.random.SeedSequence([int(seed), *(int(k) for k in keys)]).generate_state(1, np.uint64)[0]
    return int(state) % 2**63


def _contiguous_input(module, args):
    return (args[0].contiguous(), *args[1:]) if args and isinstance(args[0], torch.Tensor) else args


def contiguous_head_inputs(model) -> bool:
    """Make the output layer's input contiguous (a forward pre-hook, registered once; True when registered now).

    Decoding keeps only the last position (``logits_to_keep=1``), a strided view of the hidden states. torch's
    matmul of a strided 3-D input with a weight that does not require grad (a frozen model: the rollout copy, a
    quantised base under LoRA) expands the weight per row into a batched copy: for Qwen's 151,936 x 896 head in
    bf16, 272 MB per row at every prefill (70 GB for 256 rows, which fails and falls back to a slow kernel). A
    contiguous input takes the plain matrix product instead; the values are the same."""
    head = _hf_model(model).get_output_embeddings()
    if head is None or getattr(head, "_opensir_contiguous_input", False):
        return False
    head.register_forward_pre_hook(_contiguous_input)
    head._opensir_contiguous_input = True
    return True


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
    max_prompt_tokens: int | None = None,
    decoder: str = "compacting",
    sample_seeds: Sequence[int] | None = None,
) -> list[Completion]:
    """Sample ``num_samples`` completions for each prompt text (already chat-templated).

    Returns ``len(prompts) * num_samples`` completions, the samples of a prompt consecutive. All of them are decoded
    in one batch unless ``max_batch`` (sequences per call, 0 = no limit) splits them. With ``max_prompt_tokens``
    only the last that many prompt tokens are kept (the completion's ``prompt_ids`` too). ``decoder``: one of
    :data:`DECODERS` (``compacting``: :func:`decode_compacting`; ``generate``: transformers' ``generate``).
    ``sample_seeds``: one seed per completion (``len(prompts) * num_samples``, in output order) for common random
    numbers (compacting decoder only). Compacting completions carry their mean sampling ``entropy``.
    """
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
    if not prompts or num_samples <= 0:
        return []
    expanded = [p for p in prompts for _ in range(num_samples)]
    if sample_seeds is not None:
        if decoder != "compacting":
            raise ValueError("sample_seeds (common random numbers) need the compacting decoder")
        if len(sample_seeds) != len(expanded):
            raise ValueError(f"{len(sample_seeds)} sample seeds for {len(expanded)} completions")
    encoded = tokenizer(expanded, add_special_tokens=False)["input_ids"]
    if max_prompt_tokens:
        encoded = [ids[-max_prompt_tokens:] for ids in encoded]
    eos_ids = eos_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id
    device = next(model.parameters()).device
    step = max_batch if max_batch and max_batch > 0 else len(expanded)
    was_training = model.training
    model.eval()
    contiguous_head_inputs(model)
    hf_model = _hf_model(model)
    shipped = hf_model.generation_config
    hf_model.generation_config = neutral_generation_config(hf_model, pad_id, sorted(eos_ids))
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
            entropies: list[float | None] = []
            if decoder == "compacting":
                seeds = None if sample_seeds is None else sample_seeds[start : start + step]
                generated = decode_compacting(
                    model, input_ids.to(device), attention.to(device), sampling, eos_ids, seeds, entropies
                )
            else:
                kwargs = dict(max_new_tokens=sampling.max_new_tokens, pad_token_id=pad_id, eos_token_id=sorted(eos_ids))
                kwargs.update(sampling.generate_kwargs())
                sequences = model.generate(
                    input_ids=input_ids.to(device), attention_mask=attention.to(device), use_cache=True, **kwargs
                )
                generated = sequences[:, width:].tolist()
                entropies = [None] * len(generated)
            for ids, gen, ent in zip(chunk, generated, entropies, strict=True):
                gen = _trim(gen, eos_ids, pad_id)
                out.append(Completion(list(ids), gen, tokenizer.decode(gen, skip_special_tokens=True), ent))
    finally:
        hf_model.generation_config = shipped
        model.train(was_training)
    return out


def generate_with_vllm(
    vllm_generation,
    tokenizer,
    prompts: Sequence[str],
    num_samples: int,
    sampling: SamplingSettings,
    max_prompt_tokens: int | None = None,
    pad_prompts_to: int = 0,
) -> list[Completion]:
    """Sample through TRL's vLLM integration (``trainer.vllm_generation``: a ``trl vllm-serve`` server or a
    colocated engine, whose weights TRL keeps in sync with the policy) with this role's settings: the token budget,
    temperature, top_p, top_k, min_p and repetition penalty are set on it for the call and restored after. Each
    completion carries the sampled tokens' log-probabilities (TRL asks vLLM for them). In server mode this is a
    collective: every rank calls it, with or without prompts, and ``pad_prompts_to`` (the largest prompt count of
    any rank) pads this rank's prompts with copies so that TRL's slice of the server's answers is this rank's; the
    padding's completions are dropped."""
    encoded = tokenizer(list(prompts), add_special_tokens=False)["input_ids"] if prompts else []
    if max_prompt_tokens:
        encoded = [ids[-max_prompt_tokens:] for ids in encoded]
    real = len(encoded)
    filler = encoded[0] if encoded else [tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0]
    encoded = encoded + [list(filler)] * max(0, pad_prompts_to - real)
    expanded = [ids for ids in encoded for _ in range(num_samples)]
    settings = {
        "max_completion_length": sampling.max_new_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k or 0,
        "min_p": sampling.min_p or 0.0,
        "repetition_penalty": sampling.repetition_penalty,
    }
    saved = {k: getattr(vllm_generation, k) for k in settings}
    try:
        for k, v in settings.items():
            setattr(vllm_generation, k, v)
        prompt_ids, completion_ids, logprobs, _ = vllm_generation.generate(expanded, None, num_samples)
    finally:
        for k, v in saved.items():
            setattr(vllm_generation, k, v)
    keep = real * num_samples
    logprobs = logprobs if logprobs is not None else [None] * len(completion_ids)
    return [
        Completion(
            list(p),
            list(c),
            tokenizer.decode(c, skip_special_tokens=True),
            logprobs=None if lp is None else [row[0] if row else None for row in lp],
        )  # fmt: skip
        for p, c, lp in zip(prompt_ids[:keep], completion_ids[:keep], logprobs[:keep], strict=True)
    ]


def eos_token_ids(model, tokenizer) -> set[int]:
    """The tokens that end a completion: the model's generation-config EOS (one or several) and the tokenizer's."""
    own = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    eos = own if own is not None else tokenizer.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos])
    ids.add(tokenizer.eos_token_id)
    return {int(i) for i in ids if i is not None}
