"""The label probe: which steps it runs on, and pseudo-label quality computed from the student's votes."""

from types import SimpleNamespace

import pytest

from opensir_lite.evaluation.benchmarks import PROBE_ROWS, Item, official_gold, probe_items
from opensir_lite.generation import Completion
from opensir_lite.probe import LabelProbe


def probe_args(**overrides):
    args = dict(
        probe_every=5, probe_rows=2, probe_samples=4, num_generations=8, max_steps=12, student_max_new_tokens=16,
        temperature=1.0, top_p=1.0, top_k=0, min_p=None, repetition_penalty=1.0, max_generate_batch=0,
        max_prompt_length=None, answer_extraction="latex_expr", answer_vote="string",
    )  # fmt: skip
    args.update(overrides)
    return SimpleNamespace(**args)


def item(question, gold, index=1):
    return Item(question, gold, index, raw_gold=f"#### {gold}", gold_format="hashes", gold_rule="dollars")


@pytest.mark.parametrize(
    "every,last,due",
    [
        (5, 12, [1, 5, 10, 12]),  # the first step, every 5, and the last
        (0, 12, []),  # off
        (20, 12, [1, 12]),  # a run shorter than the interval: first and last
    ],
)
def test_probe_steps(every, last, due):
    probe = LabelProbe(probe_args(), items=[], every=every, last_step=last)
    assert [s for s in range(1, 13) if probe.due(s)] == due


def test_shipped_probe_rows():
    items = probe_items()
    assert [it.index for it in items] == list(PROBE_ROWS) and len(items) == 32
    assert all(it.official_gold for it in items)
    assert str(items[0].official_gold[0]) == items[0].gold  # GSM8K golds are plain numbers
    assert len(probe_items(rows=8)) == 8


def test_probe_scores_the_majority_against_gold(monkeypatch, tokenizer):
    """Question 1: majority 12 (3 of 4) = gold; question 2: majority 7 (2 of 4, one invalid) != gold 9, one of the
    four samples right."""
    said = [["12", "12", "12", "5"], ["7", "7", "9", "I cannot tell"]]
    seen = {}

    class ScriptedSampler:  # the round's sampler: the probe asks it for seeded samples
        def __init__(self):
            self.tokenizer = tokenizer

        def generate(self, prompts, n, sampling, sample_seeds=None):
            seen.update(n=n, seeds=sample_seeds, prompts=len(prompts))
            texts = [f"The answer is {a}." for group in said for a in group]
            return [Completion([1], [2, 3], t) for t in texts]

    sampler = ScriptedSampler()
    probe = LabelProbe(probe_args(), items=[item("q1", "12", 1), item("q2", "9", 2)])
    stats = probe(sampler, step=1)
    # one seed per sample: the same streams at every reading (common random numbers)
    assert seen["n"] == 4 and seen["prompts"] == 2 and len(seen["seeds"]) == 8 and len(set(seen["seeds"])) == 8
    assert stats["probe/majority_correct"] == 0.5
    assert stats["probe/solve_rate"] == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert stats["probe/valid_rate"] == pytest.approx((4 / 4 + 3 / 4) / 2)
    assert stats["probe/sample_accuracy"] == pytest.approx((3 / 4 + 1 / 4) / 2)
    assert probe(sampler, step=2) == {}  # not a probe step
    assert official_gold("#### 12", "hashes", "dollars")[0] == 12
