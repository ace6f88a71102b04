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
