"""``sdpa_grouped``: transformers' SDPA attention without copying the KV cache for grouped-query heads.

With a padding mask (every batched generation has one) transformers' ``sdpa`` path repeats the key and value cache
of each KV head for its query heads (``repeat_kv``) at every decoding step. On a CPU that copy, not the
matrix products, dominates decoding (SmolLM2-135M has 9 query heads on 3 KV heads; without the copy decoding is
about twice as fast, ``benchmarks/decoding.py`` and docs/benchmarks.md). For a single query token this
module instead folds the query heads of each KV head into the query length, ``[batch, kv_heads, heads_per_kv,
dim]``, so one SDPA call reads each cached key and value once. Prefill and training (more than one query token) go
through transformers' own ``sdpa`` unchanged, and masks are built exactly as for ``sdpa``. The result is the same
attention; greedy generations are identical (tested).

Registered under :data:`GROUPED_SDPA` with transformers' public ``AttentionInterface`` and
``AttentionMaskInterface``; pass ``attn_implementation="sdpa_grouped"`` to ``from_pretrained``.
"""

from __future__ import annotations

import torch

GROUPED_SDPA = "sdpa_grouped"


def grouped_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Attention of ``query [b, heads, q, d]`` over ``key/value [b, kv_heads, L, d]``; returns ``[b, q, heads, d]``."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    per_head_mask = attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[1] != 1
    if q_len != 1 or heads == kv_heads or heads % kv_heads or per_head_mask or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    # Query head h reads KV head h // (heads / kv_heads), the order repeat_kv uses.
    grouped = query.reshape(batch, kv_heads, heads // kv_heads, dim)
    out = torch.nn.functional.scaled_dot_product_attention(
        grouped,
        key,
        value,
        attn_mask=attention_mask,  # [b, 1, 1, L]: broadcast over KV heads and the folded query heads
        dropout_p=dropout if module.training else 0.0,
        scale=scaling,
    )
    return out.reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None


def register_grouped_sdpa() -> str:
    """Register ``sdpa_grouped`` with transformers (idempotent); returns the name to pass as attn_implementation."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(GROUPED_SDPA, grouped_sdpa_attention)
    AttentionMaskInterface.register(GROUPED_SDPA, sdpa_mask)  # the same masks as sdpa
    return GROUPED_SDPA


def default_attn_implementation(device_type: str) -> str | None:
    """``sdpa_grouped`` on the CPU (where it was measured), None (transformers' choice) elsewhere."""
    return register_grouped_sdpa() if device_type == "cpu" else None
