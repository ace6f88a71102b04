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
