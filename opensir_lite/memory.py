"""Memory arithmetic of a decoder-only model, from its config: the bytes of its weights, of one token's KV cache and
of a decoding step's logits, and how many sequences fit a memory budget. The GPU decisions that need a number
(sequences per evaluation call, vLLM's KV cache on a CPU) and the plan tool (``benchmarks/gpu_plan.py``) use it.
These are estimates from the shapes alone; allocator slack and temporary buffers come on top.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "nf4": 0.5}
GIB = 2**30


@dataclass(frozen=True)
class Shape:
    """The sizes of a decoder-only transformer that memory depends on."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied_embeddings: bool = False
    head_dim: int | None = None

    @property
    def dim(self) -> int:
        return self.head_dim or self.hidden // self.heads

    @property
    def linear_parameters(self) -> int:
        """Parameters of the attention and MLP projections (what LoRA adapts and NF4 quantises)."""
        attention = self.hidden * self.dim * (self.heads * 2 + self.kv_heads * 2)
        mlp = 3 * self.hidden * self.intermediate
        return self.layers * (attention + mlp)

    @property
    def embedding_parameters(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    @property
    def parameters(self) -> int:
        return self.linear_parameters + self.embedding_parameters + self.layers * 2 * self.hidden + self.hidden

    def lora_parameters(self, rank: int) -> int:
        """Parameters of a LoRA of ``rank`` on every projection (PEFT's all-linear): r x (in + out) each."""
        attention = rank * ((self.hidden + self.heads * self.dim) * 2 + (self.hidden + self.kv_heads * self.dim) * 2)
        mlp = rank * 3 * (self.hidden + self.intermediate)
        return self.layers * (attention + mlp)

    def kv_bytes_per_token(self, dtype: str = "bfloat16") -> float:
        """Bytes of KV cache one token of one sequence holds: keys and values of every layer."""
        return 2 * self.layers * self.kv_heads * self.dim * DTYPE_BYTES[dtype]


def shape_of(config: Any) -> Shape:
    """The :class:`Shape` of a transformers config (``LlamaConfig``, ``Qwen2Config``, ...)."""
    heads = config.num_attention_heads
    return Shape(
        layers=config.num_hidden_layers,
        hidden=config.hidden_size,
        heads=heads,
        kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        intermediate=config.intermediate_size,
        vocab=config.vocab_size,
        tied_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        head_dim=getattr(config, "head_dim", None),
    )


def sequences_for_budget(shape: Shape, dtype: str, tokens_per_sequence: int, budget_bytes: float,
                         logits_dtype_bytes: int = 4) -> int:  # fmt: skip
    """How many sequences of up to ``tokens_per_sequence`` tokens (prompt and completion) can decode at once in
    ``budget_bytes``: each holds its KV cache, plus one position's logits over the vocabulary (in fp32, as the
    samplers compute them) at every step. At least 1."""
    per_sequence = shape.kv_bytes_per_token(dtype) * tokens_per_sequence + shape.vocab * logits_dtype_bytes * 2
    return max(1, int(budget_bytes // per_sequence))
