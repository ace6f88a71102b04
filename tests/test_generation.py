"""Sampling: every parameter from the configuration (nothing inherited from the model's generation_config), and
prompt truncation."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from opensir_lite.generation import SamplingSettings, generate

PROMPT = "<|im_start|>user\nWrite a maths problem.<|im_end|>\n<|im_start|>assistant\n"


def sample(model, tokenizer, settings, seed=0, **kwargs):
    torch.manual_seed(seed)
    return [c.completion_ids for c in generate(model, tokenizer, [PROMPT], 4, settings, **kwargs)]


@pytest.mark.parametrize(
    "shipped",
    [
        {"repetition_penalty": 50.0},  # Qwen2.5-Instruct ships 1.05
        {"top_k": 1},  # and top_k 20
        {"top_p": 0.01},  # and top_p 0.8
        {"no_repeat_ngram_size": 1},  # anything else generate would otherwise read
        {"do_sample": False, "temperature": 0.01},
    ],
)
def test_shipped_generation_config_is_ignored(tiny_model_dir, tokenizer, shipped):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    settings = SamplingSettings(max_new_tokens=24, temperature=1.0, top_p=1.0)
    clean = sample(model, tokenizer, settings)
    for key, value in shipped.items():
        setattr(model.generation_config, key, value)
    assert sample(model, tokenizer, settings) == clean  # the same samples: the config's preferences were not used
    assert getattr(model.generation_config, next(iter(shipped))) == next(iter(shipped.values()))  # and restored


def test_settings_reach_generate(tiny_model_dir, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    free = sample(model, tokenizer, SamplingSettings(max_new_tokens=24, temperature=1.0))
    greedy = sample(model, tokenizer, SamplingSettings(max_new_tokens=24, temperature=0.0))
    assert len({tuple(ids) for ids in greedy}) == 1  # greedy: four identical samples
    assert len({tuple(ids) for ids in free}) > 1  # temperature 1 on a random model: different samples
    top1 = sample(model, tokenizer, SamplingSettings(max_new_tokens=24, temperature=1.0, top_k=1))
    assert top1 == greedy  # top_k=1 is greedy


def test_prompt_truncation_keeps_the_last_tokens(tiny_model_dir, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    full = tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    out = generate(model, tokenizer, [PROMPT], 2, SamplingSettings(8, 1.0), max_prompt_tokens=5)
    assert all(c.prompt_ids == full[-5:] for c in out)


@pytest.mark.parametrize(
    "settings",
    [
        SamplingSettings(max_new_tokens=24, temperature=1.0),  # plain sampling
        SamplingSettings(max_new_tokens=24, temperature=0.7, top_p=0.9, top_k=50),  # the warpers generate applies
        SamplingSettings(max_new_tokens=24, temperature=1.3, min_p=0.05, repetition_penalty=1.2),  # and the others
        SamplingSettings(max_new_tokens=24, temperature=0.0, repetition_penalty=1.3),  # greedy with a penalty
    ],
)
def test_compacting_decoder_samples_as_generate_does(tiny_model_dir, tokenizer, settings):
    """Until a row finishes, the compacting decoder draws exactly the tokens generate draws from the same seed:
    the same processors in the same order, the same positions and cache (a random model rarely ends a row)."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompts = [PROMPT, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"]  # two lengths: left padding
    outs = {}
    for decoder in ("compacting", "generate"):
        torch.manual_seed(3)
        outs[decoder] = [c.completion_ids for c in generate(model, tokenizer, prompts, 3, settings, decoder=decoder)]
    assert outs["compacting"] == outs["generate"]


def test_compacting_decoder_drops_finished_rows_and_keeps_greedy_outputs(fitted_model_dir, tokenizer):
    """Rows that end early leave the batch (the cache is compacted) and the greedy completions stay those of
    generate, prompts of several lengths and completions of several lengths."""
    from conftest import FIT_PROBLEM

    from opensir_lite.prompts import render, student_messages, teacher_messages

    model = AutoModelForCausalLM.from_pretrained(fitted_model_dir)
    prompts = [render(tokenizer, teacher_messages(FIT_PROBLEM)), render(tokenizer, student_messages(FIT_PROBLEM)),
               PROMPT, render(tokenizer, teacher_messages("What is 1+1?"))]  # fmt: skip
    settings = SamplingSettings(max_new_tokens=80, temperature=0.0)
    compact = generate(model, tokenizer, prompts, 1, settings)
    reference = generate(model, tokenizer, prompts, 1, settings, decoder="generate")
    assert [c.completion_ids for c in compact] == [c.completion_ids for c in reference]
    lengths = [c.num_tokens for c in compact]
    assert min(lengths) < max(lengths)  # some rows finished while others ran on: the batch was compacted
    assert any(c.completion_ids[-1] == tokenizer.eos_token_id for c in compact)


