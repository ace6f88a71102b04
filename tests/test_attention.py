"""sdpa_grouped gives transformers' sdpa attention: same logits at every decoding step, same greedy tokens."""

from __future__ import annotations

import pytest
import torch

from opensir_lite.attention import GROUPED_SDPA, default_attn_implementation, register_grouped_sdpa
from opensir_lite.models import attention_for


def _model(heads: int, kv_heads: int, attn: str, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    register_grouped_sdpa()
    config = LlamaConfig(
        vocab_size=97,
        hidden_size=heads * 8,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    config._attn_implementation = attn
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def _left_padded_batch():
    torch.manual_seed(1)
    lengths = [9, 3, 6, 1]  # ragged rows: the padding mask matters
    width = max(lengths)
    ids = torch.zeros((len(lengths), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, width - n :] = torch.randint(3, 97, (n,))
        mask[row, width - n :] = 1
    return ids, mask


@pytest.mark.parametrize(
    "heads,kv_heads",
    [
        (4, 2),  # grouped-query attention: the folded path
        (9, 3),  # SmolLM2-135M's ratio
        (4, 1),  # multi-query attention
        (4, 4),  # multi-head attention: falls back to sdpa
    ],
)
def test_decoding_logits_match_sdpa(heads, kv_heads):
    ids, mask = _left_padded_batch()
    reference, grouped = _model(heads, kv_heads, "sdpa"), _model(heads, kv_heads, GROUPED_SDPA)
    grouped.load_state_dict(reference.state_dict())
    with torch.no_grad():
        ref_out = reference(input_ids=ids, attention_mask=mask, use_cache=True)
        new_out = grouped(input_ids=ids, attention_mask=mask, use_cache=True)
        torch.testing.assert_close(new_out.logits, ref_out.logits)  # prefill: unchanged sdpa path
        ref_cache, new_cache = ref_out.past_key_values, new_out.past_key_values
        for step in range(5):  # single-token steps: the grouped path
            token = torch.full((ids.shape[0], 1), 5 + step)
            mask = torch.cat([mask, torch.ones_like(token)], dim=1)
            ref_step = reference(input_ids=token, attention_mask=mask, past_key_values=ref_cache, use_cache=True)
            new_step = grouped(input_ids=token, attention_mask=mask, past_key_values=new_cache, use_cache=True)
            torch.testing.assert_close(new_step.logits, ref_step.logits, rtol=1e-5, atol=1e-5)


def test_greedy_generation_is_identical():
    ids, mask = _left_padded_batch()
    reference, grouped = _model(4, 2, "sdpa", seed=3), _model(4, 2, GROUPED_SDPA, seed=3)
    grouped.load_state_dict(reference.state_dict())
    kwargs = dict(attention_mask=mask, max_new_tokens=24, min_new_tokens=24, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        assert torch.equal(grouped.generate(ids, **kwargs), reference.generate(ids, **kwargs))


def test_training_gradients_go_through_sdpa():
    # More than one query token (training, prefill) uses transformers' sdpa: gradients are the same.
    ids, mask = _left_padded_batch()
    reference, grouped = _model(4, 2, "sdpa"), _model(4, 2, GROUPED_SDPA)
    grouped.load_state_dict(reference.state_dict())
    for model in (reference, grouped):
        model.train()
        model(input_ids=ids, attention_mask=mask, labels=ids).loss.backward()
    for (name, a), (_, b) in zip(reference.named_parameters(), grouped.named_parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, msg=name)


@pytest.mark.parametrize(
    "device,requested,expected",
    [
        ("cpu", None, GROUPED_SDPA),  # the CPU default
        ("cuda", None, None),  # transformers chooses on a GPU
        ("cpu", "eager", "eager"),  # an explicit choice wins
        ("cuda", GROUPED_SDPA, GROUPED_SDPA),  # and can be asked for anywhere
    ],
)
def test_attention_choice(device, requested, expected):
    assert attention_for(device, requested) == expected
    assert default_attn_implementation("cpu") == GROUPED_SDPA


def test_inference_loader_uses_grouped_attention_on_cpu(tiny_model_dir):
    from opensir_lite.models import load_for_inference

    model, _ = load_for_inference(str(tiny_model_dir))
    assert model.config._attn_implementation == GROUPED_SDPA
