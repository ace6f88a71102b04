"""The test-time program vote (opensir_lite.evaluation.program_vote): an evaluation with scripted answers and
programs, run in the sandbox, gives pv@k beside maj@k and avg@n, paired, with each question's program kept."""

from __future__ import annotations

import json

import pytest

from opensir_lite.evaluation.benchmarks import load_items
from opensir_lite.evaluation.program_vote import (
    PROGRAM_EVAL_STREAM,
    add_program_vote,
    program_vote_table,
    sample_programs,
)
from opensir_lite.evaluation.runner import EvalSettings, evaluate_items
from opensir_lite.generation import sequence_seed
from opensir_lite.prompts import PROGRAM_SYSTEM_PROMPT
from opensir_lite.sandbox import isolation_unavailable_reason

# question, gold, four answers, the program
CASES = [
    # the majority (6) is wrong; the program prints the right minority answer: the program vote is right
    ("Q1: how many?", "8", ["6", "6", "6", "8"], "print(8)"),
    # both right
    ("Q2: how many?", "3", ["3", "3", "4", "4"], "print(3.0)"),
    # the program raises: the plain majority stands (right)
    ("Q3: how many?", "2", ["2", "2", "9", "1"], "print(1 / 0)"),
    # the program confirms a wrong minority answer: the program vote is wrong, the majority right
    ("Q4: how many?", "5", ["5", "5", "5", "1"], "print(1)"),
]


def scripted(calls):
    def sample(prompts, n, sampling, seeds=None):
        calls.append((len(prompts), n, seeds))
        out = []
        for p in prompts:
            case = next(c for c in CASES if c[0] in p)
            if PROGRAM_SYSTEM_PROMPT[:60] in p:
                out.append([(f"```python\n{case[3]}\n```", 10)])
            else:
                out.append([(f"Therefore, the final answer is: $\\boxed{{{a}}}$", 10) for a in case[2][:n]])
        return out

    return sample


@pytest.mark.skipif(isolation_unavailable_reason() is not None, reason="no namespaces for the sandbox")
def test_evaluation_with_the_program_vote(tmp_path, tokenizer):
    path = tmp_path / "four.jsonl"
    path.write_text("".join(json.dumps({"question": q, "answer": f"#### {g}"}) + "\n" for q, g, _, _ in CASES))
    name, items, _ = load_items(str(path))
    settings = EvalSettings(n=4, temperature=0.7, max_new_tokens=16, batch_size=3, seed=5)
    calls = []
    sample = scripted(calls)
    result = evaluate_items(name, items, sample, tokenizer, settings, progress=False)
    programs = sample_programs(sample, tokenizer, items, settings, max_new_tokens=64)
    assert [p["program_answer"] for p in programs] == ["8", "3.0", None, "1"]
    assert programs[2]["program_failure"] is not None
    # one program per question, from its own seeded stream, batched like the answers
    program_calls = [c for c in calls if c[1] == 1]
    assert [c[0] for c in program_calls] == [3, 1]
    assert [s for c in program_calls for s in c[2]] == [[sequence_seed(5, PROGRAM_EVAL_STREAM, it.index)]
                                                       for it in items]  # fmt: skip
    add_program_vote(result, programs)
    m = result.protocols["strict"]
    assert m["maj@4"] == 0.75 and m["pv@4"] == 0.75 and m["avg@4"] == pytest.approx((1 + 2 + 2 + 3) / 16)
    assert m["pv-maj@4"] == 0.0  # one question won (Q1), one lost (Q4)
    assert result.metrics is result.protocols["opensir"]
    assert result.samples[0]["program_answer"] == "8" and "print(8)" in result.samples[0]["program"]


@pytest.mark.parametrize(
    ("programs", "pv", "b", "c"),
    [
        # programs confirm the right answers where the majority is wrong
        (["8", "3", None, "5"], 1.0, 0, 1),
        # programs print nothing: the program vote is the majority
        ([None, None, None, None], 0.75, 0, 0),
        # a program confirming a wrong minority answer loses a question
        ([None, None, None, "1"], 0.5, 1, 0),
    ],
)
def test_the_table_pairs_the_program_vote_with_the_majority(programs, pv, b, c):
    corrects = [[a == g for a in answers] for _, g, answers, _ in CASES]
    answers = [answers for _, _, answers, _ in CASES]
    table = program_vote_table(corrects, answers, programs, 4)
    assert table["maj@4"] == 0.75 and table["pv@4"] == pv
    assert (table["pv-maj@4"]["b"], table["pv-maj@4"]["c"]) == (b, c)
    assert table["programs_with_answer"] == sum(p is not None for p in programs)