def test_unknown_decoder_is_refused(tiny_model_dir, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with pytest.raises(ValueError, match="decoder must be one of"):
        generate(model, tokenizer, [PROMPT], 1, SamplingSettings(4, 0.0), decoder="beam")


def test_head_input_is_made_contiguous_once(tiny_model_dir, tokenizer):
    """generate registers one pre-hook on the output layer (torch's strided 3-D matmul with a frozen weight copies
    the weight per row); the logits are unchanged by it (to rounding)."""
    from opensir_lite.generation import contiguous_head_inputs

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).requires_grad_(False)
    ids = torch.tensor([tokenizer(PROMPT, add_special_tokens=False)["input_ids"]] * 2)
    with torch.no_grad():
        before = model(input_ids=ids, logits_to_keep=1).logits
    sample(model, tokenizer, SamplingSettings(max_new_tokens=4, temperature=0.0))
    head = model.get_output_embeddings()
    assert len(head._forward_pre_hooks) == 1 and contiguous_head_inputs(model) is False  # registered once
    with torch.no_grad():
        # equal up to float rounding: the contiguous copy takes another matmul kernel than the strided view
        torch.testing.assert_close(model(input_ids=ids, logits_to_keep=1).logits, before, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "probs,u,token",
    [
        ([0.2, 0.5, 0.3], 0.0, 0),  # the lowest uniform takes the first token with mass
        ([0.2, 0.5, 0.3], 0.1999, 0),  # still inside the first token's 0.2
        ([0.2, 0.5, 0.3], 0.2, 1),  # the boundary belongs to the next token
        ([0.2, 0.5, 0.3], 0.6999, 1),
        ([0.2, 0.5, 0.3], 0.9999, 2),  # the top of the stream takes the last token
        ([0.0, 1.0, 0.0], 0.9999, 1),  # zero-mass tokens (top-p cut) are never drawn
        ([0.5, 0.5, 0.0], 0.9999, 1),  # nor a zero-mass last token
    ],
)
def test_inverse_cdf_sample(probs, u, token):
    from opensir_lite.generation import inverse_cdf_sample

    assert inverse_cdf_sample(torch.tensor([probs]), torch.tensor([u], dtype=torch.float64)).tolist() == [token]


def test_inverse_cdf_sample_has_the_distribution():
    from opensir_lite.generation import inverse_cdf_sample

    probs = torch.tensor([[0.1, 0.6, 0.3]]).expand(20000, 3)
    tokens = inverse_cdf_sample(
        probs, torch.rand(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    )
    freq = torch.bincount(tokens, minlength=3).float() / 20000
    assert torch.allclose(freq, probs[0], atol=0.015)


def test_sequence_seeds_are_stable_and_distinct():
    from opensir_lite.generation import sequence_seed

    assert sequence_seed(0, 5, 1) == sequence_seed(0, 5, 1)  # the same keys: the same stream in every run
    seeds = {sequence_seed(s, row, j) for s in (0, 1) for row in range(20) for j in range(4)}
    assert len(seeds) == 160 and all(0 <= x < 2**63 for x in seeds)  # other seed, row or sample: another stream


def test_common_random_numbers_do_not_depend_on_the_batch(tiny_model_dir, tokenizer):
    """A sequence's sample depends on its seed only: alone or beside other prompts, first or last in the batch,
    whatever the global generator holds; other seeds give other samples."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    other = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    settings = SamplingSettings(max_new_tokens=24, temperature=1.0, top_p=0.95)

    def ids(prompts, seeds, torch_seed):
        torch.manual_seed(torch_seed)
        return [c.completion_ids for c in generate(model, tokenizer, prompts, 2, settings, sample_seeds=seeds)]

    alone = ids([PROMPT], [11, 12], 0)
    together = ids([other, PROMPT], [21, 22, 11, 12], 1)
    assert together[2:] == alone  # the same streams, the same samples
    assert ids([PROMPT], [13, 14], 0) != alone  # other streams
    with pytest.raises(ValueError, match="sample seeds"):
        ids([PROMPT], [1], 0)


def test_compacting_completions_carry_their_sampling_entropy(tiny_model_dir, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    hot = generate(model, tokenizer, [PROMPT], 2, SamplingSettings(16, 1.0))
    cold = generate(model, tokenizer, [PROMPT], 2, SamplingSettings(16, 0.3))
    greedy = generate(model, tokenizer, [PROMPT], 1, SamplingSettings(16, 0.0))
    assert all(c.entropy > 1.0 for c in hot)  # a random model over a 49k vocabulary: several nats
    assert max(c.entropy for c in cold) < min(c.entropy for c in hot)  # a lower temperature, a sharper distribution
    assert greedy[0].entropy is None  # nothing was sampled
