"""The round's stages on hand-built rounds (no model): grading, scoring, records, rows, and the rollout adapter."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_selfplay import make_args

from opensir_lite.generation import Completion
from opensir_lite.parsing import parse_teacher_output
from opensir_lite.pool import ProblemPool, ProblemRecord
from opensir_lite.rewards import PAD, STUDENT, TEACHER, make_reward_funcs, make_teacher_rewards
from opensir_lite.rollout import Rollout
from opensir_lite.round import Round, grade, make_records, score
from opensir_lite.round_output import batch

BOX = "Therefore, the final answer is: $\\boxed{{{}}}$"


def completion(text: str) -> Completion:
    return Completion([1, 2], [ord(c) for c in text], text)


@pytest.mark.parametrize(
    "answers,solve_rate,majority",
    [
        (["5", "5", "5", "6"], 0.75, "5"),  # three of four agree
        (["5", "6", None, None], 0.5, "5"),  # a tie of the valid ones: the class seen first
        ([None, None, None, None], None, None),  # no valid answer: no solve rate
    ],
)
def test_grade(answers, solve_rate, majority):
    rnd = Round(step=1, candidates=[0])
    rnd.student_completions = [completion(BOX.format(a) if a else "no idea") for a in answers]
    grade(rnd, make_args())
    assert rnd.answers == answers
    assert rnd.votes[0].solve_rate == solve_rate and rnd.votes[0].majority == majority


def hand_built_round(texts: list[str], student_answers: list[list[str]]) -> Round:
    """A round of one reference and G = len(texts) teacher outputs, graded from the given student answers."""
    args = make_args(num_generations=len(texts))
    rnd = Round(step=3, references=[ProblemRecord(id=0, problem="What is 1+1?")])
    rnd.teacher_completions = [completion(t) for t in texts]
    rnd.teacher_texts = texts
    rnd.parses = [parse_teacher_output(t) for t in texts]
    rnd.candidates = [i for i, p in enumerate(rnd.parses) if p.ok]
    rnd.student_completions = [completion(BOX.format(a)) for answers in student_answers for a in answers]
    grade(rnd, args)
    rnd.novelty = [0.2] * len(rnd.candidates)
    make_records(rnd, args, first_id=10)
    score(rnd, args, make_teacher_rewards(num_generations=args.num_generations))
    return rnd


def test_records_and_scores():
    texts = ["<think>a</think><problem>Tom has 3 apples and eats 1. How many are left?</problem><concepts>subtraction</concepts>",
             "no tags", "<problem>A box holds 4 rows of 5 pens. How many pens?</problem><concepts>multiplication</concepts>",
             "still no tags"]  # fmt: skip
    rnd = hand_built_round(texts, [["2", "2", "2", "3"], ["20", "20", "20", "20"]])
    assert [r.id for r in rnd.records] == [10, 11, 12, 13]  # ids from first_id, one per teacher output
    assert [r.legal for r in rnd.records] == [True, False, True, False]
    first, _, second, _ = rnd.records
    assert first.solve_rate == 0.75 and second.solve_rate == 1.0  # in the gate, above it
    assert first.rewards["solvability"] > 0 and second.rewards["solvability"] == 0.0
    assert first.rewards["teacher_format"] == 1.0 and second.rewards["teacher_format"] == 0.0  # a think block or not
    assert first.combined_score == pytest.approx(first.rewards["solvability"] + first.rewards["diversity"])
    assert all(r.rewards == dict.fromkeys(r.rewards, 0.0) for r in rnd.records if not r.legal)


def test_rows_carry_the_teacher_rewards_the_round_computed(tokenizer):
    """batch: teacher rows carry each record's rewards, which TRL's teacher reward functions read back; a round with
    no student problem trains a filler group (every reward None, no loss)."""
    texts = ["<think>a</think><problem>Tom has 3 apples and eats 1. How many are left?</problem><concepts>subtraction</concepts>",
             "no tags", "no tags", "no tags"]  # fmt: skip
    rnd = hand_built_round(texts, [["2", "2", "2", "3"]])
    args = make_args(num_generations=4)
    rnd.teacher_groups, rnd.student_problems = [0], []
    rows = batch(rnd, args, tokenizer)
    assert rows["role"] == [TEACHER] * 4 + [PAD] * 4
    assert all(mask == [0] * len(mask) for mask in rows["env_mask"][4:])
    funcs = make_reward_funcs()
    for func in funcs[:4]:
        values = func([""] * 8, **rows)
        assert values[:4] == [r.rewards[func.__name__] for r in rnd.records] and values[4:] == [None] * 4
    rnd.student_problems = [0]  # now the answered problem trains the student
    rows = batch(rnd, args, tokenizer)
    assert rows["role"][4:] == [STUDENT] * 4 and rows["in_majority"][4:] == [True, True, True, False]


class FakeSource:
    """A round source that records how it was called and returns fixed rows."""

    def __init__(self, rows_per_round=4):
        self.args = SimpleNamespace(use_system_prompt=None, generation_backend="transformers", num_generations=2,
                                    max_generate_batch=0)  # fmt: skip
        self.pool = ProblemPool.from_seed()
        self.rows_per_round = rows_per_round
        self.calls = []

    def play(self, sample, step, use_system_prompt):
        self.calls.append((sample.model, step, use_system_prompt))
        return Round(step=step, rows={"role": [STUDENT] * self.rows_per_round}, stats={"played": 1})

    def state_dict(self):
        return {"cursor": 7}

    def load_state_dict(self, state):
        self.loaded = state

    def take_evidence(self):
        return []


class FakePolicy(torch.nn.Module):
    is_gradient_checkpointing = False  # what TRL's unwrap_model_for_generation reads of a transformers model


def fake_trainer(tokenizer, step=4):
    from accelerate import Accelerator

    model = FakePolicy()
    return SimpleNamespace(model=model, model_wrapped=model, accelerator=Accelerator(cpu=True),
                           processing_class=tokenizer, state=SimpleNamespace(global_step=step),
                           args=SimpleNamespace(vllm_importance_sampling_correction=True))  # fmt: skip


def test_rollout_adapter(tokenizer):
    """The adapter checks TRL's row count, samples with the policy (or the rollout model), decides the system prompt
    once, runs the before-round hook and keeps the round's metrics."""
    source = FakeSource()
    seen = []
    rollout = Rollout(source, before_round=lambda sample, step, system: seen.append(step) or {"probe": 0.5})
    trainer = fake_trainer(tokenizer)
    out = rollout(["p"] * 4, trainer)
    assert out["role"] == [STUDENT] * 4 and out["logprobs"] is None
    assert source.calls == [(trainer.model, 5, rollout.use_system_prompt)] and seen == [5]  # step = global_step + 1
    assert rollout.round_stats == [{"played": 1, "probe": 0.5}]
    assert rollout.state_dict() == {"cursor": 7, "use_system_prompt": rollout.use_system_prompt}
    copy = object()
    Rollout(source, rollout_model=lambda t: copy)(["p"] * 4, trainer)
    assert source.calls[-1][0] is copy  # the rollout model samples, not the policy
    with pytest.raises(ValueError, match="rollout received 3 rows but a round makes 4"):
        rollout(["p"] * 3, trainer)


def test_round_group_and_finite():
    rnd = Round(step=1)
    assert list(rnd.group(2, 4)) == [8, 9, 10, 11]
    assert rnd.finite(float("nan"), default=0.0) == 0.0 and rnd.degenerate["nonfinite_value"] == 1
    assert rnd.finite(None) is None and rnd.degenerate["nonfinite_value"] == 1  # no value is not a degenerate one
    assert rnd.finite(np.float32(0.5)) == 0.5
