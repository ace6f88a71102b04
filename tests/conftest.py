"""Shared fixtures: the embedded tokenizer/model cache, tiny random Llamas, and the embedded embedder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

# Texts the "fitted" tiny model learns, so that its self-play rounds contain legal problems with varied rewards.
FIT_PROBLEM = "What is 3 plus 4 times 2?"
FIT_TEACHER_TEXTS = [
    f"<think>Use multiplication.</think><problem>{FIT_PROBLEM}</problem><concepts>order of operations</concepts>",
    f"<problem>{FIT_PROBLEM}</problem><concepts>order of operations</concepts>",
]
FIT_STUDENT_TEXTS = [
    "4 times 2 is 8 and 3 + 8 = 11. Therefore, the final answer is: $\\boxed{11}$",
    "3 plus 4 is 7 and 7 times 2 = 14. Therefore, the final answer is: $\\boxed{14}$",
]


@pytest.fixture(scope="session")
def embedded_dir() -> Path:
    from opensir_lite.models import ensure_embedded_policy

    return ensure_embedded_policy()


@pytest.fixture(scope="session")
def tokenizer(embedded_dir):
    from opensir_lite.models import load_tokenizer

    return load_tokenizer(str(embedded_dir))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded_dir) -> Path:
    """A 2-layer random Llama with the embedded SmolLM2 tokenizer: its outputs are garbage (all illegal)."""
    from opensir_lite.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny"), tokenizer_source=str(embedded_dir))


@pytest.fixture(scope="session")
def fitted_model_dir(tmp_path_factory, embedded_dir, tokenizer) -> Path:
    """A tiny Llama fitted for a few seconds to answer teacher prompts with the FIT texts (half with a think
    block) and student prompts with two different answers, so rounds have legal problems and reward variance."""
    from transformers import AutoModelForCausalLM

    from opensir_lite.models import build_tiny_model
    from opensir_lite.prompts import SEED_PROBLEM, render, student_messages, teacher_messages

    path = build_tiny_model(tmp_path_factory.mktemp("fitted"), tokenizer_source=str(embedded_dir), hidden_size=96)
    model = AutoModelForCausalLM.from_pretrained(path)
    eos = tokenizer.eos_token
    examples = [render(tokenizer, teacher_messages(ref)) + t + eos for ref in (SEED_PROBLEM, FIT_PROBLEM) for t in FIT_TEACHER_TEXTS]
    examples += [render(tokenizer, student_messages(FIT_PROBLEM)) + t + eos for t in FIT_STUDENT_TEXTS]
    batch = tokenizer(examples, return_tensors="pt", padding=True, add_special_tokens=False)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def embedder():
    from opensir_lite.embedding import Embedder

    return Embedder("embedded")
